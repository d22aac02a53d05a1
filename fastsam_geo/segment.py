"""The Segmenter protocol, and the FastSAM adapter (the only code that imports torch/ultralytics).

Any model that returns instance masks can be plugged into the pipeline: it only has to
implement ``segment(tiles) -> list[InstanceMasks]``.

:class:`FastSAMSegmenter` runs a FastSAM (YOLOv8-seg) checkpoint on batches of tiles. It loads
the weights through ``ultralytics.FastSAM`` and applies ultralytics' own NMS, but it assembles
each mask itself, *only inside the object's box*: ultralytics' ``retina_masks=True`` builds a
full-resolution float mask per object (1 MB at 1024 px, seconds per dense tile on a CPU),
while a building-sized crop costs tens of microseconds. The crops are the same pixels
ultralytics would give (``ops.process_mask_native``): logits ``coef @ protos`` sampled
bilinearly (``align_corners=False``) from the 1/4-resolution prototype grid at tile-pixel
centres, thresholded at 0, and kept where ``x1 <= col < x2`` and ``y1 <= row < y2``.

Differences from ``FastSAM.predict`` worth knowing: tiles are RGB (ultralytics takes BGR
arrays); a tile is padded, not scaled up, to the input size unless ``imgsz`` is given; the NMS
boxes are kept as they are (FastSAM's predictor afterwards snaps boxes within 20 px of the image
border, and near-whole-image boxes, to the border, which changes no mask).

Importing this module imports neither torch nor ultralytics; both are imported when a
segmenter is built.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np

from fastsam_geo.errors import DependencyError, WeightsError
from fastsam_geo.masks import InstanceMasks
from fastsam_geo.tiling import Tile
from fastsam_geo.weights import resolve_weights, sha256_file

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

PAD_VALUE = 114
"""Grey used by ultralytics' letterbox for the padding around a tile."""


@runtime_checkable
class Segmenter(Protocol):
    """Anything that turns tiles into instance masks ("segment everything")."""

    def segment(self, tiles: Sequence[Tile]) -> list[InstanceMasks]:
        """One :class:`InstanceMasks` per tile, in the order of ``tiles``."""
        ...


def set_torch_threads(threads: int | None = None) -> int:
    """Set torch's intra-op threads (default: every core; ultralytics leaves one idle).

    Returns the number set.
    """
    import torch

    n = threads or os.cpu_count() or 1
    torch.set_num_threads(n)
    return n


# ---------------------------------------------------------------------- geometry (pure numpy)
@dataclass(frozen=True)
class Letterbox:
    """How a tile was placed in the network input: ``input = tile * gain + pad``.

    Attributes:
        gain: ``(gain_y, gain_x)`` input pixels per tile pixel (1.0 unless ``imgsz`` resizes).
        pad: ``(top, left)`` padding in input pixels.
        input_shape: ``(H, W)`` of the network input.
        tile_shape: ``(h, w)`` of the tile.
    """

    gain: tuple[float, float]
    pad: tuple[int, int]
    input_shape: tuple[int, int]
    tile_shape: tuple[int, int]


def round_up(x: float, multiple: int) -> int:
    """Smallest multiple of ``multiple`` that is ``>= x``.

    >>> round_up(1000, 32), round_up(1024, 32), round_up(1, 32)
    (1024, 1024, 32)
    """
    return int(math.ceil(x / multiple) * multiple)


def letterbox_params(tile_shape: tuple[int, int], input_shape: tuple[int, int], resize: bool) -> Letterbox:
    """Where a ``tile_shape`` tile goes in an ``input_shape`` input (centred, like ultralytics).

    With ``resize=False`` the tile keeps its pixel size and is only padded (the input must be at
    least as large); with ``resize=True`` it is scaled to fit, keeping its aspect ratio.

    >>> letterbox_params((1000, 1024), (1024, 1024), resize=False)
    Letterbox(gain=(1.0, 1.0), pad=(12, 0), input_shape=(1024, 1024), tile_shape=(1000, 1024))
    >>> letterbox_params((1024, 512), (640, 640), resize=True).gain
    (0.625, 0.625)
    """
    h, w = tile_shape
    ih, iw = input_shape
    if resize:
        r = min(ih / h, iw / w)
        nh, nw = max(round(h * r), 1), max(round(w * r), 1)
    else:
        if h > ih or w > iw:
            raise ValueError(f"tile of {h} x {w} px does not fit in a {ih} x {iw} input without resizing")
        nh, nw = h, w
    top, left = round((ih - nh) / 2 - 0.1), round((iw - nw) / 2 - 0.1)
    return Letterbox((nh / h, nw / w), (int(top), int(left)), (ih, iw), (h, w))


def letterbox_image(image: np.ndarray, lb: Letterbox) -> np.ndarray:
    """The ``H x W x 3`` uint8 network input of one tile (resized if needed, padded with grey)."""
    h, w = lb.tile_shape
    nh, nw = round(h * lb.gain[0]), round(w * lb.gain[1])
    if (nh, nw) != (h, w):
        import cv2

        image = cv2.resize(image, (nw, nh), interpolation=cv2.INTER_LINEAR)
    out = np.full((*lb.input_shape, 3), PAD_VALUE, dtype=np.uint8)
    top, left = lb.pad
    out[top : top + nh, left : left + nw] = image
    return out


def boxes_to_tile(boxes: np.ndarray, lb: Letterbox) -> np.ndarray:
    """``xyxy`` boxes from network-input pixels to tile pixels, clipped to the tile (float32).

    >>> lb = letterbox_params((100, 200), (224, 224), resize=False)
    >>> boxes_to_tile(np.array([[10.0, 62.0, 50.0, 300.0]]), lb).tolist()
    [[0.0, 0.0, 38.0, 100.0]]
    """
    b = np.asarray(boxes, np.float32).reshape(-1, 4).copy()
    top, left = lb.pad
    gy, gx = lb.gain
    b -= np.asarray([left, top, left, top], np.float32)
    b /= np.asarray([gx, gy, gx, gy], np.float32)
    h, w = lb.tile_shape
    b[:, 0::2] = b[:, 0::2].clip(0, w)
    b[:, 1::2] = b[:, 1::2].clip(0, h)
    return b


def _taps(start: int, stop: int, gain: float, pad: int, ratio: float, size: int) -> tuple[int, int]:
    """First and last+1 prototype index read by bilinear sampling of tile pixels ``start:stop``.

    Tile pixel centre ``p + 0.5`` lies at input ``(p + 0.5) * gain + pad`` and at prototype
    coordinate ``that * ratio - 0.5`` (``align_corners=False``), clamped like ``F.interpolate``.
    """
    lo = ((start + 0.5) * gain + pad) * ratio - 0.5
    hi = ((stop - 0.5) * gain + pad) * ratio - 0.5
    lo = min(max(lo, 0.0), size - 1)
    hi = min(max(hi, 0.0), size - 1)
    return int(math.floor(lo)), min(int(math.floor(hi)) + 1, size - 1) + 1


def _upsample(
    logits: np.ndarray,
    box: tuple[int, int, int, int],
    origin: tuple[int, int],
    lb: Letterbox,
    ratio: tuple[float, float],
) -> np.ndarray:
    """Bilinear (``align_corners=False``) values of prototype-grid ``logits`` at the tile pixels of ``box``.

    ``logits`` is the prototype-grid crop whose top-left cell is ``origin``; ``box`` is
    ``(r0, c0, r1, c1)`` in tile pixels. Equal to ``F.interpolate(full_logits, input_shape)``
    cropped to the tile and the box, without building the full-size map.
    """
    import cv2

    r0, c0, r1, c1 = box
    pr0, pc0 = origin
    f = round(1 / ratio[0])
    if lb.gain == (1.0, 1.0) and abs(1 / ratio[0] - f) < 1e-9 and abs(1 / ratio[1] - f) < 1e-9:
        # the default case (no resize): an integer upsampling of the crop, then a slice of input pixels
        up = cv2.resize(logits, (logits.shape[1] * f, logits.shape[0] * f), interpolation=cv2.INTER_LINEAR)
        top, left = lb.pad[0] - f * pr0, lb.pad[1] - f * pc0
        return up[r0 + top : r1 + top, c0 + left : c1 + left]
    # resized tiles: the same sampling as an affine map from box pixels to the crop's cells
    ky, kx = lb.gain[0] * ratio[0], lb.gain[1] * ratio[1]
    m = np.array(
        [
            [kx, 0.0, (c0 + 0.5) * kx + lb.pad[1] * ratio[1] - 0.5 - pc0],
            [0.0, ky, (r0 + 0.5) * ky + lb.pad[0] * ratio[0] - 0.5 - pr0],
        ]
    )
    flags = cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP
    return cv2.warpAffine(logits, m, (c1 - c0, r1 - r0), flags=flags, borderMode=cv2.BORDER_REPLICATE)


def assemble_masks(
    det: np.ndarray,
    protos: np.ndarray,
    lb: Letterbox,
    nodata: np.ndarray | None = None,
    min_area_px: int = 0,
) -> InstanceMasks:
    """Masks of the detections of one tile, each built only inside its box.

    The mask of an object is ``coef @ protos`` on the prototype grid cells under its box,
    upsampled bilinearly to the box's tile pixels and thresholded at 0 (sigmoid 0.5): the same
    pixels as ultralytics' ``process_mask_native`` (``retina_masks=True``), at the cost of the box
    instead of the whole tile. A box whose logits are all <= 0 (or all > 0) is decided on the
    prototype grid without upsampling (bilinear values lie between their corners).

    Args:
        det: ``N x (6 + nm)`` float rows ``x1 y1 x2 y2 conf cls coef...`` as returned by
            ultralytics' ``non_max_suppression``, boxes in network-input pixels.
        protos: ``nm x mh x mw`` float mask prototypes of the same image.
        lb: where the tile lies in the network input.
        nodata: ``h x w`` bool, True where the tile has no data (cleared from every mask).
        min_area_px: masks with fewer pixels are dropped (empty masks always are).

    Returns:
        The objects with a non-empty mask, in the order of ``det``; crops are the box regions
        ``[ceil(y1):ceil(y2), ceil(x1):ceil(x2)]`` in tile pixels (pixel ``p`` is in the box when
        ``x1 <= p < x2``, as in ultralytics' ``crop_mask``).
    """
    h, w = lb.tile_shape
    det = np.asarray(det, np.float32)
    if det.size == 0:
        return InstanceMasks.empty((h, w))
    det = det.reshape(len(det), -1)
    protos = np.asarray(protos, np.float32)
    nm, mh, mw = protos.shape
    boxes = boxes_to_tile(det[:, :4], lb)
    scores = det[:, 4]
    coefs = det[:, det.shape[1] - nm :]
    ib = np.ceil(boxes).astype(np.int64)
    ib[:, 0::2] = ib[:, 0::2].clip(0, w)
    ib[:, 1::2] = ib[:, 1::2].clip(0, h)
    ratio = (mh / lb.input_shape[0], mw / lb.input_shape[1])
    valid = None if nodata is None else ~np.asarray(nodata, dtype=bool)

    crops, offsets, keep = [], [], []
    for i in range(len(det)):
        c0, r0, c1, r1 = (int(v) for v in ib[i])
        if r1 <= r0 or c1 <= c0:
            continue
        pr0, pr1 = _taps(r0, r1, lb.gain[0], lb.pad[0], ratio[0], mh)
        pc0, pc1 = _taps(c0, c1, lb.gain[1], lb.pad[1], ratio[1], mw)
        logits = np.tensordot(coefs[i], protos[:, pr0:pr1, pc0:pc1], axes=1)  # prototype grid under the box
        if logits.max() <= 0.0:
            continue
        if logits.min() > 0.0:
            crop = np.ones((r1 - r0, c1 - c0), dtype=bool)
        else:
            crop = _upsample(logits, (r0, c0, r1, c1), (pr0, pc0), lb, ratio) > 0.0
        if valid is not None:
            crop &= valid[r0:r1, c0:c1]
        area = int(np.count_nonzero(crop))
        if area == 0 or area < min_area_px:
            continue
        crops.append(crop)
        offsets.append((r0, c0))
        keep.append(i)
    idx = np.asarray(keep, np.int64)
    return InstanceMasks(crops, np.asarray(offsets, np.int64).reshape(-1, 2), scores[idx], boxes[idx], (h, w))


# ---------------------------------------------------------------------- torch helpers
def resolve_device(device: str | int | None = "auto") -> torch.device:
    """``"auto"`` -> CUDA if available, else Apple MPS if available, else CPU; others are checked.

    Raises:
        DependencyError: a CUDA / MPS device was asked for but this torch build cannot use it.
    """
    import torch

    if device is None or (isinstance(device, str) and device.lower() == "auto"):
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    dev = torch.device(f"cuda:{device}" if isinstance(device, int) else device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise DependencyError(
            f"device={device!r} asked for CUDA, but this torch ({torch.__version__}) cannot use a GPU; "
            "install a CUDA build of torch or use device='cpu'."
        )
    if dev.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise DependencyError(f"device={device!r} asked for Apple MPS, which is not available here; use device='cpu'.")
    return dev


@dataclass
class RawPrediction:
    """What the network and NMS gave for one tile, before the masks are assembled (numpy only).

    Attributes:
        det: ``N x (6 + nm)`` rows ``x1 y1 x2 y2 conf cls coef...``, boxes in input pixels.
        protos: ``nm x mh x mw`` float32 mask prototypes.
        letterbox: where the tile lies in the network input.
    """

    det: np.ndarray
    protos: np.ndarray
    letterbox: Letterbox


# ---------------------------------------------------------------------- the adapter
DEFAULT_MAX_DET = 1000


def mask_settings(
    weights_sha256: str,
    *,
    conf: float,
    iou: float,
    max_det: int = DEFAULT_MAX_DET,
    imgsz: int | None = None,
    min_area_px: int = 0,
    half: bool = False,
) -> dict[str, Any]:
    """The settings that decide a tile's everything masks, with :class:`FastSAMSegmenter`'s
    defaults: what cache keys are built from (``cache.key_fn_for``).

    >>> mask_settings("ab", conf=0.25, iou=0.7)["max_det"]
    1000
    """
    return {
        "weights_sha256": weights_sha256,
        "half": bool(half),
        "conf": float(conf),
        "iou": float(iou),
        "max_det": int(max_det),
        "imgsz": imgsz,
        "min_area_px": int(min_area_px),
    }


class FastSAMSegmenter:
    """FastSAM "segment everything" on tiles, with masks assembled inside their boxes.

    Args:
        weights: a ``.pt`` path or name, resolved by :func:`fastsam_geo.weights.resolve_weights`
            (None: the project default). ``.pt`` files are pickles: load only trusted ones.
        device: ``"auto"`` (CUDA, else MPS, else CPU), ``"cpu"``, ``"cuda:0"``, ``"mps"``...
        half: half precision; only used on CUDA (default there: True).
        batch_size: tiles per forward pass; None: 1 on the CPU (batching measured 1.6x slower per
            tile there: 0.68 s against 0.42 s for FastSAM-s at 1024 px), 4 on a GPU.
        conf: confidence threshold of the detections.
        iou: IoU threshold of ultralytics' NMS.
        max_det: most objects kept per tile (ultralytics' default of 300 caps dense city tiles).
        imgsz: network input size; None runs each batch at its tiles' own size (rounded up to
            the stride, 32), padding smaller tiles; an int resizes every tile to fit
            ``imgsz x imgsz``.
        threads: torch CPU threads (None: every core).
        min_area_px: masks smaller than this many pixels are dropped.

    Attributes:
        weights_path: the file that was loaded.
        weights_sha256: its sha256 (traceability: written to the outputs' metadata).
        gsd: the model's working ground resolution in metres per pixel (stored in the
            checkpoint, see :mod:`fastsam_geo.modelmeta`), or None when it has none: ``extract``
            then reads rasters at their own resolution.
        device: the torch device in use.
        model_calls: number of forward passes so far.

    Raises:
        WeightsError: the weights cannot be found, read, or are not an instance-segmentation model.
    """

    def __init__(
        self,
        weights: str | Path | None = None,
        *,
        device: str | int | None = "auto",
        half: bool | None = None,
        batch_size: int | None = None,
        conf: float = 0.25,
        iou: float = 0.7,
        max_det: int = DEFAULT_MAX_DET,
        imgsz: int | None = None,
        threads: int | None = None,
        min_area_px: int = 0,
    ) -> None:
        if batch_size is not None and batch_size < 1:
            raise ValueError(f"batch_size={batch_size} must be at least 1")
        if not 0.0 <= conf <= 1.0 or not 0.0 <= iou <= 1.0:
            raise ValueError(f"conf={conf} and iou={iou} must both lie in [0, 1]")
        if max_det < 1:
            raise ValueError(f"max_det={max_det} must be at least 1")
        if imgsz is not None and imgsz < 1:
            raise ValueError(f"imgsz={imgsz} must be positive (or None for the tile size)")
        self.batch_size = 1 if batch_size is None else int(batch_size)  # set for the device below
        self.conf = float(conf)
        self.iou = float(iou)
        self.max_det = int(max_det)
        self.imgsz = imgsz
        self.min_area_px = int(min_area_px)
        self.model_calls = 0

        self.weights_path = resolve_weights(weights)
        self.device = resolve_device(device)
        if batch_size is None:
            self.batch_size = 1 if self.device.type == "cpu" else 4
        if half and self.device.type != "cuda":
            log.warning("half precision is only used on CUDA; running in float32 on %s", self.device)
        self.half = bool(self.device.type == "cuda" and (half is None or half))
        self._load()
        # after ultralytics is imported; predict_raw sets it again if someone changed it since
        # (ultralytics' own predictors set cpu_count - 1, and 2 threads beat 1 by 1.8x on 2 cores)
        self.threads = set_torch_threads(threads)

    # ------------------------------------------------------------------ loading
    def _load(self) -> None:
        try:
            import torch
            from ultralytics import FastSAM
        except ImportError as e:  # pragma: no cover - both are core dependencies
            raise DependencyError(
                f"FastSAM needs torch and ultralytics ({e}); install them with: pip install torch ultralytics"
            ) from e
        try:  # ultralytics' NMS uses torchvision's C++ kernel only when torchvision is already imported
            import torchvision  # noqa: F401
        except ImportError:  # pragma: no cover - a dependency; ultralytics falls back on its own (slower) NMS
            log.debug("torchvision not importable; NMS falls back on ultralytics' TorchNMS")
        path = self.weights_path
        try:
            wrapper = FastSAM(str(path))
        except Exception as e:
            reason = " ".join(str(e).split())[:300] or type(e).__name__
            raise WeightsError(
                f"Cannot load model weights {path}: {type(e).__name__}: {reason}. "
                "Use a FastSAM or YOLO-seg .pt checkpoint (e.g. FastSAM-s.pt)."
            ) from e
        net = wrapper.model
        if not isinstance(net, torch.nn.Module):
            raise WeightsError(f"Model weights {path} are not a PyTorch .pt checkpoint; use a FastSAM .pt file.")
        head = net.model[-1] if hasattr(net, "model") and len(net.model) else None
        if getattr(wrapper, "task", None) != "segment" or not hasattr(head, "nm"):
            raise WeightsError(
                f"Model weights {path} hold a {getattr(wrapper, 'task', 'unknown')!r} model, not an instance-"
                "segmentation one; use a FastSAM or YOLO-seg checkpoint (e.g. FastSAM-s.pt)."
            )
        ckpt_path = Path(getattr(wrapper, "ckpt_path", None) or path)
        if ckpt_path.is_file():  # a bare official name downloaded by ultralytics lands here
            self.weights_path = ckpt_path.resolve()
        self.weights_sha256 = sha256_file(self.weights_path)
        from fastsam_geo.modelmeta import META_KEY, default_gsd

        ckpt = getattr(wrapper, "ckpt", None)  # the checkpoint dict ultralytics loaded: no second read
        meta = ckpt.get(META_KEY) if isinstance(ckpt, dict) else None
        self.gsd: float | None = default_gsd(self.weights_path, dict(meta) if isinstance(meta, dict) else {})

        if hasattr(net, "fuse"):
            net = net.fuse(verbose=False)
        net = net.to(self.device).eval()
        net = net.half() if self.half else net.float()
        for p in net.parameters():
            p.requires_grad_(False)
        self.net = net
        self.names: dict[int, str] = dict(getattr(net, "names", {0: "object"}))
        self.stride = int(max(int(torch.as_tensor(net.stride).max()), 32))
        self.end2end = bool(getattr(net, "end2end", False))

    @property
    def metadata(self) -> dict[str, Any]:
        """What produced the masks (for output metadata and cache keys)."""
        return {
            "weights": str(self.weights_path),
            "device": str(self.device),
            **mask_settings(
                self.weights_sha256,
                conf=self.conf,
                iou=self.iou,
                max_det=self.max_det,
                imgsz=self.imgsz,
                min_area_px=self.min_area_px,
                half=self.half,
            ),
        }

    # ------------------------------------------------------------------ inference
    def _input_shape(self, shapes: Sequence[tuple[int, int]]) -> tuple[tuple[int, int], bool]:
        if self.imgsz is None:
            return (
                (
                    round_up(max(s[0] for s in shapes), self.stride),
                    round_up(max(s[1] for s in shapes), self.stride),
                ),
                False,
            )
        size = round_up(self.imgsz, self.stride)
        return (size, size), True

    def predict_raw(self, tiles: Sequence[Tile]) -> list[RawPrediction]:
        """Forward pass and NMS, batched; numpy detections and prototypes per tile."""
        import torch
        from ultralytics.utils.nms import non_max_suppression

        if torch.get_num_threads() != self.threads:
            torch.set_num_threads(self.threads)
        out: list[RawPrediction] = []
        for start in range(0, len(tiles), self.batch_size):
            batch = tiles[start : start + self.batch_size]
            images = [_check_image(t) for t in batch]
            input_shape, resize = self._input_shape([im.shape[:2] for im in images])
            lbs = [letterbox_params(im.shape[:2], input_shape, resize) for im in images]
            x = np.stack([letterbox_image(im, lb) for im, lb in zip(images, lbs, strict=True)])
            with torch.inference_mode():
                xt = torch.from_numpy(x).to(self.device).permute(0, 3, 1, 2).contiguous()
                xt = (xt.half() if self.half else xt.float()).div_(255.0)
                preds = self.net(xt)
                self.model_calls += 1
                head = preds[0] if isinstance(preds, (tuple, list)) else preds
                if isinstance(head, (tuple, list)):
                    pred, protos = head[0], head[1]
                else:
                    pred, protos = head, preds[1]
                for j, lb in enumerate(lbs):
                    # one image per call: NMS's time limit then never drops the later images of a batch
                    det = non_max_suppression(
                        pred[j : j + 1],
                        self.conf,
                        self.iou,
                        max_det=self.max_det,
                        nc=len(self.names),
                        end2end=self.end2end,
                    )[0]
                    out.append(
                        RawPrediction(
                            det.float().cpu().numpy(),
                            protos[j].float().cpu().numpy(),
                            lb,
                        )
                    )
        return out

    def segment(self, tiles: Sequence[Tile]) -> list[InstanceMasks]:
        """One :class:`InstanceMasks` per tile (numpy only), in the order of ``tiles``."""
        raws = self.predict_raw(tiles)
        return [
            assemble_masks(r.det, r.protos, r.letterbox, nodata=t.nodata, min_area_px=self.min_area_px)
            for r, t in zip(raws, tiles, strict=True)
        ]


def _check_image(tile: Tile) -> np.ndarray:
    image = np.asarray(tile.image)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(
            f"tile {tile.id}: image must be H x W x 3 uint8 RGB, got {image.shape} {image.dtype}; "
            "stretch the raster to 8-bit RGB first (fastsam_geo.raster)"
        )
    return np.ascontiguousarray(image)
