"""The Segmenter protocol, and the FastSAM adapter shared by its engines (torch and ONNX Runtime).

Any model that returns instance masks can be plugged into the pipeline: it only has to
implement ``segment(tiles) -> list[InstanceMasks]``.

:class:`FastSAMSegmenter` runs a FastSAM (YOLOv8-seg) model on batches of tiles: a ``.pt``
checkpoint through torch and ultralytics' own NMS (:mod:`fastsam_geo.engine_torch`), or an
``.onnx`` export through ONNX Runtime and the same NMS in numpy (:mod:`fastsam_geo.engine_onnx`,
:mod:`fastsam_geo.nms`). Either way it assembles each mask itself, in numpy, *only inside the
object's box*: ultralytics' ``retina_masks=True`` builds a
full-resolution float mask per object (1 MB at 1024 px, seconds per dense tile on a CPU),
while a building-sized crop costs tens of microseconds. The crops are the same pixels
ultralytics would give (``ops.process_mask_native``): logits ``coef @ protos`` sampled
bilinearly (``align_corners=False``) from the 1/4-resolution prototype grid at tile-pixel
centres, thresholded at 0, and kept where ``x1 <= col < x2`` and ``y1 <= row < y2``.

Differences from ``FastSAM.predict`` worth knowing: tiles are RGB (ultralytics takes BGR
arrays); a tile is padded, not scaled up, to the input size unless ``imgsz`` is given; the NMS
boxes are kept as they are (FastSAM's predictor afterwards snaps boxes within 20 px of the image
border, and near-whole-image boxes, to the border, which changes no mask).

Importing this module imports neither torch, ultralytics nor onnxruntime; the engine a weights
file needs is imported when a segmenter is built.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from fastsam_geo.masks import InstanceMasks
from fastsam_geo.refine import outline_name, refine_masks
from fastsam_geo.tiling import Tile, pad_floor
from fastsam_geo.tta import (
    CANDIDATE_FACTOR,
    COARSE_SCALE,
    ViewMasks,
    coarse_views,
    fuse_at,
    unview_masks,
    view_tile,
    views,
)
from fastsam_geo.weights import resolve_weights

log = logging.getLogger(__name__)

PAD_VALUE = 114
"""Grey used by ultralytics' letterbox for the padding around a tile."""


@runtime_checkable
class Segmenter(Protocol):
    """Anything that turns tiles into instance masks ("segment everything")."""

    def segment(self, tiles: Sequence[Tile]) -> list[InstanceMasks]:
        """One :class:`InstanceMasks` per tile, in the order of ``tiles``."""
        ...


def cpu_threads() -> int:
    """The cores this process may run on: its CPU affinity (``taskset``, a container's cpuset),
    ``os.cpu_count()`` where the platform has none. The engines' default thread count."""
    try:
        return max(len(os.sched_getaffinity(0)), 1)
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


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
    return _centred((nh, nw), (ih, iw), (h, w))


def _centred(size: tuple[int, int], input_shape: tuple[int, int], tile_shape: tuple[int, int]) -> Letterbox:
    """A ``tile_shape`` tile resized to ``size`` and centred in ``input_shape`` (ultralytics' rounding)."""
    (nh, nw), (ih, iw), (h, w) = size, input_shape, tile_shape
    top, left = round((ih - nh) / 2 - 0.1), round((iw - nw) / 2 - 0.1)
    return Letterbox((nh / h, nw / w), (int(top), int(left)), (ih, iw), (h, w))


def scaled_letterbox(lb: Letterbox, scale: float) -> Letterbox:
    """``lb`` with the tile scaled by ``scale`` more, centred in the same input (a coarser view).

    >>> lb = letterbox_params((1024, 1024), (1024, 1024), resize=False)
    >>> scaled_letterbox(lb, 0.625)
    Letterbox(gain=(0.625, 0.625), pad=(192, 192), input_shape=(1024, 1024), tile_shape=(1024, 1024))
    """
    h, w = lb.tile_shape
    nh, nw = max(round(h * lb.gain[0] * scale), 1), max(round(w * lb.gain[1] * scale), 1)
    ih, iw = lb.input_shape
    if nh > ih or nw > iw:
        raise ValueError(f"a tile of {h} x {w} px scaled by {scale} does not fit in a {ih} x {iw} input")
    return _centred((nh, nw), lb.input_shape, lb.tile_shape)


def letterbox_image(image: np.ndarray, lb: Letterbox) -> np.ndarray:
    """The ``H x W x 3`` uint8 network input of one tile (resized if needed, padded with grey)."""
    h, w = lb.tile_shape
    nh, nw = round(h * lb.gain[0]), round(w * lb.gain[1])
    if (nh, nw) != (h, w):
        rows = linear_taps(nh, h / nh, 0.5 * h / nh - 0.5, h)
        cols = linear_taps(nw, w / nw, 0.5 * w / nw - 0.5, w)
        image = np.rint(resample_bilinear(image, rows, cols)).clip(0, 255).astype(np.uint8)
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


Taps = tuple[np.ndarray, np.ndarray, np.ndarray]


def linear_taps(n: int, step: float, start: float, size: int) -> Taps:
    """Linear-interpolation taps of ``n`` output samples at source coordinates ``start + step * j``.

    Coordinates are in source-cell units (cell ``i`` has its centre at ``i``) and are clamped
    to ``[0, size - 1]``: the border rule of ``F.interpolate(align_corners=False)`` and of
    OpenCV's ``INTER_LINEAR``. Returns the lower and upper source index and the upper weight.

    >>> lo, hi, w = linear_taps(4, 0.5, -0.25, 2)   # 2 cells upsampled 2x
    >>> lo.tolist(), hi.tolist(), w.tolist()
    ([0, 0, 0, 1], [1, 1, 1, 1], [0.0, 0.25, 0.75, 0.0])
    """
    s = np.clip(start + step * np.arange(n, dtype=np.float64), 0.0, size - 1)
    lo = np.floor(s).astype(np.intp)
    return lo, np.minimum(lo + 1, size - 1), (s - lo).astype(np.float32)


def resample_bilinear(a: np.ndarray, rows: Taps, cols: Taps) -> np.ndarray:
    """Separable bilinear resampling of the first two axes of ``a`` (float32 result).

    >>> a = np.array([[0.0, 4.0], [8.0, 12.0]])
    >>> resample_bilinear(a, linear_taps(1, 1.0, 0.5, 2), linear_taps(3, 0.5, 0.0, 2)).tolist()
    [[4.0, 6.0, 8.0]]
    """
    a = np.asarray(a, dtype=np.float32)
    extra = (1,) * (a.ndim - 1)
    r0, r1, wr = rows
    c0, c1, wc = cols
    wr, wc = wr.reshape(-1, *extra), wc.reshape(1, -1, *extra[1:])
    t = a[r0] * (1.0 - wr) + a[r1] * wr
    return t[:, c0] * (1.0 - wc) + t[:, c1] * wc


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
    cropped to the tile and the box, without building the full-size map: tile pixel centre
    ``p + 0.5`` lies at input ``(p + 0.5) * gain + pad``, at prototype coordinate
    ``that * ratio - 0.5``. Clamping to the crop is clamping to the grid (:func:`_taps`).
    """
    r0, c0, r1, c1 = box
    pr0, pc0 = origin
    ky, kx = lb.gain[0] * ratio[0], lb.gain[1] * ratio[1]
    rows = linear_taps(r1 - r0, ky, (r0 + 0.5) * ky + lb.pad[0] * ratio[0] - 0.5 - pr0, logits.shape[0])
    cols = linear_taps(c1 - c0, kx, (c0 + 0.5) * kx + lb.pad[1] * ratio[1] - 0.5 - pc0, logits.shape[1])
    return resample_bilinear(logits, rows, cols)


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
    tta: int = 1,
    refine: bool = True,
) -> dict[str, Any]:
    """The settings that decide a tile's everything masks, with :class:`FastSAMSegmenter`'s
    defaults: what cache keys are built from (``cache.key_fn_for``). ``tta`` is only named when
    views are fused (above 1); ``outline`` says how masks are finished (:mod:`fastsam_geo.refine`).

    >>> mask_settings("ab", conf=0.25, iou=0.7)["max_det"]
    1000
    >>> mask_settings("ab", conf=0.25, iou=0.7, tta=8)["tta"]
    8
    """
    return {
        "weights_sha256": weights_sha256,
        "half": bool(half),
        "conf": float(conf),
        "iou": float(iou),
        "max_det": int(max_det),
        "imgsz": imgsz,
        "min_area_px": int(min_area_px),
        **({"tta": int(tta)} if tta != 1 else {}),
        "outline": outline_name(refine),
    }


ENGINES = {".onnx": ("fastsam_geo.engine_onnx", "OnnxFastSAMSegmenter")}
"""Weights suffix -> (module, class) of the engine that runs them; anything else is torch."""


def engine_for(weights: str | os.PathLike[str]) -> type[FastSAMSegmenter]:
    """The :class:`FastSAMSegmenter` subclass that runs ``weights`` (by suffix; torch by default).

    Importing the ONNX engine imports onnxruntime only; the torch engine imports torch when built.
    """
    import importlib

    module, name = ENGINES.get(Path(weights).suffix.lower(), ("fastsam_geo.engine_torch", "TorchFastSAMSegmenter"))
    return getattr(importlib.import_module(module), name)


class FastSAMSegmenter:
    """FastSAM "segment everything" on tiles, with masks assembled inside their boxes.

    ``FastSAMSegmenter(weights)`` builds the engine that runs the file: an ``.onnx`` export
    runs on ONNX Runtime (:class:`fastsam_geo.engine_onnx.OnnxFastSAMSegmenter`, no torch), a
    ``.pt`` checkpoint on torch (:class:`fastsam_geo.engine_torch.TorchFastSAMSegmenter`). Both
    share the letterboxing, the mask assembly and the cache-key settings of this class.

    Args:
        weights: a ``.pt`` or ``.onnx`` path or name, resolved by
            :func:`fastsam_geo.weights.resolve_weights` (None: the project default, the ``.pt``
            when torch is installed, else the ``.onnx``). ``.pt`` files are pickles: load only
            trusted ones.
        device: ``"auto"`` (CUDA, else MPS, else CPU), ``"cpu"``, ``"cuda:0"``, ``"mps"``...
            (ONNX: ``"auto"`` uses TensorRT / CUDA execution providers when onnxruntime has them).
        half: half precision; only used on CUDA (default there: True). An ONNX file's precision
            is fixed at export (``fastsam-geo export --half``).
        batch_size: tiles per forward pass; None: 1 on the CPU (batching measured 1.6x slower per
            tile there: 0.68 s against 0.42 s for FastSAM-s at 1024 px), 4 on a GPU.
        conf: confidence threshold of the detections (default: the one stored with the model
            when it was trained, see :func:`fastsam_geo.modelmeta.best_conf`; else 0.25).
        iou: IoU threshold of the NMS.
        max_det: most objects kept per tile (ultralytics' default of 300 caps dense city tiles).
        imgsz: network input size; None runs each batch at its tiles' own size (rounded up to
            the stride, 32), padding smaller tiles, and a tile narrower than its grid's tiles (a
            raster smaller than a tile, ``tile.pad_to``) to the grid's tile size, as a full tile;
            an int resizes every tile to fit ``imgsz x imgsz``. ONNX: the export's fixed size.
        threads: CPU threads (None: every core this process may use, :func:`cpu_threads`).
        min_area_px: masks smaller than this many pixels are dropped.
        tta: views of each tile (1, 2, 4 or 8: flips and quarter turns; 12: the 8 and four
            flips 1.6 times coarser, which only add large roofs) whose objects are fused, see
            :mod:`fastsam_geo.tta`; 1 (the default) runs the tile as it is. Costs ``tta``
            forward passes per tile.
        refine: snap each final mask's outline to the tile's edges (:mod:`fastsam_geo.refine`).

    Attributes:
        weights_path: the file that was loaded.
        weights_sha256: its sha256 (traceability: written to the outputs' metadata).
        gsd: the model's working ground resolution in metres per pixel (stored in the
            checkpoint or the .onnx, see :mod:`fastsam_geo.modelmeta`), or None when it has none:
            ``extract`` then reads rasters at their own resolution.
        device: the device in use (a ``torch.device``, or ``"cpu"`` / ``"cuda"`` for ONNX).
        model_calls: number of forward passes so far.

    Raises:
        WeightsError: the weights cannot be found, read, or are not an instance-segmentation model.
        DependencyError: the engine the file needs is not installed (torch for ``.pt``).
    """

    engine = "abstract"
    device: Any
    names: dict[int, str]
    stride: int

    def __new__(cls, weights: str | Path | None = None, **_kwargs: Any) -> FastSAMSegmenter:
        if cls is FastSAMSegmenter:  # the public entry: pick the engine by the file's suffix
            cls = engine_for(resolve_weights(weights))
        return super().__new__(cls)

    def __init__(
        self,
        weights: str | Path | None = None,
        *,
        device: str | int | None = "auto",
        half: bool | None = None,
        batch_size: int | None = None,
        conf: float | None = None,
        iou: float = 0.7,
        max_det: int = DEFAULT_MAX_DET,
        imgsz: int | None = None,
        threads: int | None = None,
        min_area_px: int = 0,
        tta: int = 1,
        refine: bool = True,
    ) -> None:
        self.views = views(tta)  # ValueError for a count --tta does not take
        self.coarse_views = coarse_views(tta)
        if batch_size is not None and batch_size < 1:
            raise ValueError(f"batch_size={batch_size} must be at least 1")
        if (conf is not None and not 0.0 <= conf <= 1.0) or not 0.0 <= iou <= 1.0:
            raise ValueError(f"conf={conf} and iou={iou} must both lie in [0, 1]")
        if max_det < 1:
            raise ValueError(f"max_det={max_det} must be at least 1")
        if imgsz is not None and imgsz < 1:
            raise ValueError(f"imgsz={imgsz} must be positive (or None for the tile size)")
        self.batch_size = 1 if batch_size is None else int(batch_size)  # set for the device by _setup
        self.iou = float(iou)
        self.max_det = int(max_det)
        self.imgsz = imgsz
        self.min_area_px = int(min_area_px)
        self.refine = bool(refine)
        self.model_calls = 0
        self.weights_path = resolve_weights(weights)
        self.model_meta: dict[str, Any] = {}
        self._setup(device=device, half=half, batch_size=batch_size, threads=threads)
        from fastsam_geo.modelmeta import default_conf

        # None: the threshold calibrated when the model was trained (stored with it), else 0.25
        self.conf = default_conf(self.model_meta) if conf is None else float(conf)

    def _setup(
        self, *, device: str | int | None, half: bool | None, batch_size: int | None, threads: int | None
    ) -> None:
        """Load the weights (engine-specific): sets device, half, batch_size, names, stride, weights_sha256."""
        raise NotImplementedError

    def _forward(self, x: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
        """Forward pass and NMS of a ``B x H x W x 3`` uint8 batch: ``(det, protos)`` per image (numpy)."""
        raise NotImplementedError

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
                tta=self.tta,
                refine=self.refine,
            ),
        }

    @property
    def tta(self) -> int:
        """Views fused per tile (1: none)."""
        return len(self.views) + len(self.coarse_views)

    @property
    def nms_conf(self) -> float:
        """The threshold of the NMS: ``conf``, lowered for the views' candidates when fusing."""
        return self.conf * CANDIDATE_FACTOR if self.tta > 1 else self.conf

    # ------------------------------------------------------------------ inference
    def _input_shape(self, shapes: Sequence[tuple[int, int]], floor: int = 0) -> tuple[tuple[int, int], bool]:
        """The batch's input ``(height, width)`` and whether tiles are resized to it; ``floor``:
        the tile size the batch's tiles are padded to at least (:func:`pad_floor`)."""
        if self.imgsz is None:
            h = round_up(max(floor, *(s[0] for s in shapes)), self.stride)
            return (h, round_up(max(floor, *(s[1] for s in shapes)), self.stride)), False
        size = round_up(self.imgsz, self.stride)
        return (size, size), True

    def predict_raw(self, tiles: Sequence[Tile], scale: float = 1.0) -> list[RawPrediction]:
        """Forward pass and NMS, batched; numpy detections and prototypes per tile (``scale``:
        each tile scaled by it in the network input, :func:`scaled_letterbox`)."""
        out: list[RawPrediction] = []
        for start in range(0, len(tiles), self.batch_size):
            batch = tiles[start : start + self.batch_size]
            images = [_check_image(t) for t in batch]
            input_shape, resize = self._input_shape([im.shape[:2] for im in images], pad_floor(batch))
            lbs = [letterbox_params(im.shape[:2], input_shape, resize) for im in images]
            if scale != 1.0:
                lbs = [scaled_letterbox(lb, scale) for lb in lbs]
            x = np.stack([letterbox_image(im, lb) for im, lb in zip(images, lbs, strict=True)])
            results = self._forward(x)
            self.model_calls += 1
            out.extend(RawPrediction(det, protos, lb) for (det, protos), lb in zip(results, lbs, strict=True))
        return out

    def segment(self, tiles: Sequence[Tile]) -> list[InstanceMasks]:
        """One :class:`InstanceMasks` per tile (numpy only), in the order of ``tiles``; with
        ``tta`` above 1, each tile's views fused (:func:`fastsam_geo.tta.fuse_at`: the views'
        objects fused and, at 12, the large objects only the coarse views found added)."""
        if self.tta == 1:
            found = self._segment_views(tiles)
        else:
            found = [fuse_at(seen, self.conf) for seen in self.view_masks(tiles)]
        return [self.finish(m, t) for m, t in zip(found, tiles, strict=True)]

    def finish(self, masks: InstanceMasks, tile: Tile) -> InstanceMasks:
        """``tile``'s final masks: outlines snapped to its edges unless ``refine`` is off."""
        return refine_masks(masks, _check_image(tile), tile.nodata) if self.refine else masks

    def view_masks(self, tiles: Sequence[Tile]) -> list[ViewMasks]:
        """Each tile's masks from each of its views, mapped back onto the tile, at the views'
        candidate threshold (:attr:`nms_conf`): what :meth:`segment` fuses."""
        fine = self._per_view(tiles, self.views, 1.0)
        coarse = self._per_view(tiles, self.coarse_views, COARSE_SCALE)
        return [ViewMasks(f, c) for f, c in zip(fine, coarse, strict=True)]

    def _per_view(self, tiles: Sequence[Tile], views: Sequence[str], scale: float) -> list[list[InstanceMasks]]:
        """For each tile, its masks in each of ``views`` (seen scaled by ``scale``), in its frame."""
        per_view = []
        for view in views:
            seen = [view_tile(t, view) for t in tiles]
            per_view.append([unview_masks(m, view) for m in self._segment_views(seen, scale)])
        return [[pv[j] for pv in per_view] for j in range(len(tiles))]

    def _segment_views(self, tiles: Sequence[Tile], scale: float = 1.0) -> list[InstanceMasks]:
        raws = self.predict_raw(tiles, scale)
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
