"""Test-time augmentation: a tile segmented in its flips and rotations (and coarser), the views' objects fused.

A YOLOv8-seg model sees a roof differently when the image is mirrored or turned by 90 degrees:
a house found in one view is missed in another, two neighbours are merged in one view and apart
in the next. ``--tta N`` runs the model on N views of each tile (the first N of :data:`VIEWS`:
2 = the tile and its mirror, 4 = the four flips, 8 = the eight flips and quarter turns, the
dihedral group of the square), maps each view's masks back to the tile, and fuses them:

1. every view keeps its detections above ``conf x`` :data:`CANDIDATE_FACTOR` (candidates);
2. greedily by score, a candidate joins the highest-IoU group (IoU > ``match_iou`` with the
   group's first, best-scored mask) that has no mask of its view yet, else starts a group;
3. a group's score is the sum of its scores over the N views (a view that missed it adds 0);
   groups at or under ``conf x`` :data:`KEEP_FACTOR` are dropped, so an object seen in one view
   only goes, and one seen in every view just under ``conf`` stays;
4. a group's mask is the majority vote of its masks (a pixel in at least half of them);
5. an object that holds two or more better-scored objects covering half of it is dropped: two
   touching roofs that most views saw apart and a few saw as one come out as two.

``--tta 12`` adds the four flips read :data:`COARSE_SCALE` times as fine (1.6 times coarser:
0.4 m for the default model's 0.25 m), fused the same way among themselves. Large roofs that
the working resolution misses are often found there, and small buildings are lost there, so
the coarse views only *add* (:func:`add_large`): an object of at least
:data:`LARGE_AREA_PX` that lies mostly outside every fine-view object.

The cost is one forward pass per view. Measured on the validation split (see the README): the
default model's pooled object / pixel F1 0.547 / 0.698 at ``--tta 1``, 0.592 / 0.711 at
``--tta 8`` and 0.593 / 0.744 at ``--tta 12``, the default.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from fastsam_geo.masks import InstanceMasks
from fastsam_geo.tiling import Tile

VIEWS: tuple[str, ...] = ("id", "h", "v", "hv", "t", "th", "tv", "thv")
"""The views of a tile: ``t`` transposes (rows become columns), then ``h`` mirrors left-right
and ``v`` top-bottom. ``t`` then ``h`` is a quarter turn clockwise."""

TTA_CHOICES: tuple[int, ...] = (1, 2, 4, 8, 12)
"""The view counts ``--tta`` takes (1: off; 12: the 8 flips and 4 of them coarser)."""

DEFAULT_TTA = 12
"""Views of each tile that ``extract``, the Python pipeline, Dask runs, the worker and the QGIS
plugin fuse by default (a :class:`~fastsam_geo.segment.FastSAMSegmenter` built by hand: 1)."""

CANDIDATE_FACTOR = 0.6
"""Each view keeps detections above ``conf x CANDIDATE_FACTOR``."""

KEEP_FACTOR = 0.8
"""A fused object is kept when its mean score over the views is above ``conf x KEEP_FACTOR``."""

COARSE_SCALE = 0.625
"""The coarse views of ``--tta 12`` see the tile scaled by this (1.6 times coarser pixels)."""

COARSE_VIEWS: tuple[str, ...] = VIEWS[:4]
"""The views of ``--tta 12`` read at :data:`COARSE_SCALE`: the four flips."""

LARGE_AREA_PX = 1600
"""A coarse-view object is added when it holds at least this many tile pixels (100 m² at
0.25 m)..."""

LARGE_MAX_OVERLAP = 0.5
"""...and at most this share of it lies in objects the fine views found."""


def views(n: int) -> tuple[str, ...]:
    """The views of ``--tta n`` read at the working resolution: the first ``min(n, 8)`` of :data:`VIEWS`.

    >>> views(4)
    ('id', 'h', 'v', 'hv')
    >>> len(views(12))
    8
    """
    if n not in TTA_CHOICES:
        raise ValueError(f"tta={n}: use one of {', '.join(map(str, TTA_CHOICES))} views (1: off)")
    return VIEWS[: min(n, len(VIEWS))]


def coarse_views(n: int) -> tuple[str, ...]:
    """The views of ``--tta n`` read at :data:`COARSE_SCALE` (none below 12).

    >>> coarse_views(8), coarse_views(12)
    ((), ('id', 'h', 'v', 'hv'))
    """
    views(n)  # ValueError for a count --tta does not take
    return COARSE_VIEWS if n > len(VIEWS) else ()


def view_image(a: np.ndarray, view: str) -> np.ndarray:
    """``a`` (``H x W`` or ``H x W x C``) as seen in ``view``.

    >>> a = np.arange(6).reshape(2, 3)
    >>> view_image(a, "th").tolist()     # a quarter turn clockwise
    [[3, 0], [4, 1], [5, 2]]
    """
    if view.startswith("t"):
        a = a.swapaxes(0, 1)
    if "h" in view:
        a = a[:, ::-1]
    if "v" in view:
        a = a[::-1]
    return np.ascontiguousarray(a)


def view_tile(tile: Tile, view: str) -> Tile:
    """``tile`` with its pixels and no-data mask as seen in ``view`` (its place in the raster kept)."""
    nodata = None if tile.nodata is None else view_image(tile.nodata, view)
    return replace(tile, image=view_image(tile.image, view), nodata=nodata)


def unview_masks(m: InstanceMasks, view: str) -> InstanceMasks:
    """Masks found on ``view_image(tile, view)``, back in the tile's own frame.

    >>> tile = np.zeros((4, 6), bool); tile[0, 4:6] = True
    >>> seen = InstanceMasks.from_dense(view_image(tile, "th")[None])
    >>> bool((unview_masks(seen, "th").masks[0] == tile).all())
    True
    """
    h, w = m.shape
    crops = list(m.crops)
    offsets = m.offsets.copy()
    boxes = m.boxes.copy()
    if "v" in view:
        crops = [c[::-1] for c in crops]
        offsets[:, 0] = h - (m.offsets[:, 0] + [c.shape[0] for c in crops])
        boxes[:, [1, 3]] = h - m.boxes[:, [3, 1]]
    if "h" in view:
        crops = [c[:, ::-1] for c in crops]
        offsets[:, 1] = w - (m.offsets[:, 1] + [c.shape[1] for c in crops])
        boxes[:, [0, 2]] = w - m.boxes[:, [2, 0]]
    if view.startswith("t"):
        crops = [c.T for c in crops]
        offsets = offsets[:, ::-1]
        boxes = boxes[:, [1, 0, 3, 2]]
        h, w = w, h
    return InstanceMasks([np.ascontiguousarray(c) for c in crops], offsets, m.scores, boxes, (h, w))


def _groups(masks: InstanceMasks, view_of: np.ndarray, match_iou: float) -> list[list[int]]:
    """Indexes of ``masks`` grouped as :mod:`fastsam_geo.tta` step 2 says, best group first."""
    from fastsam_geo.buildingfilter import overlap_neighbours

    neighbours = overlap_neighbours(masks, masks.areas)
    group_of = np.full(len(masks), -1, np.int64)
    groups: list[list[int]] = []
    seen_views: list[set[int]] = []
    for i in np.argsort(-masks.scores, kind="stable").tolist():
        best, choice = match_iou, -1
        for j, u, _ in neighbours[i]:
            g = int(group_of[j])
            if g >= 0 and groups[g][0] == j and u > best and int(view_of[i]) not in seen_views[g]:
                best, choice = u, g
        if choice < 0:
            choice = len(groups)
            groups.append([])
            seen_views.append(set())
        groups[choice].append(i)
        seen_views[choice].add(int(view_of[i]))
        group_of[i] = choice
    return groups


def _vote(masks: InstanceMasks, crop_boxes: np.ndarray, members: Sequence[int]) -> tuple[np.ndarray, tuple[int, int]]:
    """The pixels in at least half of ``members``' masks (``crop_boxes``: ``masks.crop_boxes``):
    a crop and its ``(row, col)`` offset."""
    cb = crop_boxes[list(members)]
    r0, c0 = int(cb[:, 0].min()), int(cb[:, 1].min())
    acc = np.zeros((int(cb[:, 2].max()) - r0, int(cb[:, 3].max()) - c0), np.int32)
    for i in members:
        (mr, mc), crop = masks.offsets[i], masks.crops[i]
        acc[mr - r0 : mr - r0 + crop.shape[0], mc - c0 : mc - c0 + crop.shape[1]] += crop
    return 2 * acc >= len(members), (r0, c0)


def fuse_views(parts: Sequence[InstanceMasks], threshold: float, match_iou: float = 0.5) -> InstanceMasks:
    """One tile's objects fused from its views' masks (each already in the tile's frame).

    Args:
        parts: one :class:`InstanceMasks` per view, same tile shape.
        threshold: a fused object is kept when its score summed over the views, divided by
            ``len(parts)``, is above this.
        match_iou: masks of two views are one object above this IoU.

    Returns:
        The fused objects, best score first, without the groups the views out-voted
        (:func:`_outvoted_groups`).

    >>> a = np.zeros((2, 8, 8), bool); a[0, 1:5, 1:5] = True; a[1, 6:8, 6:8] = True
    >>> b = np.zeros((1, 8, 8), bool); b[0, 1:5, 1:6] = True
    >>> view0 = InstanceMasks.from_dense(a, scores=[0.6, 0.5])   # a roof and a speck
    >>> view1 = InstanceMasks.from_dense(b, scores=[0.4])        # the roof, a column wider
    >>> out = fuse_views([view0, view1], threshold=0.3)          # the speck: 0.5 / 2 views
    >>> out.scores.round(2).tolist(), out.areas.tolist()         # half of 2 masks: the union
    ([0.5], [20])
    """
    if not parts:
        raise ValueError("no views to fuse")
    shape = parts[0].shape
    masks = InstanceMasks.concatenate(list(parts))
    view_of = np.repeat(np.arange(len(parts)), [len(p) for p in parts])
    crop_boxes = masks.crop_boxes
    crops, offsets, scores, boxes = [], [], [], []
    for members in _groups(masks, view_of, match_iou):
        score = float(masks.scores[members].sum()) / len(parts)
        if score <= threshold:
            continue
        crop, offset = _vote(masks, crop_boxes, members)
        if not crop.any():
            continue
        crops.append(crop)
        offsets.append(offset)
        scores.append(score)
        boxes.append(masks.boxes[members].mean(axis=0))
    if not crops:
        return InstanceMasks.empty(shape)
    order = np.argsort(-np.asarray(scores), kind="stable")
    fused = InstanceMasks(
        [crops[i] for i in order],
        np.asarray(offsets)[order],
        np.asarray(scores)[order],
        np.asarray(boxes)[order],
        shape,
    )
    return fused.subset(~_outvoted_groups(fused))


def _outvoted_groups(fused: InstanceMasks, inside: float = 0.8, cover: float = 0.5) -> np.ndarray:
    """``N`` bool: fused objects (best score first) that the views out-voted as a group.

    Such an object holds two or more better-scored objects (each at least ``inside`` of it lies
    within it) that together make at least ``cover`` of its area: two touching roofs that most
    views saw apart and a few saw as one. The building filter's mask NMS would keep the larger
    mask (a roof and its facets look alike there); the fused scores tell them apart.

    >>> dense = np.zeros((3, 6, 10), bool)
    >>> dense[0, 1:5, 1:5] = True; dense[1, 1:5, 5:9] = True; dense[2, 1:5, 1:9] = True
    >>> _outvoted_groups(InstanceMasks.from_dense(dense, scores=[0.7, 0.6, 0.3])).tolist()
    [False, False, True]
    """
    from fastsam_geo.buildingfilter import overlap_neighbours

    n = len(fused)
    drop = np.zeros(n, bool)
    if n < 3:
        return drop
    areas = fused.areas
    neighbours = overlap_neighbours(fused, areas)
    for k in range(n):
        better = [j for j, _, ios in neighbours[k] if j < k and ios >= inside and areas[j] < areas[k]]
        if len(better) >= 2 and sum(int(areas[j]) for j in better) >= cover * areas[k]:
            drop[k] = True
    return drop


def add_large(
    fine: InstanceMasks,
    coarse: InstanceMasks,
    min_area_px: int = LARGE_AREA_PX,
    max_overlap: float = LARGE_MAX_OVERLAP,
) -> InstanceMasks:
    """``fine`` with the ``coarse`` objects it missed: large ones lying mostly outside it.

    A coarse object is added when it holds at least ``min_area_px`` pixels and at most
    ``max_overlap`` of them lie in the union of the ``fine`` masks. The building filter's mask
    NMS then settles what the added objects still overlap.

    >>> f = np.zeros((1, 60, 60), bool); f[0, 0:10, 0:10] = True             # a small house
    >>> c = np.zeros((3, 60, 60), bool)
    >>> c[0, 20:60, 20:60] = True        # a large roof the fine views missed: added
    >>> c[1, 0:10, 0:12] = True          # the house again: not large, lies in it
    >>> c[2, 0:50, 0:10] = True          # large, but a fifth of it is the house: added
    >>> out = add_large(InstanceMasks.from_dense(f), InstanceMasks.from_dense(c), min_area_px=400)
    >>> out.areas.tolist()
    [100, 1600, 500]
    """
    if fine.shape != coarse.shape:
        raise ValueError(f"fine masks of {fine.shape} and coarse masks of {coarse.shape} px")
    areas = coarse.areas
    if not len(coarse) or not (areas >= min_area_px).any():
        return fine
    held = np.zeros(fine.shape, bool)
    for (r, c), crop in zip(fine.offsets, fine.crops, strict=True):
        held[r : r + crop.shape[0], c : c + crop.shape[1]] |= crop
    add = np.zeros(len(coarse), bool)
    for k, ((r, c), crop) in enumerate(zip(coarse.offsets, coarse.crops, strict=True)):
        if areas[k] >= min_area_px:
            inside = np.count_nonzero(held[r : r + crop.shape[0], c : c + crop.shape[1]] & crop)
            add[k] = inside <= max_overlap * areas[k]
    if not add.any():
        return fine
    return InstanceMasks.concatenate([fine, coarse.subset(add)])


@dataclass
class ViewMasks:
    """One tile's masks from each of its views, mapped back onto the tile: what
    :func:`fuse_at` fuses at a threshold (``calibrate`` keeps them to try several).

    ``fine``: one :class:`InstanceMasks` per view at the working resolution; ``coarse``: one per
    view read at :data:`COARSE_SCALE` (empty below ``--tta 12``).
    """

    fine: list[InstanceMasks]
    coarse: list[InstanceMasks] = field(default_factory=list)


def fuse_at(views: ViewMasks, conf: float) -> InstanceMasks:
    """A tile's objects at threshold ``conf``, as the model with ``conf`` returns them.

    Each view's candidates scoring at least ``conf x`` :data:`CANDIDATE_FACTOR` are fused
    (:func:`fuse_views`, kept above ``conf x`` :data:`KEEP_FACTOR`), and the coarse views'
    large objects added (:func:`add_large`). Views found at a lower threshold give, at ``conf``,
    the objects the model gives at ``conf``: the NMS drops low scores before it orders by score.

    >>> a = np.zeros((2, 8, 8), bool); a[0, 1:5, 1:5] = True; a[1, 6:8, 6:8] = True
    >>> seen = ViewMasks([InstanceMasks.from_dense(a, scores=[0.6, 0.3])] * 2)
    >>> fuse_at(seen, 0.25).areas.tolist(), fuse_at(seen, 0.5).areas.tolist(), len(fuse_at(seen, 0.9))
    ([16, 4], [16], 0)
    """

    def candidates(parts: Sequence[InstanceMasks]) -> list[InstanceMasks]:
        return [m.subset(m.scores >= conf * CANDIDATE_FACTOR) for m in parts]

    fused = fuse_views(candidates(views.fine), conf * KEEP_FACTOR)
    if not views.coarse:
        return fused
    return add_large(fused, fuse_views(candidates(views.coarse), conf * KEEP_FACTOR))
