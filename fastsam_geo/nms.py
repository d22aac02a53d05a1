"""Non-maximum suppression of YOLOv8-seg outputs in numpy (the ONNX engine's NMS; no torch).

A port of ``ultralytics.utils.nms.non_max_suppression`` for one image (the branch FastSAM
takes: boxes, not rotated, best class only, not end-to-end), with torchvision's NMS kernel,
so that an ONNX export gives the detections the torch engine gives:

1. candidates: rows whose best class score is ``> conf`` (strictly);
2. boxes ``xywh`` (centre, size) -> ``xyxy``;
3. at most ``max_nms`` candidates, the best by score;
4. greedy NMS, boxes offset by ``class * max_wh`` unless ``agnostic`` (with one class, the
   FastSAM case, both are the same), a box suppressed when its IoU with a kept one is ``> iou``;
5. the first ``max_det`` kept, by descending score.

Rows are ``x1 y1 x2 y2 conf cls coef...`` in float32, as ultralytics returns them.
"""

from __future__ import annotations

import numpy as np

MAX_NMS = 30000
"""Most candidates that enter NMS (ultralytics' ``max_nms``)."""

MAX_WH = 7680
"""Per-class box offset in pixels for class-aware NMS (ultralytics' ``max_wh``)."""


def xywh2xyxy(x: np.ndarray) -> np.ndarray:
    """Centre-size boxes to corner boxes, computed as ultralytics does (``xy -/+ wh / 2``).

    >>> xywh2xyxy(np.array([[10.0, 20.0, 4.0, 6.0]], np.float32)).tolist()
    [[8.0, 17.0, 12.0, 23.0]]
    """
    y = np.empty_like(x)
    xy = x[..., :2]
    wh = x[..., 2:] / 2
    y[..., :2] = xy - wh
    y[..., 2:] = xy + wh
    return y


def nms_indices(boxes: np.ndarray, scores: np.ndarray, iou: float, limit: int | None = None) -> np.ndarray:
    """Greedy NMS like ``torchvision.ops.nms``: indices kept, by descending score.

    A box is dropped when its IoU with a higher-scoring kept box is ``> iou``. ``limit`` stops
    after that many kept boxes (the same first ``limit`` indices as without it).

    >>> b = np.array([[0, 0, 10, 10], [1, 1, 10, 10], [20, 20, 30, 30]], np.float32)
    >>> nms_indices(b, np.array([0.9, 0.8, 0.7], np.float32), 0.5).tolist()
    [0, 2]
    >>> nms_indices(b, np.array([0.9, 0.8, 0.7], np.float32), 0.9).tolist()
    [0, 1, 2]
    """
    boxes = np.asarray(boxes, np.float32)
    n = len(boxes)
    if n == 0:
        return np.zeros(0, np.int64)
    x1, y1, x2, y2 = boxes[:, 0], boxes[:, 1], boxes[:, 2], boxes[:, 3]
    areas = (x2 - x1) * (y2 - y1)
    order = np.argsort(-np.asarray(scores, np.float32), kind="stable")
    limit = n if limit is None else int(limit)
    keep: list[int] = []
    thr = np.float32(iou)
    while order.size and len(keep) < limit:
        i = int(order[0])
        keep.append(i)
        rest = order[1:]
        if not rest.size:
            break
        w = np.maximum(np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]), np.float32(0))
        h = np.maximum(np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]), np.float32(0))
        inter = w * h
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = inter / (areas[i] + areas[rest] - inter)
        order = rest[~(ratio > thr)]  # NaN (two empty boxes) is not > thr: kept, as in torchvision
    return np.asarray(keep, np.int64)


def non_max_suppression(
    prediction: np.ndarray,
    conf: float,
    iou: float,
    *,
    max_det: int = 300,
    nc: int = 0,
    agnostic: bool = False,
    max_nms: int = MAX_NMS,
    max_wh: int = MAX_WH,
) -> np.ndarray:
    """Detections of one image from its raw ``(4 + nc + nm) x A`` YOLOv8-seg head output.

    Args:
        prediction: ``C x A`` float array (one image of the network's first output), rows
            ``cx cy w h``, ``nc`` class scores, then mask coefficients.
        conf: confidence threshold (a detection needs a class score ``> conf``).
        iou: IoU threshold of the NMS.
        max_det: most detections returned.
        nc: number of classes (0: every channel after the box is a class).
        agnostic: one NMS over all classes instead of one per class.

    Returns:
        ``N x (6 + nm)`` float32 rows ``x1 y1 x2 y2 conf cls coef...``, by descending score.

    >>> p = np.zeros((4 + 1 + 2, 3), np.float32)
    >>> p[:4] = [[50, 52, 200], [50, 50, 200], [20, 20, 10], [20, 20, 10]]  # two overlapping boxes and one apart
    >>> p[4] = [0.9, 0.8, 0.1]; p[5:] = [[1, 2, 3], [4, 5, 6]]
    >>> non_max_suppression(p, 0.25, 0.5, nc=1).astype(np.float64).round(3).tolist()
    [[40.0, 40.0, 60.0, 60.0, 0.9, 0.0, 1.0, 4.0]]
    """
    pred = np.asarray(prediction, np.float32)
    nc = nc or pred.shape[0] - 4
    extra = pred.shape[0] - nc - 4
    cls_scores = pred[4 : 4 + nc]
    candidates = cls_scores.max(axis=0) > conf
    x = pred[:, candidates].T  # n x C
    if not len(x):
        return np.zeros((0, 6 + extra), np.float32)
    box = xywh2xyxy(x[:, :4])
    cls = x[:, 4 : 4 + nc]
    j = cls.argmax(axis=1)
    score = cls[np.arange(len(x)), j]
    det = np.concatenate([box, score[:, None], j[:, None].astype(np.float32), x[:, 4 + nc :]], axis=1)
    det = det[score > conf]
    if len(det) > max_nms:
        det = det[np.argsort(-det[:, 4], kind="stable")[:max_nms]]
    offset = det[:, 5:6] * (0 if agnostic else max_wh)
    keep = nms_indices(det[:, :4] + offset, det[:, 4], iou, limit=max_det)
    return np.ascontiguousarray(det[keep], dtype=np.float32)
