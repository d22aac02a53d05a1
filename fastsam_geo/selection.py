"""FastSAM's second stage, prompt-guided selection: which of a tile's "everything" masks a
prompt picks.

Pure functions on :class:`~fastsam_geo.masks.InstanceMasks` in *tile pixel coordinates*; the
prompt values in map coordinates, prompt files and :func:`~fastsam_geo.prompts.select_prompts`
(one call for a tile) are in :mod:`fastsam_geo.prompts`, the building filter and mask NMS of
"everything" mode in :mod:`fastsam_geo.buildingfilter`. Nothing here imports torch or
open_clip: text prompts are scored by any object with a ``score(image, masks, text) ->
np.ndarray`` method (:class:`fastsam_geo.textprompt.ClipScorer` is one), and
:func:`select_text` turns those scores into a selection.

Selection rules (each function documents its own):

- points: one object per foreground point, the union of the *nested* candidate masks under
  it (:func:`select_points`);
- boxes: per box, the mask with the best IoU with the box (:func:`select_boxes`);
- reference masks: the masks that match a mask selected before (:func:`select_masks`);
- text: every mask whose score passes the threshold, or the top k (:func:`select_text`) --
  never only the argmax.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np

from fastsam_geo.errors import PromptError
from fastsam_geo.masks import InstanceMasks

__all__ = [
    "DEFAULT_TEXT_THRESHOLD",
    "TextScorer",
    "component_at",
    "select_boxes",
    "select_masks",
    "select_points",
    "select_text",
]

#: Default cosine-similarity threshold of a text prompt (CLIP ViT-B-32 scale: matching
#: image/text pairs score about 0.25-0.35, unrelated ones 0.10-0.20).
DEFAULT_TEXT_THRESHOLD = 0.22


def _check_text_limits(threshold: object, top_k: object) -> None:
    """Refuse a text threshold outside CLIP's cosine range [-1, 1] (or NaN) and a top-k that is
    not a whole number >= 1; None means "not set" for both.

    >>> _check_text_limits(0.22, 3)
    >>> _check_text_limits(float("nan"), None)
    Traceback (most recent call last):
    ...
    fastsam_geo.errors.PromptError: text_threshold=nan: give a cosine similarity from -1 to 1 (e.g. 0.22), or None.
    """
    if threshold is not None:
        try:
            ok = not isinstance(threshold, bool) and -1.0 <= float(threshold) <= 1.0  # type: ignore[arg-type]
        except (TypeError, ValueError):
            ok = False
        if not ok:
            raise PromptError(
                f"text_threshold={threshold!r}: give a cosine similarity from -1 to 1 (e.g. 0.22), or None."
            )
    if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, (int, np.integer)) or top_k < 1):
        raise PromptError(f"text_top_k={top_k!r}: give a whole number >= 1 (or None for no limit).")


# ====================================================================== crop arithmetic
def _crop_box(masks: InstanceMasks, i: int) -> tuple[int, int, int, int]:
    r0, c0 = (int(v) for v in masks.offsets[i])
    h, w = masks.crops[i].shape
    return r0, c0, r0 + h, c0 + w


def _intersection(a: np.ndarray, a_off: Sequence[int], b: np.ndarray, b_off: Sequence[int]) -> int:
    """Pixel count of the intersection of two crops placed at their ``(row, col)`` offsets."""
    r0, c0 = max(a_off[0], b_off[0]), max(a_off[1], b_off[1])
    r1 = min(a_off[0] + a.shape[0], b_off[0] + b.shape[0])
    c1 = min(a_off[1] + a.shape[1], b_off[1] + b.shape[1])
    if r1 <= r0 or c1 <= c0:
        return 0
    sa = a[r0 - a_off[0] : r1 - a_off[0], c0 - a_off[1] : c1 - a_off[1]]
    sb = b[r0 - b_off[0] : r1 - b_off[0], c0 - b_off[1] : c1 - b_off[1]]
    return int(np.count_nonzero(sa & sb))


def _union(
    crops: Sequence[np.ndarray], offsets: Sequence[Sequence[int]]
) -> tuple[np.ndarray, tuple[int, int]]:
    """The union of crops, as a crop tight to its pixels and its offset."""
    r0 = min(int(o[0]) for o in offsets)
    c0 = min(int(o[1]) for o in offsets)
    r1 = max(int(o[0]) + c.shape[0] for c, o in zip(crops, offsets, strict=True))
    c1 = max(int(o[1]) + c.shape[1] for c, o in zip(crops, offsets, strict=True))
    out = np.zeros((r1 - r0, c1 - c0), bool)
    for c, o in zip(crops, offsets, strict=True):
        out[o[0] - r0 : o[0] - r0 + c.shape[0], o[1] - c0 : o[1] - c0 + c.shape[1]] |= c
    rs, cs = np.flatnonzero(out.any(1)), np.flatnonzero(out.any(0))
    out = out[rs[0] : rs[-1] + 1, cs[0] : cs[-1] + 1]
    return out, (r0 + int(rs[0]), c0 + int(cs[0]))


def _from_crops(
    crops: list[np.ndarray], offsets: list[tuple[int, int]], scores: list[float], shape: tuple[int, int]
) -> InstanceMasks:
    n = len(crops)
    off = np.asarray(offsets, np.int64).reshape(n, 2)
    hw = np.asarray([c.shape for c in crops], np.int64).reshape(n, 2)
    boxes = np.concatenate([off[:, ::-1], off[:, ::-1] + hw[:, ::-1]], axis=1)
    return InstanceMasks(crops, off, np.asarray(scores, np.float32), boxes, shape)


def _is_group(
    masks: InstanceMasks, i: int, areas: np.ndarray, containment: float = 0.8, group_cover: float = 0.85
) -> bool:
    """Does mask ``i`` hold two or more disjoint masks that cover less than ``group_cover`` of it
    (buildings with ground between them), rather than being one object (a roof and its facets)?"""
    cb = masks.crop_boxes
    r0, c0, r1, c1 = cb[i]
    near = np.flatnonzero(
        (cb[:, 0] < r1) & (cb[:, 2] > r0) & (cb[:, 1] < c1) & (cb[:, 3] > c0) & (areas < areas[i])
    )
    inside = [
        int(j)
        for j in near
        if _intersection(masks.crops[i], masks.offsets[i], masks.crops[j], masks.offsets[j])
        > containment * areas[j]
    ]
    inside.sort(key=lambda j: (-areas[j], j))
    disjoint: list[int] = []
    for j in inside:
        if all(
            _intersection(masks.crops[j], masks.offsets[j], masks.crops[k], masks.offsets[k])
            < 0.2 * min(areas[j], areas[k])
            for k in disjoint
        ):
            disjoint.append(j)
    return len(disjoint) >= 2 and int(areas[disjoint].sum()) < group_cover * areas[i]


# ====================================================================== points
def select_points(
    masks: InstanceMasks,
    cols: Sequence[int] | np.ndarray,
    rows: Sequence[int] | np.ndarray,
    labels: Sequence[int] | np.ndarray | None = None,
    *,
    nested: float = 0.8,
    group_cover: float | None = 0.85,
) -> InstanceMasks:
    """One object per foreground point: the union of the nested candidate masks under it.

    The rule, for each foreground point ``p`` (label 1) in tile pixels:

    1. *Candidates* are the masks that contain ``p`` and none of the background points
       (label 0): a background click excludes every mask under it.
    2. A mask that also contains *another* foreground point is a group of objects, not the
       object at ``p``: it is dropped when ``p`` has a candidate of its own (so two clicks on
       two neighbouring buildings give two objects even when a mask covers both).
    3. So is a mask that holds two or more disjoint masks covering less than ``group_cover``
       of it (buildings with ground between them: a block), the rule of
       :func:`~fastsam_geo.buildingfilter.nms_keep`: it is dropped when ``p`` has a candidate
       that is not a group. A roof and its facets is no group (the facets tile it), so a click
       on a facet gives the roof.
    4. The candidates are merged into one object, from the smallest up: a candidate joins if it
       is nested with the object so far (it covers ``>= nested`` of the object, or the object
       covers ``>= nested`` of it). FastSAM's "everything" masks under a click are mostly a
       chain (roof facet ⊂ roof ⊂ ...), whose union is the object; a candidate that only
       partly overlaps the chain would glue background onto it, and is left out.
    5. Of the merged mask, only the part connected to ``p`` is the object (4-connected, as the
       polygons are traced): a speck of a candidate elsewhere in its box is not what was clicked.

    The score of an object is the best score of the masks it merges. Points outside the tile,
    background-only prompts and points on no mask give nothing; two clicks that give the
    same object give it once.

    >>> dense = np.zeros((4, 6, 12), bool)
    >>> dense[0, 1:5, 1:5] = True    # building A
    >>> dense[1, 1:5, 1:3] = True    # left half of A
    >>> dense[2, 1:5, 6:10] = True   # building B
    >>> dense[3, 0:6, 0:11] = True   # the whole block, A and B
    >>> im = InstanceMasks.from_dense(dense, scores=[0.9, 0.8, 0.9, 0.95])
    >>> sel = select_points(im, cols=[2], rows=[2], labels=[1])
    >>> len(sel), int(sel.areas[0]), round(float(sel.scores[0]), 3)   # A and its half: not the block
    (1, 16, 0.9)
    >>> select_points(im, cols=[2], rows=[2], group_cover=None).areas.tolist()  # no rule 3: the block
    [66]
    >>> select_points(im, cols=[2, 7], rows=[2, 2], labels=[1, 0], group_cover=None).areas.tolist()
    [16]
    >>> select_points(im, cols=[5], rows=[2]).areas.tolist()   # the ground inside the block: all there is
    [66]
    >>> sel = select_points(im, cols=[2, 7], rows=[2, 2], labels=[1, 1])
    >>> sel.areas.tolist()                   # two clicks, two buildings
    [16, 16]
    """
    cols, rows, labels = _clicks_in_tile(masks.shape, cols, rows, labels)
    if len(masks) == 0 or not (labels == 1).any():
        return InstanceMasks.empty(masks.shape)

    hit = masks.contains(rows, cols)  # N x P
    fg, bg = labels == 1, labels == 0
    allowed = ~hit[:, bg].any(axis=1)  # masks free of background points
    fg_hits = hit[:, fg]  # N x F
    n_fg_in = fg_hits.sum(axis=1)
    areas = masks.areas

    objects: dict[tuple[int, ...], tuple[np.ndarray, tuple[int, ...], float]] = {}  # first of each kept
    for k, (row, col) in enumerate(zip(rows[fg].tolist(), cols[fg].tolist(), strict=True)):
        cand = np.flatnonzero(fg_hits[:, k] & allowed)  # rule 1
        if cand.size == 0:
            continue
        cand = _point_candidates(masks, cand, n_fg_in, areas, group_cover)
        merged, obj_crop, obj_off = _merge_nested(masks, cand, areas, nested, row, col)
        objects.setdefault(tuple(sorted(merged)), (obj_crop, obj_off, float(masks.scores[merged].max())))
    if not objects:
        return InstanceMasks.empty(masks.shape)
    crops, offsets, scores = (list(v) for v in zip(*objects.values(), strict=True))
    return _from_crops(crops, offsets, scores, masks.shape)


def _clicks_in_tile(
    shape: tuple[int, int],
    cols: Sequence[int] | np.ndarray,
    rows: Sequence[int] | np.ndarray,
    labels: Sequence[int] | np.ndarray | None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(cols, rows, labels)`` of :func:`select_points` as int arrays, checked, less the points off a
    tile of ``shape`` (labels default to 1)."""
    cols = np.asarray(cols, np.int64).ravel()
    rows = np.asarray(rows, np.int64).ravel()
    labels = np.ones(cols.size, np.int64) if labels is None else np.asarray(labels, np.int64).ravel()
    if not (cols.size == rows.size == labels.size):
        raise PromptError(f"cols, rows and labels differ in length: {cols.size}, {rows.size}, {labels.size}")
    if labels.size and not np.isin(labels, (0, 1)).all():
        raise PromptError(f"Point labels must be 0 or 1, got {sorted(set(labels.tolist()))}.")
    h, w = shape
    inside = (rows >= 0) & (rows < h) & (cols >= 0) & (cols < w)
    return cols[inside], rows[inside], labels[inside]


def _point_candidates(
    masks: InstanceMasks, cand: np.ndarray, n_fg_in: np.ndarray, areas: np.ndarray, group_cover: float | None
) -> np.ndarray:
    """Rules 2 and 3 of :func:`select_points` on the (non-empty) candidates of one point, smallest first."""
    own = cand[n_fg_in[cand] == 1]
    if own.size:  # rule 2: groups of clicked objects give way to the point's own masks
        cand = own
    if group_cover is not None and cand.size > 1:  # rule 3: groups of objects too
        single = np.asarray([not _is_group(masks, int(j), areas, group_cover=group_cover) for j in cand])
        if single.any():
            cand = cand[single]
    return cand[np.lexsort((-masks.scores[cand], areas[cand]))]  # smallest first


def _merge_nested(
    masks: InstanceMasks, cand: np.ndarray, areas: np.ndarray, nested: float, row: int, col: int
) -> tuple[list[int], np.ndarray, tuple[int, ...]]:
    """Rules 4 and 5 of :func:`select_points`: the candidates (smallest first) merged into one object,
    cut to its part connected to the point ``(row, col)``; returns the merged masks, the crop, its offset."""
    merged = [int(cand[0])]
    obj_crop, obj_off = masks.crops[cand[0]], tuple(int(v) for v in masks.offsets[cand[0]])
    for j in cand[1:]:
        inter = _intersection(obj_crop, obj_off, masks.crops[j], masks.offsets[j])
        obj_area = int(np.count_nonzero(obj_crop))
        if inter >= nested * obj_area or inter >= nested * areas[j]:
            merged.append(int(j))
            obj_crop, obj_off = _union([obj_crop, masks.crops[j]], [obj_off, masks.offsets[j]])
    obj_crop = component_at(obj_crop, row - obj_off[0], col - obj_off[1])
    return merged, obj_crop, obj_off


def component_at(mask: np.ndarray, row: int, col: int) -> np.ndarray:
    """The 4-connected part of boolean ``mask`` that holds pixel ``(row, col)`` (all False if unset).

    >>> m = np.array([[1, 1, 0, 1], [0, 1, 0, 1], [1, 0, 0, 0]], bool)
    >>> component_at(m, 0, 0).astype(int).tolist()
    [[1, 1, 0, 0], [0, 1, 0, 0], [0, 0, 0, 0]]
    """
    out = np.zeros_like(mask, dtype=bool)
    if not (0 <= row < mask.shape[0] and 0 <= col < mask.shape[1]) or not mask[row, col]:
        return out
    out[row, col] = True
    count = 1
    while True:  # grow by one pixel a step, inside the mask, until nothing is added
        grown = out.copy()
        grown[1:] |= out[:-1]
        grown[:-1] |= out[1:]
        grown[:, 1:] |= out[:, :-1]
        grown[:, :-1] |= out[:, 1:]
        grown &= mask
        n = int(np.count_nonzero(grown))
        if n == count:
            return grown
        out, count = grown, n


# ====================================================================== boxes
def select_boxes(
    masks: InstanceMasks, boxes_px: Sequence[Sequence[float]] | np.ndarray, *, min_iou: float = 0.05
) -> InstanceMasks:
    """Per box ``(col0, row0, col1, row1)`` in tile pixels, the mask with the best IoU with it.

    A box whose best IoU is not above ``min_iou`` (or that lies off the tile) selects nothing;
    two boxes that pick the same mask give it once. Order follows the boxes.

    >>> dense = np.zeros((3, 10, 10), bool)
    >>> dense[0] = True; dense[1, 2:6, 2:6] = True; dense[2, 2:6, 2:4] = True
    >>> im = InstanceMasks.from_dense(dense)
    >>> select_boxes(im, [(2, 2, 6, 6), (20, 20, 30, 30)]).areas.tolist()
    [16]
    """
    boxes_px = np.asarray(boxes_px, np.float64).reshape(-1, 4)
    picked: list[int] = []
    if len(masks):
        for box in boxes_px:
            iou = masks.box_iou(box)
            j = int(np.argmax(iou))
            if iou[j] > min_iou and j not in picked:
                picked.append(j)
    return masks.subset(np.asarray(picked, np.int64))


# ====================================================================== reference masks
def select_masks(
    masks: InstanceMasks,
    reference_crop: np.ndarray,
    reference_offset: Sequence[int],
    min_iou: float = 0.5,
) -> InstanceMasks:
    """The masks whose IoU with a reference mask is ``>= min_iou``.

    The reference is a bool crop and its ``(row, col)`` offset in *this* tile's pixels (it may
    reach outside the tile: an object selected in a neighbouring tile). The reference is
    clipped to the tile first, because this tile's masks are cut at its edges too.

    >>> dense = np.zeros((2, 8, 8), bool); dense[0, 0:4, 4:8] = True; dense[1, 4:8, 0:4] = True
    >>> im = InstanceMasks.from_dense(dense)
    >>> ref = np.ones((4, 8), bool)          # 4 x 8 object of which this tile sees 4 x 4
    >>> select_masks(im, ref, (0, 4)).offsets.tolist()
    [[0, 4]]
    """
    ref = np.asarray(reference_crop, bool)
    r0, c0 = int(reference_offset[0]), int(reference_offset[1])
    h, w = masks.shape
    rr0, cc0 = max(r0, 0), max(c0, 0)
    rr1, cc1 = min(r0 + ref.shape[0], h), min(c0 + ref.shape[1], w)
    if rr1 <= rr0 or cc1 <= cc0 or len(masks) == 0:
        return masks.subset(np.zeros(0, np.int64))
    ref = ref[rr0 - r0 : rr1 - r0, cc0 - c0 : cc1 - c0]
    ref_area = int(np.count_nonzero(ref))
    if ref_area == 0:
        return masks.subset(np.zeros(0, np.int64))
    areas = masks.areas
    keep = []
    for i in range(len(masks)):
        inter = _intersection(ref, (rr0, cc0), masks.crops[i], masks.offsets[i])
        union = ref_area + int(areas[i]) - inter
        if union and inter / union >= min_iou:
            keep.append(i)
    return masks.subset(np.asarray(keep, np.int64))


# ====================================================================== text
def select_text(
    masks: InstanceMasks | int,
    scores: Sequence[float] | np.ndarray,
    *,
    threshold: float | None = None,
    top_k: int | None = None,
) -> np.ndarray:
    """Indices of the masks a text prompt selects: EVERY mask scoring ``>= threshold``, best first,
    cut to the ``top_k`` best when ``top_k`` is given.

    With only ``top_k``, the ``top_k`` best; with neither, ``threshold`` is
    :data:`DEFAULT_TEXT_THRESHOLD`. Never the argmax alone, unless ``top_k=1``.
    Ties keep the lower index first.

    >>> s = np.array([0.30, 0.10, 0.28, 0.25, 0.05])
    >>> select_text(5, s, threshold=0.24).tolist()
    [0, 2, 3]
    >>> select_text(5, s, top_k=2).tolist()
    [0, 2]
    >>> select_text(5, s, threshold=0.24, top_k=2).tolist()
    [0, 2]
    >>> select_text(5, s, threshold=0.5).tolist()
    []
    """
    n = masks if isinstance(masks, int) else len(masks)
    s = np.asarray(scores, np.float64).ravel()
    if s.size != n:
        raise ValueError(f"{s.size} scores for {n} masks")
    _check_text_limits(threshold, top_k)
    if threshold is None and top_k is None:
        threshold = DEFAULT_TEXT_THRESHOLD
    order = np.argsort(-s, kind="stable")
    order = order[np.isfinite(s[order])]
    if threshold is not None:
        order = order[s[order] >= threshold]
    if top_k is not None:
        order = order[:top_k]
    return order.astype(np.int64)


class TextScorer(Protocol):
    """What the pipeline needs from a text scorer (:class:`fastsam_geo.textprompt.ClipScorer` is one)."""

    def score(self, image: np.ndarray, masks: InstanceMasks, text: str | Sequence[str]) -> np.ndarray: ...
