"""Checks of footprint layers before they are scored (:mod:`fastsam_geo.evaluate`).

- :func:`polygons_only`: the polygons of a layer, invalid ones repaired, the polygons of a
  geometry collection kept, stray points and lines left out.
- :func:`check_finite`: no NaN or infinite coordinate (GEOS fails on them).
- :func:`check_lonlat`: a layer in degrees has coordinates in degrees (a GeoJSON without a
  ``"crs"`` member is read as WGS 84, whatever its numbers are).
- :func:`check_same_place` and :func:`check_on_raster`: prediction, truth and raster cover one
  place (an F1 of 0 between two places, or two CRSs, means nothing).

Each refusal is an :class:`~fastsam_geo.errors.EvaluationError` of one line: what, where, how to fix.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import numpy as np
import shapely
from shapely.geometry.base import BaseGeometry

from fastsam_geo.errors import EvaluationError
from fastsam_geo.vectorio import Features

log = logging.getLogger("fastsam_geo")

#: Degrees a layer in longitude/latitude may stray past -180..180 / -90..90 (rounding).
LONLAT_TOLERANCE = 1e-6


def source_name(data: Any, role: str) -> str:
    """How messages name a footprint source: its path, else ``"<role> footprints"``.

    >>> source_name("truth.gpkg", "truth"), source_name(None, "prediction")
    ('truth.gpkg', 'prediction footprints')
    """
    return str(data) if isinstance(data, (str, os.PathLike)) else f"{role} footprints"


def _set_crs_hint(name: str) -> str:
    """How to give ``name`` its right CRS: ogr2ogr for a file, ``set_crs`` for a frame in memory."""
    if name.endswith(" footprints"):
        return "set the right one, e.g. `frame.set_crs('EPSG:32633', allow_override=True)`"
    return f"set the right one, e.g. `ogr2ogr -a_srs EPSG:32633 fixed.gpkg {name}`"


def _span(bounds: np.ndarray) -> str:
    """Bounds written for a message.

    >>> _span(np.array([500030.0, 4649910.0, 500070.25, 4649920.0]))
    'x 500030 to 500070.25, y 4649910 to 4649920'
    """
    x0, y0, x1, y1 = (f"{float(v):.10g}" for v in bounds)
    return f"x {x0} to {x1}, y {y0} to {y1}"


def check_finite(frame: Features, name: str, role: str) -> None:
    """Refuse a layer with NaN or infinite coordinates (GEOS fails on them, or scores them wrong).

    >>> from shapely.geometry import Polygon, box
    >>> check_finite(Features.of([box(0, 0, 1, 1)], "EPSG:32633"), "t.gpkg", "truth")
    >>> bad = Polygon([(0, 0), (float("inf"), 1), (1, 1)])
    >>> check_finite(Features.of([box(0, 0, 1, 1), bad], "EPSG:32633"), "t.gpkg", "truth")
    Traceback (most recent call last):
    ...
    fastsam_geo.errors.EvaluationError: t.gpkg: 1 truth feature(s) have NaN or infinite coordinates; ...
    """
    coords, index = shapely.get_coordinates(frame.geometry, return_index=True)
    bad = np.unique(index[~np.isfinite(coords).all(axis=1)])
    if bad.size:
        raise EvaluationError(
            f"{name}: {bad.size} {role} feature(s) have NaN or infinite coordinates; remove or repair them "
            "in the file, then score again."
        )


def check_lonlat(frame: Features, name: str, role: str) -> None:
    """Refuse a layer in a geographic CRS whose coordinates are not longitudes and latitudes:
    metres under a CRS in degrees, what a GeoJSON without a ``"crs"`` member (read as WGS 84)
    gives when its coordinates are projected.

    >>> from shapely.geometry import box
    >>> check_lonlat(Features.of([box(-180, -90, 180, 90)], "EPSG:4326"), "t.geojson", "truth")
    >>> check_lonlat(Features.of([box(500030, 4649910, 500040, 4649920)], "EPSG:4326"), "t.geojson", "truth")
    Traceback (most recent call last):
    ...
    fastsam_geo.errors.EvaluationError: t.geojson: the truth layer's CRS, WGS 84, is geographic ...
    """
    crs = frame.crs
    if crs is None or not crs.is_geographic or len(frame) == 0:
        return
    if not all("degree" in (axis.unit_name or "") for axis in crs.axis_info[:2]):
        return
    bounds = shapely.total_bounds(frame.geometry)
    tol = LONLAT_TOLERANCE
    if bounds[0] >= -180 - tol and bounds[2] <= 180 + tol and bounds[1] >= -90 - tol and bounds[3] <= 90 + tol:
        return
    raise EvaluationError(
        f"{name}: the {role} layer's CRS, {crs.name}, is geographic (degrees) but its coordinates span "
        f"{_span(bounds)}, outside longitude -180 to 180 / latitude -90 to 90: the CRS is wrong (a GeoJSON "
        f'without a "crs" member is read as WGS 84); {_set_crs_hint(name)}.'
    )


def _disjoint(a: np.ndarray, b: np.ndarray) -> bool:
    """Whether two bounds ``(minx, miny, maxx, maxy)`` do not meet (non-finite bounds never meet).

    >>> a = np.array([0, 0, 1, 1])
    >>> [_disjoint(a, np.array(b)) for b in ([1, 1, 2, 2], [3, 0, 4, 1], [0, 0, np.inf, 1])]
    [False, True, True]
    """
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        return True
    return bool(a[2] < b[0] or b[2] < a[0] or a[3] < b[1] or b[3] < a[1])


def check_same_place(pred: np.ndarray, truth: np.ndarray, pred_name: str, truth_name: str) -> None:
    """Refuse predictions and truth (geometries in one CRS, both non-empty) whose extents do not meet.

    >>> from shapely.geometry import box
    >>> check_same_place(np.array([box(0, 0, 10, 10)]), np.array([box(5, 5, 20, 20)]), "p.gpkg", "t.gpkg")
    >>> check_same_place(np.array([box(0, 0, 10, 10)]), np.array([box(1e5, 0, 1e5 + 10, 10)]), "p.gpkg", "t.gpkg")
    Traceback (most recent call last):
    ...
    fastsam_geo.errors.EvaluationError: p.gpkg and t.gpkg do not overlap at all ...
    """
    if len(pred) == 0 or len(truth) == 0:
        return
    pb, tb = shapely.total_bounds(pred), shapely.total_bounds(truth)
    if not _disjoint(pb, tb):
        return
    raise EvaluationError(
        f"{pred_name} and {truth_name} do not overlap at all (predictions {_span(pb)}; truth {_span(tb)}, in the "
        "truth's CRS): they cover different places, or one has the wrong CRS (or x and y swapped); give the truth "
        "of the place predicted, or set the right CRS (`ogr2ogr -a_srs EPSG:XXXX fixed.gpkg FILE`)."
    )


def check_on_raster(
    pred: np.ndarray, truth: np.ndarray, raster: str | os.PathLike[str], pred_name: str, truth_name: str
) -> None:
    """Refuse truth whose extent does not meet ``raster``'s, and predictions none of which touch it
    (geometries in the raster's CRS). Truth over the raster with no building on its valid pixels
    is an empty tile, not a mistake: it passes."""
    import rasterio

    with rasterio.open(raster) as ds:
        rb = np.asarray(tuple(ds.bounds), dtype=float)
    if len(truth) and _disjoint(shapely.total_bounds(truth), rb):
        raise EvaluationError(
            f"{truth_name} does not reach {raster}: the truth spans {_span(shapely.total_bounds(truth))}, the "
            f"raster {_span(rb)} (in the raster's CRS); the truth covers another place or has the wrong CRS: give "
            "the truth of the raster's place, or set its right CRS (`ogr2ogr -a_srs EPSG:XXXX fixed.gpkg FILE`)."
        )
    if len(pred) and not shapely.intersects(pred, shapely.box(*rb)).any():
        raise EvaluationError(
            f"{pred_name}: none of its {len(pred)} predictions touches {raster} ({_span(rb)}, in the raster's "
            "CRS): it was made on another raster, or has the wrong CRS; give the raster the prediction was "
            "extracted from."
        )


def polygons_only(frame: Features, name: str, role: str) -> Features:
    """The polygons of ``frame``, invalid ones repaired with ``shapely.make_valid`` (a warning on
    stderr says how many): a self-intersecting truth polygon scored as it is gives a wrong IoU.
    A geometry collection counts by its polygons. A layer of points or lines (no polygon at
    all) is refused; a few stray non-polygons are left out with a warning.

    >>> from shapely.geometry import GeometryCollection, Polygon, box
    >>> bow = Polygon([(0, 0), (10, 10), (10, 0), (0, 10)])
    >>> f = polygons_only(Features.of([bow, GeometryCollection([box(0, 0, 2, 2)])], "EPSG:32633"), "t.gpkg", "truth")
    >>> bool(shapely.is_valid(f.geometry).all()), round(float(shapely.area(f.geometry).sum()), 1)
    (True, 54.0)
    """
    geoms = given = frame.geometry
    if len(geoms) == 0:
        return frame
    collections = shapely.get_type_id(geoms) == 7
    if collections.any():  # a valid collection of polygons is a footprint: its polygons count
        geoms = geoms.copy()
        geoms[collections] = [polygonal(g) for g in geoms[collections]]
    bad = ~shapely.is_valid(geoms)
    if bad.any():
        geoms = geoms.copy()
        fixed = shapely.make_valid(geoms[bad])
        # make_valid may return a collection with lines or points: keep the polygonal parts
        geoms[bad] = [polygonal(g) for g in fixed]
        log.warning(
            "Warning: %s: %d invalid %s polygon(s) (e.g. self-intersecting) repaired with make_valid; "
            "fix them in the file to silence this.",
            name,
            int(bad.sum()),
            role,
        )
    if geoms is not given:
        frame = Features(geoms, frame.columns, frame.crs, frame.layer, frame.geometry_type)
    poly = np.isin(shapely.get_type_id(geoms), (3, 6)) & ~shapely.is_empty(geoms)
    if not poly.any():
        kinds = sorted({g.geom_type for g in given})
        raise EvaluationError(
            f"{name}: the {role} layer has no polygons ({len(geoms)} features: {', '.join(kinds)}); "
            "give building footprint polygons."
        )
    if not poly.all():
        log.warning("Warning: %s: %d %s features that are not polygons left out.", name, int((~poly).sum()), role)
        frame = frame.take(np.flatnonzero(poly))
    return frame


def polygonal(geom: BaseGeometry) -> BaseGeometry:
    """The polygon parts of a geometry (a Polygon, a MultiPolygon or an empty polygon), what is kept
    of ``shapely.make_valid``'s answer (it may hold lines and points beside the polygons).

    >>> from shapely.geometry import GeometryCollection, LineString, MultiPolygon, box
    >>> two = MultiPolygon([box(0, 0, 1, 1), box(2, 0, 3, 1)])
    >>> polygonal(GeometryCollection([two, LineString([(0, 0), (5, 5)])])).wkt
    'MULTIPOLYGON (((1 0, 1 1, 0 1, 0 0, 1 0)), ((3 0, 3 1, 2 1, 2 0, 3 0)))'
    >>> polygonal(GeometryCollection([GeometryCollection([box(0, 0, 1, 1)])])).wkt   # nested
    'POLYGON ((1 0, 1 1, 0 1, 0 0, 1 0))'
    """
    parts = shapely.get_parts(geom)
    while any(p.geom_type == "GeometryCollection" for p in parts):  # collections inside collections
        parts = shapely.get_parts(parts)
    polys = [q for p in parts if p.geom_type in ("Polygon", "MultiPolygon") for q in shapely.get_parts(p)]
    if not polys:
        return shapely.Polygon()
    return polys[0] if len(polys) == 1 else shapely.MultiPolygon(polys)
