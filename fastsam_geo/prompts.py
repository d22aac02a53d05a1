"""Prompts (points, boxes, text) in map coordinates: their values, prompt files, and one call that
applies them to a tile.

FastSAM's prompts are pure post-selection over its "everything" masks of a tile. This module
holds the prompt types in *map coordinates* (:class:`PointPrompt`, :class:`BoxPrompt`,
:class:`Prompts`), a reader for prompt files, their conversion to a tile's pixels and
:func:`select_prompts`, which applies a :class:`Prompts` to one tile. The selection itself, in
*tile pixel coordinates*, is in :mod:`fastsam_geo.selection` (points, boxes, reference masks,
text) and the "everything" mode's building filter and mask NMS in
:mod:`fastsam_geo.buildingfilter`; their names are re-exported here, so
``from fastsam_geo.prompts import select_points`` keeps working. Nothing here imports torch or
open_clip.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
from affine import Affine

from fastsam_geo.buildingfilter import (  # noqa: F401  (moved there in issue 22, re-exported)
    _row_ends,
    building_filter,
    min_area_rect,
    nms_keep,
    nms_masks,
    shape_stats,
)
from fastsam_geo.errors import PromptError
from fastsam_geo.masks import InstanceMasks
from fastsam_geo.selection import (  # noqa: F401  (moved there in issue 22, re-exported)
    DEFAULT_TEXT_THRESHOLD,
    TextScorer,
    _check_text_limits,
    _crop_box,
    _from_crops,
    _intersection,
    _is_group,
    _union,
    component_at,
    select_boxes,
    select_masks,
    select_points,
    select_text,
)

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
            raise PromptError(f"Point label must be 0 (background) or 1 (foreground), got {_shown(self.label)}.")


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
                raise PromptError(
                    f"Some point prompts cannot be transformed from {src.name} to {dst.name}: their coordinates "
                    f"are not in {src.name}; give the CRS they are in (--prompt-crs, or the prompts file's)."
                )
            points = [
                PointPrompt(float(x), float(y), p.label) for x, y, p in zip(tx, ty, self.points, strict=True)
            ]
        boxes: list[BoxPrompt] = []
        for b in self.boxes:
            bounds = tr.transform_bounds(b.xmin, b.ymin, b.xmax, b.ymax, densify_pts=21)
            if not np.isfinite(bounds).all():
                raise PromptError(
                    f"Box prompt {b} cannot be transformed from {src.name} to {dst.name}: check the CRS of the "
                    "prompts (--prompt-crs, or the prompts file's)."
                )
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
    _check_degrees(p, feats.geometry, feats.crs)
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


def _check_degrees(path: Path, geoms: np.ndarray, crs: Any) -> None:
    """Refuse a file in a geographic CRS whose coordinates are no longitudes and latitudes: its
    CRS is wrong (a GeoJSON without a ``crs`` member is read as WGS 84 whatever its numbers).

    >>> import shapely
    >>> from pyproj import CRS
    >>> _check_degrees(Path("c.geojson"), np.array([shapely.Point(15, 45)]), CRS("EPSG:4326"))
    >>> _check_degrees(Path("c.geojson"), np.array([shapely.Point(500120, 4649880)]), CRS("EPSG:4326"))
    Traceback (most recent call last):
    ...
    fastsam_geo.errors.PromptError: Prompt file c.geojson: coordinates such as (500120, 4649880) are not \
longitudes and latitudes, but the file's CRS is WGS 84 (a GeoJSON without a "crs" member is read as WGS 84); \
set the CRS they are in, e.g. `ogr2ogr -a_srs EPSG:32633 fixed.gpkg c.geojson` for UTM zone 33N, and give \
that file.
    """
    import shapely

    if not getattr(crs, "is_geographic", False):
        return
    xy = shapely.get_coordinates(geoms)
    off = (xy[:, 0] < -180) | (xy[:, 0] > 360) | (np.abs(xy[:, 1]) > 90)  # 0-360 longitudes are fine
    if not off.any():
        return
    x, y = xy[np.flatnonzero(off)[0]]
    is_json = path.suffix.lower() in (".geojson", ".json", ".geojsonl", ".geojsons")
    geojson = ' (a GeoJSON without a "crs" member is read as WGS 84)' if is_json else ""
    raise PromptError(
        f"Prompt file {path}: coordinates such as ({x:.10g}, {y:.10g}) are not longitudes and latitudes, "
        f"but the file's CRS is {crs.name}{geojson}; set the CRS they are in, "
        f"e.g. `ogr2ogr -a_srs EPSG:32633 fixed.gpkg {path}` for UTM zone 33N, and give that file."
    )


def _parse_label(value: Any, path: Path, field_name: str, i: int) -> int:
    try:
        label = float(value)
    except (TypeError, ValueError):
        label = float("nan")
    if label not in (0.0, 1.0):
        raise PromptError(
            f"Prompt file {path}, feature {i}: field '{field_name}' is {_shown(value)}; it must be 1 (foreground) "
            "or 0 (background)."
        )
    return int(label)


def _shown(value: Any) -> str:
    """A value as a user wrote it: numpy scalars as plain numbers, a missing value as empty.

    >>> _shown(np.int64(7)), _shown(np.float64("nan")), _shown(None), _shown(2.5), _shown("yes")
    ('7', 'empty (null)', 'empty (null)', '2.5', "'yes'")
    """
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, str):
        return repr(value)
    if value is None or (isinstance(value, float) and math.isnan(value)) or str(value) in ("<NA>", "NaT"):
        return "empty (null)"
    return str(value)


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
