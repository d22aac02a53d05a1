"""Score predicted building footprints against ground truth (SpaceNet-style).

- :func:`match_buildings`: one-to-one matching of predictions to truth by IoU, candidate
  pairs from one bulk :class:`shapely.STRtree` query, greedy by descending IoU.
- :func:`evaluate`: precision, recall, F1 and mean IoU of two footprint layers, plus the
  *seam score*: the share of truth buildings crossing a tile seam that come out as
  exactly one polygon (the number that shows whether seam stitching works).
- :func:`seam_lines`: the internal core boundaries of a :class:`~fastsam_geo.tiling.TileGrid`
  in map coordinates, the seams to give :func:`evaluate`.
- :func:`evaluate_on_raster`: the same scores counted only inside a raster's valid-data
  footprint (:func:`~fastsam_geo.validarea.raster_footprint`: a chip scored against its city's footprint file, a
  sparse mosaic with masked holes), plus pixel F1 (:func:`pixel_scores`) on the raster's grid.

Pure numpy / shapely / pyproj: no model is needed to score a result. Footprints are a vector
file path, a :class:`~fastsam_geo.vectorio.Features`, or (where geopandas is installed) a
GeoDataFrame / GeoSeries, checked first (:mod:`fastsam_geo.evalchecks`: coordinates that fit
the CRS, predictions, truth and raster in one place).

    >>> from shapely.geometry import box
    >>> truth = Features.of([box(0, 0, 10, 10), box(20, 0, 30, 10)], "EPSG:32633")
    >>> pred = Features.of([box(0, 0, 10, 9), box(50, 50, 60, 60)], "EPSG:32633")
    >>> s = evaluate(pred, truth)
    >>> s.tp, s.fp, s.fn, s.f1
    (1, 1, 1, 0.5)
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Union

import numpy as np
import shapely
from pyproj import CRS, Transformer
from shapely.geometry import LineString
from shapely.geometry.base import BaseGeometry

from fastsam_geo.errors import EvaluationError
from fastsam_geo.evalchecks import (
    check_finite,
    check_lonlat,
    check_on_raster,
    check_same_place,
    polygons_only,
    source_name,
)
from fastsam_geo.tiling import TileGrid
from fastsam_geo.validarea import coarse_grid, inside, raster_footprint
from fastsam_geo.validate import check_fraction
from fastsam_geo.vectorio import VECTOR_EXTRA, Features, read_features

if TYPE_CHECKING:
    import geopandas as gpd

#: Share of a truth building's area that a second prediction may cover before the
#: building counts as split (seam score); at most this much covered, it is missed, and a
#: prediction with at most this much on truth buildings is unmapped (:func:`missed_unmapped`).
SPLIT_COVER = 0.10
#: Share of a truth building's area inside one prediction for that prediction to hold it
#: (merged neighbours), and of a prediction's area inside one truth building for it to be a
#: part of that building (split buildings).
HOLD_SHARE = 0.5

Footprints = Union[Features, "gpd.GeoDataFrame", "gpd.GeoSeries", str, os.PathLike]


# --------------------------------------------------------------------------- matching
def _as_geometry_array(geoms: Sequence[BaseGeometry | None] | np.ndarray | gpd.GeoSeries) -> np.ndarray:
    """A 1-D object array of geometries; invalid polygons repaired so that overlays cannot fail."""
    if isinstance(geoms, Features):
        arr = np.asarray(geoms.geometry, dtype=object)
    elif hasattr(geoms, "geometry") and hasattr(geoms, "crs"):  # a GeoSeries / GeoDataFrame
        arr = np.asarray(geoms.geometry.values, dtype=object)
    else:
        arr = np.empty(len(geoms), dtype=object)
        arr[:] = list(geoms)
    arr = arr.reshape(-1)
    bad = ~shapely.is_valid(arr) & ~shapely.is_missing(arr)
    if bad.any():
        arr = arr.copy()
        arr[bad] = shapely.make_valid(arr[bad])
    return arr


def _pairs(pred: np.ndarray, truth: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """All intersecting (pred, truth) pairs: indices, intersection areas and IoUs (vectorised)."""
    if len(pred) == 0 or len(truth) == 0:
        empty_i = np.zeros(0, np.int64)
        return empty_i, empty_i, np.zeros(0), np.zeros(0)
    pi, ti = shapely.STRtree(truth).query(pred, predicate="intersects")
    inter = shapely.area(shapely.intersection(pred[pi], truth[ti]))
    union = shapely.area(pred[pi]) + shapely.area(truth[ti]) - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = np.where(union > 0, inter / union, 0.0)
    return pi.astype(np.int64), ti.astype(np.int64), inter, iou


def _greedy(
    pi: np.ndarray, ti: np.ndarray, iou: np.ndarray, iou_threshold: float
) -> list[tuple[int, int, float]]:
    keep = iou >= iou_threshold
    pi, ti, iou = pi[keep], ti[keep], iou[keep]
    # Descending IoU; ties broken by prediction then truth index, so results are deterministic.
    order = np.lexsort((ti, pi, -iou))
    used_p: set[int] = set()
    used_t: set[int] = set()
    out: list[tuple[int, int, float]] = []
    for k in order:
        p, t = int(pi[k]), int(ti[k])
        if p in used_p or t in used_t:
            continue
        used_p.add(p)
        used_t.add(t)
        out.append((p, t, float(iou[k])))
    return out


def match_buildings(
    pred_geoms: Sequence[BaseGeometry | None] | np.ndarray | gpd.GeoSeries,
    truth_geoms: Sequence[BaseGeometry | None] | np.ndarray | gpd.GeoSeries,
    iou_threshold: float = 0.5,
) -> list[tuple[int, int, float]]:
    """One-to-one matches ``(pred_index, truth_index, iou)`` with ``iou >= iou_threshold``.

    Candidate pairs come from one bulk ``STRtree(truth).query(pred, predicate="intersects")``;
    they are taken greedily by descending IoU, each prediction and each truth at most once
    (the SpaceNet rule). Both inputs must be in the same CRS. The list is sorted by
    descending IoU.

    >>> from shapely.geometry import box
    >>> truth = [box(0, 0, 10, 10), box(20, 0, 30, 10)]
    >>> pred = [box(0, 0, 10, 8), box(0, 0, 10, 10), box(21, 0, 31, 10), box(40, 0, 50, 10)]
    >>> [(p, t, round(iou, 3)) for p, t, iou in match_buildings(pred, truth)]
    [(1, 0, 1.0), (2, 1, 0.818)]
    >>> match_buildings([], truth)
    []
    """
    pred = _as_geometry_array(pred_geoms)
    truth = _as_geometry_array(truth_geoms)
    pi, ti, _, iou = _pairs(pred, truth)
    return _greedy(pi, ti, iou, iou_threshold)


# --------------------------------------------------------------------------- seams
def seam_lines(grid: TileGrid) -> list[LineString]:
    """The internal core boundaries of ``grid`` as lines in map coordinates.

    One vertical line per internal column boundary and one horizontal line per internal row
    boundary, each spanning the whole raster; the raster border is not a seam.

    >>> grid = TileGrid(1000, 600, tile_size=256, overlap=32)
    >>> [line.wkt for line in seam_lines(grid)][:1], len(seam_lines(grid))
    (['LINESTRING (240 0, 240 600)'], 6)
    >>> seam_lines(TileGrid(100, 100, tile_size=256, overlap=32))
    []
    """
    t = grid.transform
    lines: list[LineString] = []
    for col in grid.col_cores[1:, 0]:
        lines.append(LineString([t * (float(col), 0.0), t * (float(col), float(grid.height))]))
    for row in grid.row_cores[1:, 0]:
        lines.append(LineString([t * (0.0, float(row)), t * (float(grid.width), float(row))]))
    return lines


def _seam_counts(
    pred: np.ndarray,
    truth: np.ndarray,
    seams: Sequence[BaseGeometry],
    pi: np.ndarray,
    ti: np.ndarray,
    inter: np.ndarray,
    iou: np.ndarray,
    iou_threshold: float,
) -> tuple[int, int, int, int]:
    """``(crossing, single, away, away_single)``: truth buildings crossing a seam and those found
    as exactly one polygon; the same two counts for the buildings away from every seam."""
    seam_arr = _as_geometry_array(list(seams))
    if len(truth) == 0:
        return 0, 0, 0, 0
    # query(truth) returns (truth index, seam index) pairs.
    crossing = np.zeros(0, np.int64)
    if len(seam_arr):
        crossing = np.unique(shapely.STRtree(seam_arr).query(truth, predicate="intersects")[0])
    t_area = shapely.area(truth)
    with np.errstate(divide="ignore", invalid="ignore"):
        cover = np.where(t_area[ti] > 0, inter / t_area[ti], 0.0)
    n = len(truth)
    hits = np.bincount(ti[iou >= iou_threshold], minlength=n)
    # A prediction "covers" a truth when it overlaps more than SPLIT_COVER of its area; the one
    # matching prediction covers it too (IoU >= 0.5 implies > 10%), so single means exactly one.
    covers = np.bincount(ti[(cover > SPLIT_COVER) | (iou >= iou_threshold)], minlength=n)
    single = (hits == 1) & (covers == 1)
    away = np.ones(n, bool)
    away[crossing] = False
    return int(crossing.size), int(single[crossing].sum()), int(away.sum()), int(single[away].sum())


def merged_split(
    pred: np.ndarray, truth: np.ndarray, pi: np.ndarray, ti: np.ndarray, inter: np.ndarray
) -> tuple[int, int]:
    """``(merged, split)``: truth buildings that share one prediction with a neighbour, and
    truth buildings found as two or more parts.

    A prediction *holds* a truth building when at least :data:`HOLD_SHARE` of the building's
    area lies inside it; buildings held by a prediction that holds two or more are merged.
    A prediction is a *part* of a truth building when at least :data:`HOLD_SHARE` of the
    prediction lies inside it and it covers more than :data:`SPLIT_COVER` of the building; a
    building with two or more parts is split. ``pi, ti, inter``: the intersecting pairs.

    >>> from shapely.geometry import box
    >>> t = np.array([box(0, 0, 10, 10), box(10, 0, 20, 10), box(40, 0, 50, 10)])
    >>> p = np.array([box(0, 0, 20, 10), box(40, 0, 45, 10), box(45, 0, 50, 10)])
    >>> pi, ti, inter, _ = _pairs(p, t)
    >>> merged_split(p, t, pi, ti, inter)
    (2, 1)
    """
    if len(pi) == 0:
        return 0, 0
    with np.errstate(divide="ignore", invalid="ignore"):
        of_truth = np.where(shapely.area(truth)[ti] > 0, inter / shapely.area(truth)[ti], 0.0)
        of_pred = np.where(shapely.area(pred)[pi] > 0, inter / shapely.area(pred)[pi], 0.0)
    holds = of_truth >= HOLD_SHARE
    held_by = np.bincount(pi[holds], minlength=len(pred))
    merged = np.unique(ti[holds & (held_by[pi] >= 2)]).size
    parts = np.bincount(ti[(of_pred >= HOLD_SHARE) & (of_truth > SPLIT_COVER)], minlength=len(truth))
    return int(merged), int((parts >= 2).sum())


def _covered(
    geoms: np.ndarray, others: np.ndarray, gi: np.ndarray, oi: np.ndarray, inter: np.ndarray
) -> np.ndarray:
    """Area of each of ``geoms`` that ``others`` cover, overlaps between ``others`` counted once
    (pairs ``gi, oi`` intersect by ``inter``).

    >>> from shapely.geometry import box
    >>> g, o = np.array([box(0, 0, 10, 10)]), np.array([box(0, 0, 6, 10), box(0, 0, 6, 10)])
    >>> _covered(g, o, np.array([0, 0]), np.array([0, 1]), np.array([60.0, 60.0])).tolist()
    [60.0]
    """
    area = np.bincount(gi, weights=inter, minlength=len(geoms))
    order = np.argsort(gi, kind="stable")
    starts = np.flatnonzero(np.r_[True, np.diff(gi[order]) != 0])
    for lo, hi in zip(starts, np.r_[starts[1:], len(order)], strict=True):
        if hi - lo >= 2:  # the sum would count twice what two overlapping outlines share
            g = gi[order[lo]]
            union = shapely.union_all(others[oi[order[lo:hi]]])
            area[g] = shapely.area(shapely.intersection(geoms[g], union))
    return area


def missed_unmapped(
    pred: np.ndarray, truth: np.ndarray, pi: np.ndarray, ti: np.ndarray, inter: np.ndarray
) -> tuple[int, int]:
    """``(missed, unmapped)``: truth buildings that no prediction touches, and predictions where
    no building is mapped.

    A truth building is *missed* when the predictions cover at most :data:`SPLIT_COVER` of it; a
    prediction is *unmapped* when at most :data:`SPLIT_COVER` of it lies on truth buildings: a
    false alarm, or a building the truth lacks (look at them: OpenStreetMap is often incomplete).
    The other false positives and negatives are outlines, parts, and merged neighbours.
    ``pi, ti, inter``: the intersecting pairs.

    >>> from shapely.geometry import box
    >>> t = np.array([box(0, 0, 10, 10), box(20, 0, 30, 10)])
    >>> p = np.array([box(0, 0, 10, 10), box(40, 0, 50, 10), box(29.5, 0, 35, 10)])
    >>> pi, ti, inter, _ = _pairs(p, t)
    >>> missed_unmapped(p, t, pi, ti, inter)
    (1, 2)
    """
    t_area, p_area = shapely.area(truth), shapely.area(pred)
    on_truth = _covered(truth, pred, ti, pi, inter)
    on_pred = _covered(pred, truth, pi, ti, inter)
    missed = np.count_nonzero(on_truth <= SPLIT_COVER * t_area)
    unmapped = np.count_nonzero(on_pred <= SPLIT_COVER * p_area)
    return int(missed), int(unmapped)


# --------------------------------------------------------------------------- scores
@dataclass
class Scores:
    """Detection scores of one prediction layer against truth.

    ``seam_score`` is ``seam_single / seam_total``: the share of truth buildings crossing a
    tile seam that come out as exactly one polygon; None when no seam was given or no truth
    building crosses one. ``away_score``: the same share for the buildings away from every
    seam (what the seam score compares with: a seam that costs nothing scores the same).
    ``merged`` and ``split`` count truth buildings merged with a neighbour into one
    prediction, and found as two or more parts (:func:`merged_split`); ``missed``, truth
    buildings no prediction touches, and ``unmapped``, predictions where no building is mapped
    (:func:`missed_unmapped`).
    """

    tp: int
    fp: int
    fn: int
    precision: float
    recall: float
    f1: float
    mean_iou: float
    seam_total: int = 0
    seam_single: int = 0
    seam_score: float | None = None
    away_total: int = 0
    away_single: int = 0
    away_score: float | None = None
    pixel_precision: float | None = None
    pixel_recall: float | None = None
    pixel_f1: float | None = None
    truth_outside: int = 0
    merged: int = 0
    split: int = 0
    missed: int = 0
    unmapped: int = 0

    def as_dict(self) -> dict[str, Any]:
        """The scores as a plain dict (JSON-ready).

        >>> Scores(1, 0, 0, 1.0, 1.0, 1.0, 0.9).as_dict()["f1"]
        1.0
        """
        return asdict(self)


def _ratio(num: float, den: float) -> float:
    return float(num) / float(den) if den else 0.0


def scores_from_counts(tp: int, fp: int, fn: int, mean_iou: float = 0.0) -> Scores:
    """Precision, recall and F1 from counts; zero (never a division error) when undefined.

    >>> s = scores_from_counts(3, 1, 2)
    >>> round(s.precision, 3), round(s.recall, 3), round(s.f1, 3)
    (0.75, 0.6, 0.667)
    >>> scores_from_counts(0, 0, 0).f1
    0.0
    """
    precision = _ratio(tp, tp + fp)
    recall = _ratio(tp, tp + fn)
    f1 = _ratio(2 * precision * recall, precision + recall)
    return Scores(tp, fp, fn, precision, recall, f1, float(mean_iou))


def load_footprints(
    data: Footprints, role: str, layer: str | None = None, *, allow_empty: bool = False, option: str | None = None
) -> Features:
    """Footprints as :class:`Features`: a file's ``layer``, else its only layer, else its
    ``buildings`` layer (a file of several other layers is refused with their names); null and
    empty geometries left out, invalid polygons repaired (:func:`polygons_only`). A missing file,
    an unreadable one, a layer without CRS, NaN or infinite coordinates, coordinates that do not
    fit a CRS in degrees, or a truth file without one polygon: one line.
    ``allow_empty``: an empty truth file is a place without buildings (``calibrate`` and
    ``train`` take such rasters as negatives), not a mistake. ``option`` names the flag that
    picks the layer in messages (default ``--truth-layer`` / ``--pred-layer``)."""
    if isinstance(data, Features):
        frame, name = data, f"{role} footprints"
    elif hasattr(data, "geometry") and hasattr(data, "crs"):  # a GeoDataFrame / GeoSeries
        frame = Features.of(np.asarray(data.geometry.values, dtype=object), data.crs)
        name = f"{role} footprints"
    elif isinstance(data, (str, os.PathLike)):
        name = str(data)
        frame = _read_layer(Path(data), role, layer, option)
    else:
        raise EvaluationError(
            f"{role}: expected a GeoDataFrame, GeoSeries, Features or a vector file path, got {type(data).__name__}."
        )
    if frame.crs is None:
        raise EvaluationError(
            f"{name}: {role} layer has no CRS; set one, e.g. `frame.set_crs('EPSG:32633')` or "
            f"`ogr2ogr -a_srs EPSG:32633 fixed.gpkg {name}`."
        )
    geoms = frame.geometry
    frame = frame.take(np.flatnonzero(~(shapely.is_missing(geoms) | shapely.is_empty(geoms))))
    check_finite(frame, name, role)
    check_lonlat(frame, name, role)
    if role == "truth" and isinstance(data, (str, os.PathLike)) and len(frame) == 0 and not allow_empty:
        raise EvaluationError(
            f"{name}: the truth layer {frame.layer!r} has no footprints; give the file of the truth buildings "
            "(an F1 against nothing means nothing)."
        )
    return polygons_only(frame, name, role)


def _read_layer(path: Path, role: str, layer: str | None, option: str | None = None) -> Features:
    """The footprint layer of a vector file (see :func:`load_footprints`)."""
    from fastsam_geo.vectorio import VectorFormatError, footprint_layer

    if not path.exists():
        raise EvaluationError(f"{path}: no such {role} file; check the path.")
    try:
        chosen = footprint_layer(path, layer, option or f"--{'truth' if role == 'truth' else 'pred'}-layer")
    except VectorFormatError as exc:
        raise EvaluationError(str(exc)) from None
    try:
        with np.errstate(invalid="ignore"):  # NaN coordinates: refused in one line by check_finite
            return read_features(path, layer=chosen)
    except Exception as exc:
        reason = str(exc).split("\n")[0]
        if VECTOR_EXTRA in reason:  # a Shapefile, FlatGeobuf, ... in the light install
            raise EvaluationError(reason) from None
        raise EvaluationError(
            f"{path}: cannot be read as a {role} vector layer ({reason}); give a GeoPackage, "
            "GeoJSON, FlatGeobuf or Shapefile."
        ) from None


def _to_crs(frame: Features, crs: CRS) -> Features:
    """``frame`` reprojected to ``crs`` (x/y order, as geopandas' ``to_crs``); itself when equal."""
    if frame.crs is None or frame.crs.equals(crs):
        return frame
    tr = Transformer.from_crs(frame.crs, crs, always_xy=True)
    geoms = shapely.transform(frame.geometry, lambda xy: np.column_stack(tr.transform(xy[:, 0], xy[:, 1])))
    return Features(geoms, frame.columns, crs, frame.layer, frame.geometry_type)


def evaluate(
    pred: Footprints,
    truth: Footprints,
    *,
    iou_threshold: float = 0.5,
    seams: Sequence[BaseGeometry] | None = None,
    pred_layer: str | None = None,
    truth_layer: str | None = None,
) -> Scores:
    """Score predicted footprints against truth footprints.

    Args:
        pred: predicted footprints: a GeoDataFrame / GeoSeries or a vector file path.
            Reprojected to the truth CRS when the two differ.
        truth: ground-truth footprints, same forms.
        iou_threshold: a prediction and a truth building match when their IoU reaches this.
        seams: tile seams (e.g. :func:`seam_lines`) in the truth CRS; enables the seam score.
        pred_layer, truth_layer: the layer of a file of several (:func:`load_footprints`).

    Null and empty geometries are ignored. Raises :class:`EvaluationError` (a
    :class:`~fastsam_geo.errors.FastSAMGeoError`) when a file is missing or unreadable, a
    layer has no CRS, or predictions and truth (both non-empty) do not overlap at all.

    >>> from shapely.geometry import box
    >>> truth = Features.of([box(0, 0, 10, 10)], "EPSG:32633")
    >>> halves = Features.of([box(0, 0, 5, 10), box(5, 0, 10, 10)], "EPSG:32633")
    >>> evaluate(halves, truth, seams=[LineString([(5, -5), (5, 20)])]).seam_score
    0.0
    >>> evaluate(truth, truth, seams=[LineString([(5, -5), (5, 20)])]).seam_score
    1.0
    """
    check_fraction(iou_threshold, "--iou", 0.5)  # above 1 (or NaN) nothing matches: F1 0, not an error
    truth_df = load_footprints(truth, "truth", truth_layer)
    pred_df = _to_crs(load_footprints(pred, "prediction", pred_layer), truth_df.crs)
    names = source_name(pred, "prediction"), source_name(truth, "truth")
    check_same_place(pred_df.geometry, truth_df.geometry, *names)
    p = _as_geometry_array(pred_df.geometry)
    t = _as_geometry_array(truth_df.geometry)
    return _scores(p, t, iou_threshold, seams)


def _scores(p: np.ndarray, t: np.ndarray, iou_threshold: float, seams: Sequence[BaseGeometry] | None) -> Scores:
    """The scores of predictions ``p`` against truth ``t`` (geometry arrays in one CRS)."""
    pi, ti, inter, iou = _pairs(p, t)
    matches = _greedy(pi, ti, iou, iou_threshold)
    tp = len(matches)
    mean_iou = float(np.mean([m[2] for m in matches])) if matches else 0.0
    out = scores_from_counts(tp, len(p) - tp, len(t) - tp, mean_iou)
    out.merged, out.split = merged_split(p, t, pi, ti, inter)
    out.missed, out.unmapped = missed_unmapped(p, t, pi, ti, inter)
    if seams is not None:
        total, single, away, away_single = _seam_counts(p, t, seams, pi, ti, inter, iou, iou_threshold)
        out.seam_total, out.seam_single, out.away_total, out.away_single = total, single, away, away_single
        out.seam_score = _ratio(single, total) if total else None
        out.away_score = _ratio(away_single, away) if away else None
    return out


# --------------------------------------------------------------------------- pixels
def pixel_scores(
    pred: np.ndarray, truth: np.ndarray, raster: str | os.PathLike[str], max_side: int = 4096
) -> tuple[float, float, float]:
    """Pixel precision, recall and F1 of building masks rasterised on the raster's grid.

    ``pred`` and ``truth`` are geometries in the raster's CRS; only valid pixels count. A
    raster larger than ``max_side`` px a side is scored on a coarser grid of the same bounds.
    """
    import rasterio
    import rasterio.features
    from rasterio.enums import Resampling

    with rasterio.open(raster) as ds:
        w, h, t = coarse_grid(ds.width, ds.height, ds.transform, max_side)
        valid = ds.dataset_mask(out_shape=(h, w), resampling=Resampling.nearest) > 0

    def burn(geoms: np.ndarray) -> np.ndarray:
        geoms = geoms[~shapely.is_empty(geoms)] if len(geoms) else geoms
        if len(geoms) == 0:
            return np.zeros((h, w), bool)
        return rasterio.features.rasterize(list(geoms), out_shape=(h, w), transform=t, dtype=np.uint8) > 0

    p, g = burn(pred) & valid, burn(truth) & valid
    tp = int(np.count_nonzero(p & g))
    s = scores_from_counts(tp, int(np.count_nonzero(p)) - tp, int(np.count_nonzero(g)) - tp)
    return s.precision, s.recall, s.f1


def evaluate_on_raster(
    pred: Footprints,
    truth: Footprints,
    raster: str | os.PathLike[str],
    *,
    iou_threshold: float = 0.5,
    seams: Sequence[BaseGeometry] | None = None,
    pred_layer: str | None = None,
    truth_layer: str | None = None,
    same_place: bool = True,
) -> Scores:
    """:func:`evaluate` counting only buildings inside ``raster``'s valid footprint, plus pixel F1.

    Truth (and predicted) buildings with less than half their area on valid pixels of the
    raster are left out (``truth_outside`` says how many truth buildings were): a chip scored
    against its whole city's footprints, or a mosaic with masked holes, then counts what the
    image shows. Both layers are brought to the raster's CRS; ``seams`` are in that CRS.
    Truth whose extent misses the raster's, or predictions none of which touch it, are refused
    (:func:`~fastsam_geo.evalchecks.check_on_raster`); truth over the raster with no building on
    its valid pixels is an empty tile. ``same_place=False`` skips that check: ``calibrate`` and
    ``train`` score rasters beyond a footprint file's extent as rasters without buildings.
    """
    check_fraction(iou_threshold, "--iou", 0.5)
    area, crs = raster_footprint(raster)
    crs = CRS.from_user_input(crs.to_wkt() if hasattr(crs, "to_wkt") else crs)
    truth_df = _to_crs(load_footprints(truth, "truth", truth_layer), crs)
    pred_df = _to_crs(load_footprints(pred, "prediction", pred_layer), crs)
    names = source_name(pred, "prediction"), source_name(truth, "truth")
    if same_place:
        check_on_raster(pred_df.geometry, truth_df.geometry, raster, *names)
    t = _as_geometry_array(truth_df.geometry)
    p = _as_geometry_array(pred_df.geometry)
    near_t = shapely.STRtree(t).query(area, predicate="intersects") if len(t) else np.zeros(0, np.int64)
    keep_t = np.zeros(len(t), bool)
    keep_t[near_t] = inside(t[near_t], area)
    keep_p = inside(p, area)
    out = _scores(p[keep_p], t[keep_t], iou_threshold, seams)
    out.truth_outside = int(len(t) - keep_t.sum())
    out.pixel_precision, out.pixel_recall, out.pixel_f1 = pixel_scores(p[keep_p], t[keep_t], raster)
    return out


def pooled(scores: Sequence[Scores]) -> Scores:
    """One score over several sources: counts summed (object F1), pixel F1 averaged by source.

    >>> a, b = scores_from_counts(3, 1, 0, 0.8), scores_from_counts(1, 0, 2, 0.6)
    >>> round(pooled([a, b]).f1, 3)
    0.727
    """
    tp = sum(s.tp for s in scores)
    mean_iou = _ratio(sum(s.mean_iou * s.tp for s in scores), tp)
    out = scores_from_counts(tp, sum(s.fp for s in scores), sum(s.fn for s in scores), mean_iou)
    pix = [s.pixel_f1 for s in scores if s.pixel_f1 is not None]
    out.pixel_f1 = float(np.mean(pix)) if pix else None
    out.truth_outside = sum(s.truth_outside for s in scores)
    out.seam_total = sum(s.seam_total for s in scores)
    out.seam_single = sum(s.seam_single for s in scores)
    out.seam_score = _ratio(out.seam_single, out.seam_total) if out.seam_total else None
    seamed = [s for s in scores if s.seam_total]  # away from seams, where there are seams
    out.away_total = sum(s.away_total for s in seamed)
    out.away_single = sum(s.away_single for s in seamed)
    out.away_score = _ratio(out.away_single, out.away_total) if out.away_total else None
    out.merged = sum(s.merged for s in scores)
    out.split = sum(s.split for s in scores)
    out.missed = sum(s.missed for s in scores)
    out.unmapped = sum(s.unmapped for s in scores)
    return out
