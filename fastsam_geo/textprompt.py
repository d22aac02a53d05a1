"""Text prompts: score each mask of a tile against a text with CLIP (open_clip).

The only module of fastsam-geo that imports open_clip (and, through it, torch), and only
inside functions: importing it costs nothing. :class:`ClipScorer` loads its model once, on
first use, and keeps it (and the encoded texts); the pipeline takes any object with a
``score(image, masks, text) -> np.ndarray`` method (:class:`fastsam_geo.prompts.TextScorer`),
so another vision-language model can be plugged in.

Each mask is shown to CLIP *alone*: the crop of its box, padded a little, with every pixel
outside the mask replaced by a neutral grey (CLIP's mean colour, which normalises to zero),
then squared with the same grey so that CLIP's centre crop cuts nothing. Neighbouring
segments do not leak into the crop (a known weakness of FastSAM's own text prompt), and
:func:`fastsam_geo.prompts.select_text` keeps every mask above the threshold, not the
argmax only.

CLIP weights: ``pretrained`` is a local checkpoint file (``.pt``/``.pth``/``.bin`` loaded
with ``torch.load(weights_only=True)``, or ``.safetensors``) or an open_clip pretrained tag
(downloaded by open_clip when online). ``FASTSAM_GEO_CLIP_WEIGHTS`` names a default file.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from fastsam_geo.errors import DependencyError, WeightsError
from fastsam_geo.masks import InstanceMasks
from fastsam_geo.prompts import select_text

__all__ = ["CLIP_GREY", "DEFAULT_TAGS", "ClipScorer", "mask_crop", "select_text", "softmax"]

#: CLIP's normalisation mean as 8-bit RGB: the fill that normalises to (about) zero.
CLIP_GREY: tuple[int, int, int] = (123, 117, 104)

#: The open_clip tag tried when no weights are given (needs the network once).
DEFAULT_TAGS: dict[str, str] = {"ViT-B-32": "laion2b_s34b_b79k", "ViT-B-16": "laion2b_s34b_b88k"}

WEIGHTS_ENV = "FASTSAM_GEO_CLIP_WEIGHTS"
_WEIGHT_SUFFIXES = {".pt", ".pth", ".bin", ".safetensors", ".npz", ".ckpt"}
_HOW_TO = (
    "get CLIP weights with open_clip online (e.g. --clip-weights laion2b_s34b_b79k for ViT-B-32), "
    f"or pass a local .pt/.safetensors file with --clip-weights or {WEIGHTS_ENV}"
)


OFFLINE_ENV = ("FASTSAM_GEO_OFFLINE", "YOLO_OFFLINE", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")


def offline() -> bool:
    """True when the environment says not to use the network (``YOLO_OFFLINE=1``, ``HF_HUB_OFFLINE=1``...)."""
    return any(os.environ.get(k, "").strip().lower() in ("1", "true", "yes", "on") for k in OFFLINE_ENV)


def _tag_is_local(open_clip: Any, model_name: str, tag: str, cache_dir: str | None) -> bool:
    """Whether open_clip would find the weights of ``tag`` on disk (Hugging Face cache or its URL cache)."""
    cfg = open_clip.get_pretrained_cfg(model_name, tag) or {}
    if cfg.get("file"):
        return Path(cfg["file"]).is_file()
    hub = cfg.get("hf_hub", "")
    if hub:
        try:
            from huggingface_hub import try_to_load_from_cache
        except ImportError:
            return False
        repo, filename = os.path.split(hub)
        names = [filename] if filename else ["open_clip_model.safetensors", "open_clip_pytorch_model.bin"]
        return any(isinstance(try_to_load_from_cache(repo, n, cache_dir=cache_dir), str) for n in names)
    url = cfg.get("url", "")
    if url:
        folder = Path(cache_dir) if cache_dir else Path.home() / ".cache" / "clip"
        return (folder / os.path.basename(url)).is_file()
    return False


def _import_open_clip() -> Any:
    try:
        import open_clip
    except ImportError as exc:
        raise DependencyError(
            f"Text prompts (--text) need open_clip, which is not installed ({exc}): "
            'pip install "fastsam-geo[torch]" (torch and open_clip; the light install has no CLIP)'
        ) from exc
    return open_clip


def mask_crop(
    image: np.ndarray,
    masks: InstanceMasks,
    i: int,
    *,
    pad: float = 0.1,
    fill: Sequence[int] = CLIP_GREY,
    square: bool = True,
) -> np.ndarray:
    """The pixels of mask ``i`` alone: its box padded by ``pad`` (a fraction of its longer side,
    at least 2 px), clipped to the image, every pixel outside the mask set to ``fill``; with
    ``square``, padded with ``fill`` to a square (CLIP's preprocessing centre-crops).

    >>> img = np.full((6, 6, 3), 200, np.uint8); img[:, 3:] = 50     # two neighbours
    >>> dense = np.zeros((1, 6, 6), bool); dense[0, 1:5, 0:3] = True
    >>> crop = mask_crop(img, InstanceMasks.from_dense(dense), 0, fill=(0, 0, 0))
    >>> crop.shape, int((crop == 50).any(axis=2).sum()), int((crop == 200).all(axis=2).sum())
    ((6, 6, 3), 0, 12)
    """
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"image must be H x W x 3, got shape {image.shape}")
    r0, c0 = (int(v) for v in masks.offsets[i])
    crop = masks.crops[i]
    h, w = crop.shape
    p = max(2, round(pad * max(h, w)))
    H, W = image.shape[:2]
    wr0, wc0 = max(r0 - p, 0), max(c0 - p, 0)
    wr1, wc1 = min(r0 + h + p, H), min(c0 + w + p, W)
    fill_arr = np.asarray(fill, np.uint8).reshape(1, 1, 3)
    inside = np.zeros((wr1 - wr0, wc1 - wc0), bool)
    # the crop may reach outside the image only if masks and image disagree: clip it too
    cr0, cc0 = max(r0, wr0), max(c0, wc0)
    cr1, cc1 = min(r0 + h, wr1), min(c0 + w, wc1)
    if cr1 > cr0 and cc1 > cc0:
        inside[cr0 - wr0 : cr1 - wr0, cc0 - wc0 : cc1 - wc0] = crop[cr0 - r0 : cr1 - r0, cc0 - c0 : cc1 - c0]
    out = np.where(inside[:, :, None], image[wr0:wr1, wc0:wc1], fill_arr).astype(np.uint8)
    if square and out.shape[0] != out.shape[1]:
        side = max(out.shape[:2])
        sq = np.empty((side, side, 3), np.uint8)
        sq[:] = fill_arr
        top, left = (side - out.shape[0]) // 2, (side - out.shape[1]) // 2
        sq[top : top + out.shape[0], left : left + out.shape[1]] = out
        out = sq
    return out


def softmax(scores: np.ndarray, scale: float = 100.0) -> np.ndarray:
    """Softmax of cosine similarities over the masks, with CLIP's logit scale (100).

    >>> softmax(np.array([0.3, 0.3])).tolist()
    [0.5, 0.5]
    """
    z = np.asarray(scores, np.float64) * scale
    if z.size == 0:
        return z.astype(np.float32)
    z = np.exp(z - z.max())
    return (z / z.sum()).astype(np.float32)


class ClipScorer:
    """Cosine similarity between each mask's pixels and a text, with an open_clip model.

    Args:
        model_name: an open_clip architecture (``open_clip.list_models()``), e.g. ``"ViT-B-32"``;
            or ``"local-dir:/path"`` (a folder with ``open_clip_config.json`` and weights) or
            ``"hf-hub:org/repo"``, which bring their own weights (``pretrained`` is ignored).
        pretrained: a local checkpoint file, or an open_clip pretrained tag; default:
            ``$FASTSAM_GEO_CLIP_WEIGHTS``, else :data:`DEFAULT_TAGS` (downloaded by open_clip).
        device: torch device.
        batch_size: crops per forward pass.
        pad: context around each mask's box, as a fraction of its longer side.

    The model is loaded once, on first use (:meth:`load`), and reused: ``loads`` counts the
    loads. Texts are encoded once per query and cached.
    """

    def __init__(
        self,
        model_name: str = "ViT-B-32",
        pretrained: str | os.PathLike[str] | None = None,
        *,
        device: str = "cpu",
        batch_size: int = 32,
        pad: float = 0.1,
        cache_dir: str | None = None,
    ) -> None:
        self.model_name = model_name
        self.pretrained = None if pretrained is None else os.fspath(pretrained)
        self.device = device
        self.batch_size = max(int(batch_size), 1)
        self.pad = pad
        self.cache_dir = cache_dir
        self.loads = 0
        self._model: Any = None
        self._preprocess: Any = None
        self._tokenizer: Any = None
        self._text_cache: dict[tuple[str, ...], np.ndarray] = {}

    def __repr__(self) -> str:
        return f"ClipScorer({self.model_name!r}, pretrained={self.pretrained!r}, device={self.device!r})"

    # ------------------------------------------------------------------ loading
    def _source(self, open_clip: Any) -> tuple[str, bool]:
        """``(pretrained, is_file)`` to try: a file path or a tag; WeightsError when unusable."""
        src = self.pretrained or os.environ.get(WEIGHTS_ENV) or DEFAULT_TAGS.get(self.model_name)
        if src is None:
            tags = open_clip.list_pretrained_tags_by_model(self.model_name)
            if not tags:
                raise WeightsError(f"No CLIP weights for model {self.model_name!r}: {_HOW_TO}.")
            src = tags[0]
        path = Path(src).expanduser()
        if path.is_file():
            return str(path), True
        looks_like_path = path.suffix.lower() in _WEIGHT_SUFFIXES or os.sep in src or "/" in src
        if looks_like_path:
            raise WeightsError(f"CLIP weights file not found: {path}; {_HOW_TO}.")
        tags = open_clip.list_pretrained_tags_by_model(self.model_name)
        if src not in tags:
            raise WeightsError(
                f"{src!r} is neither a file nor an open_clip tag of {self.model_name!r} "
                f"(tags: {', '.join(tags) or 'none'}); {_HOW_TO}."
            )
        if offline() and not _tag_is_local(open_clip, self.model_name, src, self.cache_dir):
            raise WeightsError(
                f"--text needs CLIP weights: open_clip tag {src!r} of {self.model_name} is not downloaded and this "
                "run is offline (YOLO_OFFLINE / HF_HUB_OFFLINE); pass a local checkpoint with --clip-weights FILE "
                f"(.pt/.safetensors) or set {WEIGHTS_ENV}."
            )
        return src, False

    def load(self) -> ClipScorer:
        """Load the model, tokenizer and preprocessing (once; later calls do nothing)."""
        if self._model is not None:
            return self
        open_clip = _import_open_clip()
        if self.model_name.startswith(("hf-hub:", "local-dir:")):  # config and weights come together
            schema, where = self.model_name.split(":", 1)
            what = f"folder {where}" if schema == "local-dir" else f"{where!r} (download failed: offline?)"
            return self._create(open_clip, None, what)
        if self.model_name not in open_clip.list_models():
            raise WeightsError(
                f"Unknown CLIP model {self.model_name!r}; "
                "choose one of open_clip.list_models(), e.g. 'ViT-B-32'."
            )
        src, is_file = self._source(open_clip)
        return self._create(
            open_clip, src, f"file {src}" if is_file else f"open_clip tag {src!r} (download failed: offline?)"
        )

    def _create(self, open_clip: Any, pretrained: str | None, what: str) -> ClipScorer:
        try:
            model, _, preprocess = open_clip.create_model_and_transforms(
                self.model_name, pretrained=pretrained, device=self.device, cache_dir=self.cache_dir
            )
            tokenizer = open_clip.get_tokenizer(self.model_name)
        except Exception as exc:
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise WeightsError(
                f"Cannot load CLIP model {self.model_name} from {what}: {reason}; {_HOW_TO}."
            ) from exc
        model.eval()
        self._model, self._preprocess, self._tokenizer = model, preprocess, tokenizer
        self.loads += 1
        return self

    # ------------------------------------------------------------------ encoding
    def text_features(self, text: str | Sequence[str]) -> np.ndarray:
        """The unit text embedding of ``text``; several texts are averaged (a prompt ensemble)."""
        texts = (text,) if isinstance(text, str) else tuple(text)
        if not texts or not all(isinstance(t, str) and t.strip() for t in texts):
            raise ValueError(f"text must be a non-empty string or strings, got {text!r}")
        cached = self._text_cache.get(texts)
        if cached is not None:
            return cached
        import torch

        self.load()
        with torch.inference_mode():
            tokens = self._tokenizer(list(texts)).to(self.device)
            f = self._model.encode_text(tokens).float()
            f = f / f.norm(dim=-1, keepdim=True)
            f = f.mean(dim=0)
            f = f / f.norm()
        out = f.cpu().numpy().astype(np.float32)
        self._text_cache[texts] = out
        return out

    def image_features(self, crops: Sequence[np.ndarray]) -> np.ndarray:
        """``N x D`` unit image embeddings of ``H x W x 3`` uint8 crops, in batches."""
        import torch
        from PIL import Image

        self.load()
        feats = []
        with torch.inference_mode():
            for s in range(0, len(crops), self.batch_size):
                batch = torch.stack(
                    [self._preprocess(Image.fromarray(c)) for c in crops[s : s + self.batch_size]]
                )
                f = self._model.encode_image(batch.to(self.device)).float()
                feats.append((f / f.norm(dim=-1, keepdim=True)).cpu().numpy())
        return np.concatenate(feats).astype(np.float32) if feats else np.zeros((0, 0), np.float32)

    # ------------------------------------------------------------------ the scorer protocol
    def score(
        self,
        image: np.ndarray,
        masks: InstanceMasks,
        text: str | Sequence[str],
        *,
        softmax: bool = False,
    ) -> np.ndarray:
        """``N`` float32: cosine similarity of each mask (alone, see :func:`mask_crop`) with ``text``.

        With ``softmax=True``, the softmax over the ``N`` masks of the similarities times
        CLIP's logit scale instead (it sums to 1: relative, not a per-mask test).
        """
        image = np.asarray(image)
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"image must be H x W x 3 uint8, got {image.shape} {image.dtype}")
        if len(masks) == 0:
            return np.zeros(0, np.float32)
        tf = self.text_features(text)
        crops = [mask_crop(image, masks, i, pad=self.pad) for i in range(len(masks))]
        sims = self.image_features(crops) @ tf
        if softmax:
            scale = (
                float(self._model.logit_scale.exp().item()) if hasattr(self._model, "logit_scale") else 100.0
            )
            return _softmax(sims, scale)
        return sims.astype(np.float32)


_softmax = softmax
