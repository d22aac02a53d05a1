"""The building filter and mask non-maximum suppression: FastSAM's "everything" masks of a tile
down to one mask per building.

:func:`building_filter` keeps the masks whose size and shape (from the minimum-area rotated
rectangle, :func:`shape_stats`) look like a building; :func:`nms_masks` then drops duplicates,
parts of a larger mask and masks that are groups of buildings (:func:`nms_keep` says how).
Pure functions on :class:`~fastsam_geo.masks.InstanceMasks` in tile pixels, like the selection
by prompts in :mod:`fastsam_geo.selection`, whose crop arithmetic they share.
"""

from __future__ import annotations

import numpy as np
import shapely

try:  # in the full install (ultralytics needs it); the light install measures with shapely
    import cv2
except ImportError:  # pragma: no cover - exercised by test_light and a test that hides cv2
    cv2 = None

from fastsam_geo.masks import InstanceMasks
from fastsam_geo.selection import _intersection

__all__ = [
    "building_filter",
    "min_area_rect",
    "nms_keep",
    "nms_masks",
    "shape_stats",
]


# ====================================================================== everything: filter + NMS
def shape_stats(masks: InstanceMasks) -> dict[str, np.ndarray]:
    """Per-mask shape measures from the minimum-area rotated rectangle of its pixels.

    ``area`` (pixels), ``rectangularity`` (mask area / rotated-rectangle area, in (0, 1]),
    ``elongation`` (long side / short side, >= 1), ``angle`` (degrees, of the rectangle).
    Rectangle sides are measured on pixel *edges* (contour through pixel centres + 1 px).

    >>> dense = np.zeros((2, 20, 20), bool)
    >>> dense[0, 2:12, 2:7] = True                 # 10 x 5 block
    >>> dense[1, 14:19, 2:19] = True; dense[1, 14:17, 5:19] = False   # an L
    >>> st = shape_stats(InstanceMasks.from_dense(dense))
    >>> st["area"].tolist(), st["rectangularity"].round(2).tolist(), st["elongation"].round(2).tolist()
    ([50, 43], [1.0, 0.51], [2.0, 3.4])
    """
    n = len(masks)
    rect = np.ones(n, np.float64)
    elong = np.ones(n, np.float64)
    angle = np.zeros(n, np.float64)
    areas = masks.areas.astype(np.float64)
    for i, crop in enumerate(masks.crops):
        pts = _outline_points(crop)
        if len(pts) == 0:
            continue
        rw, rh, ang = min_area_rect(pts)
        # The points are pixel centres: the pixels' outline is half a pixel further out.
        rw, rh = rw + 1.0, rh + 1.0
        rect[i] = min(areas[i] / (rw * rh), 1.0)
        elong[i] = max(rw, rh) / min(rw, rh)
        angle[i] = ang
    return {"area": masks.areas, "rectangularity": rect, "elongation": elong, "angle": angle}


def _outline_points(crop: np.ndarray) -> np.ndarray:
    """``(x, y)`` centres of pixels whose convex hull is the hull of all the mask's pixels: the
    outer contours of every part (OpenCV), else the first and last pixel of each row."""
    if cv2 is None:
        return _row_ends(crop)
    contours, _ = cv2.findContours(np.ascontiguousarray(crop, np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    if not contours:
        return np.empty((0, 2), np.float32)
    return np.concatenate(contours).reshape(-1, 2).astype(np.float32)


def _row_ends(crop: np.ndarray) -> np.ndarray:
    """``(x, y)`` centres of the first and last set pixel of each row: their hull is the mask's."""
    rows = np.flatnonzero(crop.any(axis=1))
    if len(rows) == 0:
        return np.empty((0, 2), np.float64)
    sub = crop[rows]
    first = sub.argmax(axis=1)
    last = sub.shape[1] - 1 - sub[:, ::-1].argmax(axis=1)
    return np.concatenate([np.c_[first, rows], np.c_[last, rows]]).astype(np.float64)


def min_area_rect(points: np.ndarray) -> tuple[float, float, float]:
    """Width, height and angle (degrees in [0, 90)) of the minimum-area rectangle around ``points``.

    Rotating calipers (OpenCV's ``minAreaRect`` where installed, else the same on shapely's
    convex hull): the best rectangle has a side on an edge of the convex hull. Collinear points
    give a side of 0, one point gives 0 x 0.

    >>> w, h, a = min_area_rect(np.array([[0, 0], [4, 4], [3, 5], [-1, 1]], float))
    >>> round(w * h, 4), round(a, 4)
    (8.0, 45.0)
    >>> w, h, a = min_area_rect(np.array([[0, 0], [0, 3]], float))
    >>> sorted([round(w, 4), round(h, 4)]), a
    ([0.0, 3.0], 0.0)
    """
    if len(points) == 0:
        return 0.0, 0.0, 0.0
    if cv2 is not None:
        _, (w, h), ang = cv2.minAreaRect(np.asarray(points, np.float32).reshape(-1, 2))
        return float(w), float(h), float(ang) % 90.0
    hull = shapely.convex_hull(shapely.multipoints(np.asarray(points, np.float64)))
    xy = shapely.get_coordinates(hull)
    if len(xy) < 2:
        return 0.0, 0.0, 0.0
    edges = np.diff(xy, axis=0)
    edges = edges[np.hypot(edges[:, 0], edges[:, 1]) > 0]
    u = edges / np.hypot(edges[:, 0], edges[:, 1])[:, None]
    along, across = u @ xy.T, np.c_[-u[:, 1], u[:, 0]] @ xy.T
    w = along.max(axis=1) - along.min(axis=1)
    h = across.max(axis=1) - across.min(axis=1)
    k = int(np.argmin(w * h))
    ang = float(np.degrees(np.arctan2(u[k, 1], u[k, 0])))
    return float(w[k]), float(h[k]), ang % 90.0


def building_filter(
    masks: InstanceMasks,
    *,
    pixel_area_m2: float,
    min_area_m2: float = 20.0,
    max_area_m2: float = 10_000.0,
    min_rectangularity: float = 0.5,
    max_elongation: float = 10.0,
    text_scores: np.ndarray | None = None,
    min_text_score: float | None = None,
) -> np.ndarray:
    """``N`` bool: which masks look like buildings.

    A building has an area (pixel count x ``pixel_area_m2``) in ``[min_area_m2,
    max_area_m2]``, fills at least ``min_rectangularity`` of its minimum-area rotated
    rectangle (an L or a courtyard block fills 0.6-0.8, a road junction or a tree crown far
    less), is at most ``max_elongation`` times as long as wide (roads, rails and hedges are
    longer), and, when text scores are given with ``min_text_score``, scores at least that.

    >>> dense = np.zeros((3, 60, 60), bool)
    >>> dense[0, 5:25, 5:20] = True                     # a 10 m x 7.5 m roof at 0.5 m
    >>> dense[1, 30:32, 0:60] = True                    # a road: 60 x 2 px
    >>> dense[2, 40:42, 40:42] = True                   # 1 m2: too small
    >>> building_filter(InstanceMasks.from_dense(dense), pixel_area_m2=0.25).tolist()
    [True, False, False]
    """
    st = shape_stats(masks)
    area_m2 = st["area"] * float(pixel_area_m2)
    keep = (area_m2 >= min_area_m2) & (area_m2 <= max_area_m2)
    keep &= st["rectangularity"] >= min_rectangularity
    keep &= st["elongation"] <= max_elongation
    if text_scores is not None and min_text_score is not None:
        ts = np.asarray(text_scores, np.float64).ravel()
        if ts.size != len(masks):
            raise ValueError(f"{ts.size} text scores for {len(masks)} masks")
        keep &= ts >= min_text_score
    return keep


def nms_masks(
    masks: InstanceMasks, iou: float = 0.7, containment: float = 0.8, group_cover: float | None = 0.85
) -> InstanceMasks:
    """The masks that survive mask non-maximum suppression (see :func:`nms_keep` for the rule),
    in their original order.

    >>> dense = np.zeros((3, 10, 20), bool)
    >>> dense[0, 1:9, 1:9] = True; dense[1, 2:5, 2:5] = True; dense[2, 1:9, 11:19] = True
    >>> nms_masks(InstanceMasks.from_dense(dense)).areas.tolist()    # the part inside goes
    [64, 64]
    """
    return masks.subset(nms_keep(masks, iou=iou, containment=containment, group_cover=group_cover))


def nms_keep(
    masks: InstanceMasks, iou: float = 0.7, containment: float = 0.8, group_cover: float | None = 0.85
) -> np.ndarray:
    """``N`` bool: which masks mask non-maximum suppression keeps, in two passes.

    1. Duplicates: greedily by score (ties: larger first), a mask is dropped when its IoU
       with a kept, higher-ranked mask is above ``iou``.
    2. Parts: greedily by area, largest first, a mask is dropped when more than
       ``containment`` of it (intersection over the smaller) lies in a kept larger mask.
       FastSAM's "everything" output nests roof facets and annexes inside whole roofs; the
       larger mask is the building.
    3. Groups, the exception to 2: a larger mask that holds two or more disjoint masks
       which together cover less than ``group_cover`` of it (buildings with ground between
       them: a block, a yard) is the group, not the building: the *group* is dropped and its
       parts are kept. Roof facets tile their roof (cover >= ``group_cover``), so a roof
       keeps its place. ``group_cover=None`` turns this off. Running :func:`building_filter`
       first removes most whole-block and background masks before NMS.

    Pairs are found with an STRtree over the crop boxes; pixels are only compared for pairs
    whose boxes overlap (O(N log N) + the overlaps, not O(N^2) pixel work).

    >>> dense = np.zeros((4, 10, 20), bool)
    >>> dense[0, 1:9, 1:9] = True        # building, score 0.8
    >>> dense[1, 1:9, 1:8] = True        # near-duplicate, score 0.9: IoU 0.875
    >>> dense[2, 2:5, 2:5] = True        # a part of it
    >>> dense[3, 1:9, 11:19] = True      # another building
    >>> nms_keep(InstanceMasks.from_dense(dense, scores=[0.8, 0.9, 0.7, 0.6])).tolist()
    [False, True, False, True]
    >>> block = np.zeros((1, 10, 20), bool); block[0, 0:10, 0:20] = True   # holds both buildings
    >>> nms_keep(InstanceMasks.from_dense(np.concatenate([dense, block]))).tolist()
    [True, False, False, True, False]
    """
    n = len(masks)
    keep = np.ones(n, bool)
    if n < 2:
        return keep
    areas = masks.areas
    neighbours = overlap_neighbours(masks, areas)

    # pass 1: duplicates, by score
    order = np.lexsort((-areas, -masks.scores))
    rank = np.empty(n, np.int64)
    rank[order] = np.arange(n)
    for i in order:
        if keep[i] and any(keep[j] and rank[j] < rank[i] and u > iou for j, u, _ in neighbours[i]):
            keep[i] = False
    # pass 2: parts, by area; a mask made of several disjoint kept masks and much ground is a group
    order = np.lexsort((-masks.scores, -areas))
    rank[order] = np.arange(n)
    overlap = {(i, j): s for i in range(n) for j, _, s in neighbours[i]}
    for i in order:
        if not keep[i]:
            continue
        if any(keep[j] and rank[j] < rank[i] and s > containment for j, _, s in neighbours[i]):
            keep[i] = False
            continue
        if group_cover is None:
            continue
        inside = sorted(
            (j for j, _, s in neighbours[i] if keep[j] and rank[j] > rank[i] and s > containment),
            key=lambda j: (-areas[j], j),
        )
        disjoint: list[int] = []
        for j in inside:
            if all(overlap.get((j, k), 0.0) < 0.2 for k in disjoint):
                disjoint.append(j)
        if len(disjoint) >= 2 and areas[disjoint].sum() < group_cover * areas[i]:
            keep[i] = False
    return keep


def overlap_neighbours(masks: InstanceMasks, areas: np.ndarray) -> list[list[tuple[int, float, float]]]:
    """For each mask, ``(other, iou, ios)`` of every mask it shares pixels with (``ios``:
    intersection over the smaller), from :func:`_overlapping_pairs`.

    >>> dense = np.zeros((3, 4, 8), bool)
    >>> dense[0, :, 0:4] = True; dense[1, :, 2:4] = True; dense[2, :, 6:8] = True
    >>> im = InstanceMasks.from_dense(dense)
    >>> overlap_neighbours(im, im.areas)
    [[(1, 0.5, 1.0)], [(0, 0.5, 1.0)], []]
    """
    neighbours: list[list[tuple[int, float, float]]] = [[] for _ in range(len(masks))]
    if len(masks) < 2:
        return neighbours
    a_idx, b_idx, pair_iou, pair_ios = _overlapping_pairs(masks, areas)
    for a, b, u, s in zip(a_idx.tolist(), b_idx.tolist(), pair_iou.tolist(), pair_ios.tolist(), strict=True):
        neighbours[a].append((b, u, s))
        neighbours[b].append((a, u, s))
    return neighbours


def _overlapping_pairs(
    masks: InstanceMasks, areas: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(a, b, iou, ios)`` of :func:`nms_keep`'s pairs: masks ``a < b`` whose crop boxes overlap
    (an STRtree finds them), their IoU and their intersection over the smaller; pixels are compared
    for these pairs only."""
    cb = masks.crop_boxes  # row0, col0, row1, col1
    geoms = shapely.box(cb[:, 1], cb[:, 0], cb[:, 3], cb[:, 2])
    tree = shapely.STRtree(geoms)
    a_idx, b_idx = tree.query(geoms, predicate="intersects")
    sel = a_idx < b_idx
    a_idx, b_idx = a_idx[sel], b_idx[sel]
    # boxes that merely touch share no pixel: require a positive overlap
    ov = (np.minimum(cb[a_idx, 2], cb[b_idx, 2]) > np.maximum(cb[a_idx, 0], cb[b_idx, 0])) & (
        np.minimum(cb[a_idx, 3], cb[b_idx, 3]) > np.maximum(cb[a_idx, 1], cb[b_idx, 1])
    )
    a_idx, b_idx = a_idx[ov], b_idx[ov]
    inter = np.asarray(
        [
            _intersection(masks.crops[a], masks.offsets[a], masks.crops[b], masks.offsets[b])
            for a, b in zip(a_idx, b_idx, strict=True)
        ],
        np.int64,
    )
    pair_iou = inter / np.maximum(areas[a_idx] + areas[b_idx] - inter, 1)
    pair_ios = inter / np.maximum(np.minimum(areas[a_idx], areas[b_idx]), 1)
    return a_idx, b_idx, pair_iou, pair_ios
