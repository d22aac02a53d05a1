"""Prompts (points, boxes, text) and the tile-level selection of FastSAM's masks.

FastSAM's prompts are pure post-selection over its "everything" masks of a tile: this
module holds that selection, as pure functions on :class:`~fastsam_geo.masks.InstanceMasks`
in *tile pixel coordinates*, plus the prompt types in *map coordinates* and a reader for
prompt files. Nothing here imports torch or open_clip: text prompts are scored by any object
with a ``score(image, masks, text) -> np.ndarray`` method (:class:`fastsam_geo.textprompt.ClipScorer`
is one), and :func:`select_text` turns those scores into a selection.

Selection rules (each function documents its own):

- points: one object per foreground point, the union of the *nested* candidate masks under
  it (:func:`select_points`);
- boxes: per box, the mask with the best IoU with the box (:func:`select_boxes`);
- text: every mask whose score passes the threshold, or the top k (:func:`select_text`) --
  never only the argmax;
- everything: :func:`building_filter` then :func:`nms_masks`.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np
import shapely
from affine import Affine

from fastsam_geo.errors import PromptError
from fastsam_geo.masks import InstanceMasks

__all__ = [
    "DEFAULT_TEXT_THRESHOLD",
    "BoxPrompt",
    "PointPrompt",
    "Prompts",
    "TextScorer",
    "boxes_to_pixels",
    "building_filter",
    "nms_keep",
    "nms_masks",
    "points_to_pixels",
    "read_prompt_file",
    "select_boxes",
    "select_masks",
    "select_points",
    "select_prompts",
    "select_text",
    "shape_stats",
]

#: Default cosine-similarity threshold of a text prompt (CLIP ViT-B-32 scale: matching
#: image/text pairs score about 0.25-0.35, unrelated ones 0.10-0.20).
DEFAULT_TEXT_THRESHOLD = 0.22

PromptMode = Literal["everything", "points", "boxes", "text"]


# ====================================================================== prompt types
def _check_coords(kind: str, values: tuple[object, ...], names: str) -> None:
    """Refuse coordinates that are not finite numbers: the one check the CLI, the Python API and
    the worker all pass through (a NaN click would otherwise select nothing, silently).

    >>> _check_coords("Point", (1.0, 2.0), "x, y")
    >>> _check_coords("Point", (float("nan"), 2.0), "x, y")
    Traceback (most recent call last):
    ...
    fastsam_geo.errors.PromptError: Point (nan, 2.0): coordinates (x, y) must be finite numbers...
    """
    try:
        finite = all(not isinstance(v, bool) and math.isfinite(float(v)) for v in values)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        finite = False
    if not finite:
        shown = ", ".join(repr(v) if not isinstance(v, float) else str(v) for v in values)
        raise PromptError(
            f"{kind} ({shown}): coordinates ({names}) must be finite numbers in the prompts' CRS, "
            "not NaN or infinity; fix the prompt."
        )


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


@dataclass(frozen=True)
class PointPrompt:
    """A click in map coordinates; ``label`` 1 = foreground (select), 0 = background (exclude).

    >>> PointPrompt(500010.0, 4999990.0)
    PointPrompt(x=500010.0, y=4999990.0, label=1)
    """

    x: float
    y: float
    label: int = 1

    def __post_init__(self) -> None:
        _check_coords("Point", (self.x, self.y), "x, y")
        if self.label not in (0, 1):
            raise PromptError(f"Point label must be 0 (background) or 1 (foreground), got {self.label!r}.")


@dataclass(frozen=True)
class BoxPrompt:
    """A box in map coordinates.

    >>> BoxPrompt(0, 0, 10, 5).width
    10
    """

    xmin: float
    ymin: float
    xmax: float
    ymax: float

    def __post_init__(self) -> None:
        _check_coords("Box", (self.xmin, self.ymin, self.xmax, self.ymax), "xmin, ymin, xmax, ymax")
        if not (self.xmax > self.xmin and self.ymax > self.ymin):
            raise PromptError(
                f"Box ({self.xmin}, {self.ymin}, {self.xmax}, {self.ymax}) is empty: "
                "xmax must exceed xmin and ymax must exceed ymin."
            )

    @property
    def width(self) -> float:
        return self.xmax - self.xmin

    @property
    def height(self) -> float:
        return self.ymax - self.ymin


@dataclass
class Prompts:
    """Everything a user can ask for on a raster, in the CRS ``crs`` (map coordinates).

    ``mode`` is the kind of selection: ``"text"`` when a text is given (points and boxes
    are then ignored by :func:`select_prompts`), else ``"boxes"`` / ``"points"`` (both are
    applied when both are given: ``mode`` then says ``"boxes"``), else ``"everything"``.

    >>> Prompts().mode, Prompts().is_empty
    ('everything', True)
    >>> p = Prompts(points=[PointPrompt(1, 2), PointPrompt(3, 4, 0)], crs="EPSG:32633")
    >>> p.mode, len(p.points), p.is_empty
    ('points', 2, False)
    >>> Prompts(text="a building", boxes=[BoxPrompt(0, 0, 1, 1)]).mode
    'text'
    """

    points: Sequence[PointPrompt] = ()
    boxes: Sequence[BoxPrompt] = ()
    text: str | Sequence[str] | None = None
    crs: Any = None
    text_threshold: float | None = DEFAULT_TEXT_THRESHOLD
    text_top_k: int | None = None

    def __post_init__(self) -> None:
        self.points = tuple(self.points)
        self.boxes = tuple(self.boxes)
        if isinstance(self.text, str):
            self.text = self.text.strip() or None
        elif self.text is not None:
            texts = tuple(t.strip() for t in self.text if t and t.strip())
            self.text = texts or None
        _check_text_limits(self.text_threshold, self.text_top_k)

    @property
    def is_empty(self) -> bool:
        """True when there is nothing to select with ("everything" mode)."""
        return not self.points and not self.boxes and not self.text

    @property
    def mode(self) -> PromptMode:
        if self.text:
            return "text"
        if self.boxes:
            return "boxes"
        if self.points:
            return "points"
        return "everything"

    def to_crs(self, dst_crs: Any) -> Prompts:
        """The same prompts in ``dst_crs`` (anything :meth:`pyproj.CRS.from_user_input` takes,
        rasterio CRS included). Boxes become the bounding box of their densified edges.

        >>> p = Prompts(points=[PointPrompt(15.0, 0.0)], boxes=[BoxPrompt(14.9, 0.0, 15.1, 0.1)],
        ...             crs="EPSG:4326")
        >>> q = p.to_crs("EPSG:32633")
        >>> round(q.points[0].x, 3), round(q.points[0].y, 3)
        (500000.0, 0.0)
        >>> b = q.boxes[0]; round(b.xmin + b.xmax, 3), b.ymin == 0.0
        (1000000.0, True)
        """
        from pyproj import CRS, Transformer
        from pyproj.exceptions import CRSError

        if self.is_empty or (not self.points and not self.boxes):
            return replace(self, crs=dst_crs)
        if self.crs is None:
            raise PromptError(
                "Prompts have no CRS: give the CRS of the prompt coordinates (e.g. --prompt-crs)."
            )
        try:
            src, dst = CRS.from_user_input(_crs_input(self.crs)), CRS.from_user_input(_crs_input(dst_crs))
        except CRSError as exc:
            raise PromptError(f"Cannot transform prompts to {dst_crs}: {exc}") from exc
        if src == dst:
            return replace(self, crs=dst_crs)
        tr = Transformer.from_crs(src, dst, always_xy=True)
        points: list[PointPrompt] = []
        if self.points:
            xs = np.asarray([p.x for p in self.points], np.float64)
            ys = np.asarray([p.y for p in self.points], np.float64)
            tx, ty = tr.transform(xs, ys)
            tx, ty = np.atleast_1d(tx), np.atleast_1d(ty)
            if not (np.isfinite(tx).all() and np.isfinite(ty).all()):
                raise PromptError(f"Some point prompts cannot be transformed from {src.name} to {dst.name}.")
            points = [
                PointPrompt(float(x), float(y), p.label) for x, y, p in zip(tx, ty, self.points, strict=True)
            ]
        boxes: list[BoxPrompt] = []
        for b in self.boxes:
            bounds = tr.transform_bounds(b.xmin, b.ymin, b.xmax, b.ymax, densify_pts=21)
            if not np.isfinite(bounds).all():
                raise PromptError(f"Box prompt {b} cannot be transformed from {src.name} to {dst.name}.")
            boxes.append(BoxPrompt(*bounds))
        return replace(self, points=tuple(points), boxes=tuple(boxes), crs=dst_crs)


def _crs_input(crs: Any) -> Any:
    """pyproj input for a CRS given as a string, EPSG int, pyproj CRS or rasterio CRS."""
    if hasattr(crs, "to_wkt") and not hasattr(crs, "to_json_dict"):  # rasterio CRS
        return crs.to_wkt()
    return crs


# ====================================================================== prompt files
def read_prompt_file(
    path: str | os.PathLike[str], label_field: str = "label", layer: str | None = None
) -> Prompts:
    """Read point and box prompts from a GeoPackage, GeoJSON or Shapefile.

    Point features become :class:`PointPrompt` with their ``label_field`` value (1 when the
    field is absent; values must be 0 or 1); polygon features become a :class:`BoxPrompt` of
    their bounds (one per part of a multipolygon). A file of several layers needs ``layer``
    (it is never read as its first layer without a word). The file's CRS is kept on the prompts: call
    :meth:`Prompts.to_crs` with the raster's CRS.
    """
    import shapely

    from fastsam_geo.vectorio import VectorFormatError, choose_layer, read_features

    p = Path(path)
    if not p.exists():
        raise PromptError(f"Prompt file not found: {p}")
    try:
        layer = choose_layer(p, layer, "--prompts-layer (prompts_layer=)")
    except VectorFormatError as exc:
        raise PromptError(str(exc)) from None
    except Exception as exc:  # pyogrio's DataSourceError: not a vector file
        raise PromptError(f"Cannot read prompt file {p}: {str(exc).splitlines()[0]}") from exc
    try:
        feats = read_features(p, layer=layer)
    except Exception as exc:  # VectorFormatError, or pyogrio's DataSourceError / DataLayerError
        raise PromptError(f"Cannot read prompt file {p}: {str(exc).splitlines()[0]}") from exc
    if feats.crs is None:
        raise PromptError(f"Prompt file {p} has no CRS: assign one (e.g. in QGIS) and save it again.")
    keep = ~(shapely.is_missing(feats.geometry) | shapely.is_empty(feats.geometry))
    feats = feats.take(np.flatnonzero(keep))
    if len(feats) == 0:
        raise PromptError(f"Prompt file {p} has no features with a geometry.")
    parts, row = shapely.get_parts(feats.geometry, return_index=True)
    types = set(shapely.get_type_id(parts).tolist())
    names = {0: "Point", 1: "LineString", 2: "LinearRing", 3: "Polygon", 7: "GeometryCollection"}
    bad = types - {0, 3}
    if bad:
        raise PromptError(
            f"Prompt file {p} has unsupported geometry types {sorted(names.get(t, str(t)) for t in bad)}: "
            "use points (clicks) or polygons (boxes)."
        )
    points: list[PointPrompt] = []
    boxes: list[BoxPrompt] = []
    labels = feats.columns.get(label_field)
    for i, (geom, r) in enumerate(zip(parts, row.tolist(), strict=True)):
        if geom.geom_type == "Point":
            label = 1
            if labels is not None:
                label = _parse_label(labels[r], p, label_field, i)
            points.append(PointPrompt(float(geom.x), float(geom.y), label))
        else:
            xmin, ymin, xmax, ymax = geom.bounds
            try:
                boxes.append(BoxPrompt(xmin, ymin, xmax, ymax))
            except PromptError as exc:
                raise PromptError(f"Prompt file {p}, feature {i}: {exc}") from exc
    return Prompts(points=points, boxes=boxes, crs=feats.crs)


def _parse_label(value: Any, path: Path, field_name: str, i: int) -> int:
    try:
        label = float(value)
    except (TypeError, ValueError):
        label = float("nan")
    if label not in (0.0, 1.0):
        raise PromptError(
            f"Prompt file {path}, feature {i}: field '{field_name}' is {value!r}; it must be 1 (foreground) "
            "or 0 (background)."
        )
    return int(label)


# ====================================================================== map -> tile pixels
def points_to_pixels(
    points: Sequence[PointPrompt], transform: Affine
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(cols, rows, labels)`` int arrays of points in the pixel grid of ``transform``.

    >>> t = Affine(0.5, 0, 1000, 0, -0.5, 2000)
    >>> [a.tolist() for a in points_to_pixels([PointPrompt(1001.2, 1999.9, 0)], t)]
    [[2], [0], [0]]
    """
    if not points:
        z = np.zeros(0, np.int64)
        return z, z.copy(), z.copy()
    xy = np.asarray([(p.x, p.y) for p in points], np.float64)
    inv = ~transform
    cols = inv.a * xy[:, 0] + inv.b * xy[:, 1] + inv.c
    rows = inv.d * xy[:, 0] + inv.e * xy[:, 1] + inv.f
    labels = np.asarray([p.label for p in points], np.int64)
    return np.floor(cols).astype(np.int64), np.floor(rows).astype(np.int64), labels


def boxes_to_pixels(boxes: Sequence[BoxPrompt], transform: Affine) -> np.ndarray:
    """``K x 4`` float ``(col0, row0, col1, row1)`` of boxes in the pixel grid of ``transform``.

    >>> t = Affine(0.5, 0, 1000, 0, -0.5, 2000)
    >>> boxes_to_pixels([BoxPrompt(1001, 1995, 1003, 1999)], t).tolist()
    [[2.0, 2.0, 6.0, 10.0]]
    """
    out = np.zeros((len(boxes), 4), np.float64)
    inv = ~transform
    for k, b in enumerate(boxes):
        corners = [(b.xmin, b.ymin), (b.xmin, b.ymax), (b.xmax, b.ymin), (b.xmax, b.ymax)]
        cr = np.asarray([inv * c for c in corners])
        out[k] = (cr[:, 0].min(), cr[:, 1].min(), cr[:, 0].max(), cr[:, 1].max())
    return out


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
       of it (buildings with ground between them: a block), the rule of :func:`nms_keep`: it
       is dropped when ``p`` has a candidate that is not a group. A roof and its facets is no
       group (the facets tile it), so a click on a facet gives the roof.
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
    cols = np.asarray(cols, np.int64).ravel()
    rows = np.asarray(rows, np.int64).ravel()
    labels = np.ones(cols.size, np.int64) if labels is None else np.asarray(labels, np.int64).ravel()
    if not (cols.size == rows.size == labels.size):
        raise PromptError(f"cols, rows and labels differ in length: {cols.size}, {rows.size}, {labels.size}")
    if labels.size and not np.isin(labels, (0, 1)).all():
        raise PromptError(f"Point labels must be 0 or 1, got {sorted(set(labels.tolist()))}.")
    h, w = masks.shape
    inside = (rows >= 0) & (rows < h) & (cols >= 0) & (cols < w)
    cols, rows, labels = cols[inside], rows[inside], labels[inside]
    if len(masks) == 0 or not (labels == 1).any():
        return InstanceMasks.empty(masks.shape)

    hit = masks.contains(rows, cols)  # N x P
    fg, bg = labels == 1, labels == 0
    allowed = ~hit[:, bg].any(axis=1)  # masks free of background points
    fg_hits = hit[:, fg]  # N x F
    fg_rows, fg_cols = rows[fg], cols[fg]
    n_fg_in = fg_hits.sum(axis=1)
    areas = masks.areas

    crops: list[np.ndarray] = []
    offsets: list[tuple[int, int]] = []
    scores: list[float] = []
    seen: set[tuple[int, ...]] = set()
    for k in range(fg_hits.shape[1]):
        cand = np.flatnonzero(fg_hits[:, k] & allowed)
        if cand.size == 0:
            continue
        own = cand[n_fg_in[cand] == 1]
        if own.size:  # rule 2: groups of clicked objects give way to the point's own masks
            cand = own
        if group_cover is not None and cand.size > 1:  # rule 3: groups of objects too
            single = np.asarray([not _is_group(masks, int(j), areas, group_cover=group_cover) for j in cand])
            if single.any():
                cand = cand[single]
        cand = cand[np.lexsort((-masks.scores[cand], areas[cand]))]  # smallest first
        merged = [int(cand[0])]
        obj_crop, obj_off = masks.crops[cand[0]], tuple(int(v) for v in masks.offsets[cand[0]])
        for j in cand[1:]:
            inter = _intersection(obj_crop, obj_off, masks.crops[j], masks.offsets[j])
            obj_area = int(np.count_nonzero(obj_crop))
            if inter >= nested * obj_area or inter >= nested * areas[j]:
                merged.append(int(j))
                obj_crop, obj_off = _union([obj_crop, masks.crops[j]], [obj_off, masks.offsets[j]])
        obj_crop = component_at(obj_crop, int(fg_rows[k]) - obj_off[0], int(fg_cols[k]) - obj_off[1])
        key = tuple(sorted(merged))
        if key in seen:
            continue
        seen.add(key)
        crops.append(obj_crop)
        offsets.append(obj_off)
        scores.append(float(masks.scores[merged].max()))
    if not crops:
        return InstanceMasks.empty(masks.shape)
    return _from_crops(crops, offsets, scores, masks.shape)


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
        pts = _row_ends(crop)
        if len(pts) == 0:
            continue
        rw, rh, ang = min_area_rect(pts)
        # The points are pixel centres: the pixels' outline is half a pixel further out.
        rw, rh = rw + 1.0, rh + 1.0
        rect[i] = min(areas[i] / (rw * rh), 1.0)
        elong[i] = max(rw, rh) / min(rw, rh)
        angle[i] = ang
    return {"area": masks.areas, "rectangularity": rect, "elongation": elong, "angle": angle}


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

    Rotating calipers: the best rectangle has a side on an edge of the convex hull. Collinear
    points give a height of 0, one point gives 0 x 0.

    >>> w, h, a = min_area_rect(np.array([[0, 0], [4, 4], [3, 5], [-1, 1]], float))
    >>> round(w * h, 6), round(a, 6)
    (8.0, 45.0)
    >>> min_area_rect(np.array([[0, 0], [0, 3]], float))
    (3.0, 0.0, 0.0)
    """
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
    import shapely

    n = len(masks)
    keep = np.ones(n, bool)
    if n < 2:
        return keep
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
    areas = masks.areas
    inter = np.asarray(
        [
            _intersection(masks.crops[a], masks.offsets[a], masks.crops[b], masks.offsets[b])
            for a, b in zip(a_idx, b_idx, strict=True)
        ],
        np.int64,
    )
    pair_iou = inter / np.maximum(areas[a_idx] + areas[b_idx] - inter, 1)
    pair_ios = inter / np.maximum(np.minimum(areas[a_idx], areas[b_idx]), 1)
    neighbours: list[list[tuple[int, float, float]]] = [[] for _ in range(n)]
    for a, b, u, s in zip(a_idx.tolist(), b_idx.tolist(), pair_iou.tolist(), pair_ios.tolist(), strict=True):
        neighbours[a].append((b, u, s))
        neighbours[b].append((a, u, s))

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
    overlap = {(a, b): s for a, b, s in zip(a_idx.tolist(), b_idx.tolist(), pair_ios.tolist(), strict=True)}
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
            if all(overlap.get((min(j, k), max(j, k)), 0.0) < 0.2 for k in disjoint):
                disjoint.append(j)
        if len(disjoint) >= 2 and areas[disjoint].sum() < group_cover * areas[i]:
            keep[i] = False
    return keep


# ====================================================================== one call for a tile
def select_prompts(
    masks: InstanceMasks,
    prompts: Prompts,
    transform: Affine,
    *,
    image: np.ndarray | None = None,
    scorer: TextScorer | None = None,
) -> InstanceMasks:
    """Apply ``prompts`` (already in the tile's CRS: see :meth:`Prompts.to_crs`) to one tile.

    ``transform`` is the tile's affine transform. Text needs ``image`` (the tile's pixels) and
    a ``scorer``; points and boxes given together are both applied (points first). In
    "everything" mode the masks come back as they are.

    >>> dense = np.zeros((1, 4, 4), bool); dense[0, 1:3, 1:3] = True
    >>> im = InstanceMasks.from_dense(dense)
    >>> t = Affine(1, 0, 100, 0, -1, 200)
    >>> len(select_prompts(im, Prompts(points=[PointPrompt(101.5, 198.5)]), t))
    1
    """
    mode = prompts.mode
    if mode == "everything":
        return masks
    if mode == "text":
        if scorer is None or image is None:
            raise PromptError("A text prompt needs the tile image and a text scorer (CLIP weights).")
        scores = np.asarray(scorer.score(image, masks, prompts.text), np.float64)  # type: ignore[arg-type]
        idx = select_text(masks, scores, threshold=prompts.text_threshold, top_k=prompts.text_top_k)
        return masks.subset(idx)
    parts = []
    if prompts.points:
        cols, rows, labels = points_to_pixels(prompts.points, transform)
        parts.append(select_points(masks, cols, rows, labels))
    if prompts.boxes:
        parts.append(select_boxes(masks, boxes_to_pixels(prompts.boxes, transform)))
    return InstanceMasks.concatenate(parts) if len(parts) > 1 else parts[0]
