"""Helpers for tests and benchmarks that need a model file without downloading one."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fastsam_geo.masks import InstanceMasks


def random_fastsam_checkpoint(
    path: str | os.PathLike[str], cfg: str = "yolov8s-seg.yaml", *, seed: int = 0, imgsz: int = 1024
) -> Path:
    """Save a checkpoint of the FastSAM-s architecture (``yolov8s-seg``, one class) with random
    weights, the way ultralytics saves checkpoints, so it loads through ``ultralytics.FastSAM``.

    It segments nothing meaningful: it exercises the same code path as the official weights
    (loading, forward pass, NMS, mask assembly) at the same cost.
    """
    import torch
    from ultralytics.nn.tasks import SegmentationModel

    torch.manual_seed(seed)
    model = SegmentationModel(cfg, nc=1, verbose=False)
    model.names = {0: "object"}
    model.args = {"task": "segment", "imgsz": imgsz}
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    ckpt = {
        "model": model.half(),
        "train_args": {"task": "segment", "imgsz": imgsz},
        "epoch": -1,
        "date": None,
        "version": "8.4",
    }
    torch.save(ckpt, out)
    return out


@dataclass
class Agreement:
    """How two segmentations of the same tile agree (see :func:`compare_instances`).

    Attributes:
        counts: objects in ``a`` and in ``b``.
        matched: pairs matched one to one (box IoU >= 0.5, best first).
        min_mask_iou: the lowest mask IoU over the matched pairs (1.0 when none).
        max_score_diff: the largest score difference over the matched pairs (0.0 when none).
    """

    counts: tuple[int, int]
    matched: int
    min_mask_iou: float
    max_score_diff: float

    def ok(self, count_tol: float = 0.01, iou: float = 0.99, score_tol: float = 1e-3) -> bool:
        """Counts within ``count_tol`` (relative), every object but that share matched, each
        matched mask at IoU >= ``iou`` and score within ``score_tol``."""
        n = max(self.counts)
        allowed = count_tol * n
        return (
            abs(self.counts[0] - self.counts[1]) <= allowed
            and n - self.matched <= allowed
            and self.min_mask_iou >= iou
            and self.max_score_diff <= score_tol
        )


def _box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``len(a) x len(b)`` IoU of ``xyxy`` boxes.

    >>> _box_iou(np.array([[0, 0, 2, 2]]), np.array([[0, 0, 2, 2], [1, 0, 3, 2]])).tolist()
    [[1.0, 0.3333333333333333]]
    """
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(rb - lt, 0, None), axis=2)
    area_a = np.prod(a[:, 2:] - a[:, :2], axis=1)
    area_b = np.prod(b[:, 2:] - b[:, :2], axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.nan_to_num(inter / (area_a[:, None] + area_b[None, :] - inter))


def _mask_iou(a: InstanceMasks, i: int, b: InstanceMasks, j: int) -> float:
    """IoU of mask ``i`` of ``a`` and mask ``j`` of ``b``, on the union of their crops."""
    ca, cb = a.crop_boxes[i], b.crop_boxes[j]
    r0, c0 = min(ca[0], cb[0]), min(ca[1], cb[1])
    r1, c1 = max(ca[2], cb[2]), max(ca[3], cb[3])
    ma = np.zeros((r1 - r0, c1 - c0), bool)
    mb = np.zeros_like(ma)
    ma[ca[0] - r0 : ca[2] - r0, ca[1] - c0 : ca[3] - c0] = a.crops[i]
    mb[cb[0] - r0 : cb[2] - r0, cb[1] - c0 : cb[3] - c0] = b.crops[j]
    union = np.count_nonzero(ma | mb)
    return float(np.count_nonzero(ma & mb) / union) if union else 1.0


def compare_instances(a: InstanceMasks, b: InstanceMasks) -> Agreement:
    """Match the objects of two segmentations one to one (greedy on box IoU, at least 0.5) and
    measure their masks and scores: e.g. the torch and the ONNX engine on the same tile.

    >>> from fastsam_geo.masks import InstanceMasks
    >>> d = np.zeros((2, 8, 8), bool); d[0, 1:4, 1:4] = True; d[1, 5:8, 5:8] = True
    >>> x = InstanceMasks.from_dense(d, [0.9, 0.8])
    >>> compare_instances(x, x).ok(), compare_instances(x, x.subset([0])).ok()
    (True, False)
    """
    ious = _box_iou(a.boxes, b.boxes) if len(a) and len(b) else np.zeros((len(a), len(b)))
    pairs = np.argwhere(ious >= 0.5)
    order = np.argsort(-ious[pairs[:, 0], pairs[:, 1]], kind="stable")
    used_a: set[int] = set()
    used_b: set[int] = set()
    min_iou, max_diff = 1.0, 0.0
    for i, j in pairs[order]:
        if i in used_a or j in used_b:
            continue
        used_a.add(int(i))
        used_b.add(int(j))
        min_iou = min(min_iou, _mask_iou(a, int(i), b, int(j)))
        max_diff = max(max_diff, abs(float(a.scores[i]) - float(b.scores[j])))
    return Agreement((len(a), len(b)), len(used_a), min_iou, max_diff)


class SlowSegmenter:
    """The FastSAM model of ``weights`` (on the engine ``extract`` picks: engine auto), ``delay_s``
    slower per tile: gives a test time to act mid-run (kill a Dask worker, cancel). The model
    loads on first use, so the object pickles small (it is shipped to Dask workers)."""

    def __init__(self, weights: str | os.PathLike[str], delay_s: float = 1.0, device: str = "cpu") -> None:
        self.weights = os.fspath(weights)
        self.delay_s = delay_s
        self.device = device
        self._model: object = None

    def __getstate__(self) -> dict[str, object]:
        return {**self.__dict__, "_model": None}

    def segment(self, tiles: list) -> list:  # type: ignore[type-arg]
        """The model's masks, after sleeping ``delay_s`` per tile."""
        import time

        from fastsam_geo.segment import FastSAMSegmenter
        from fastsam_geo.segmenters import resolve_model

        if self._model is None:
            self._model = FastSAMSegmenter(resolve_model(self.weights).path, device=self.device)
        time.sleep(self.delay_s * len(tiles))
        return self._model.segment(tiles)  # type: ignore[attr-defined]
