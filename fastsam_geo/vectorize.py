"""Instance masks to polygons in map coordinates.

Masks are traced by GDAL's polygonizer (``rasterio.features.shapes``): masks that do not
overlap share one label image and one call (its set-up costs more than tracing a building),
each traced only over the area the masks cover; a label image of a few masks spread over the
tile is traced mask by mask, where that scans fewer pixels (:data:`TRACE_CALL_PX`). Polygons
follow pixel edges exactly (holes kept, always valid); simplification happens once, after
seams are merged (:func:`simplify`), so that pieces of one building still meet exactly at a
seam.
"""

from __future__ import annotations

import numpy as np
import rasterio.features
import shapely
from affine import Affine
from shapely.geometry import MultiPolygon, Polygon, shape

from fastsam_geo.masks import InstanceMasks


def mask_to_geometry(crop: np.ndarray, transform: Affine) -> Polygon | MultiPolygon | None:
    """Trace one boolean mask into a (multi)polygon in the coordinates of ``transform``.

    Pixels connect by their edges (4-connectivity); disconnected parts give a MultiPolygon.

    >>> crop = np.zeros((4, 4), bool); crop[1:3, 1:3] = True
    >>> mask_to_geometry(crop, Affine.identity()).bounds
    (1.0, 1.0, 3.0, 3.0)
    >>> crop[0, 3] = True
    >>> mask_to_geometry(crop, Affine.identity()).geom_type
    'MultiPolygon'
    """
    if not crop.any():
        return None
    data = crop.astype(np.uint8)
    parts = [shape(geom) for geom, _ in rasterio.features.shapes(data, mask=crop, connectivity=4, transform=transform)]
    if len(parts) == 1:
        return parts[0]
    return MultiPolygon(parts)


def masks_to_geometries(masks: InstanceMasks, transform: Affine) -> np.ndarray:
    """Trace every mask of a tile; ``transform`` is the tile's transform.

    Masks that do not overlap are drawn into one label image and traced by a single call of
    GDAL's polygonizer (its set-up costs more than tracing a building); overlapping masks go
    to further layers, so each mask still gets its own exact outline.

    Returns an object array of N geometries (None for an empty mask), aligned with ``masks``.

    >>> dense = np.zeros((2, 6, 6), bool); dense[0, 1:3, 1:4] = True; dense[1, 4:6, 0:2] = True
    >>> geoms = masks_to_geometries(InstanceMasks.from_dense(dense), Affine(0.5, 0, 100, 0, -0.5, 200))
    >>> [g.area for g in geoms]
    [1.5, 1.0]
    >>> geoms[0].bounds
    (100.5, 198.5, 102.0, 199.5)
    """
    n = len(masks)
    out = np.empty(n, dtype=object)
    if n == 0:
        return out
    parts: list[list[Polygon]] = [[] for _ in range(n)]
    with rasterio.Env():
        for lab, occ, members in _label_layers(masks):
            rows, cols = np.flatnonzero(occ.any(1)), np.flatnonzero(occ.any(0))
            r0, r1, c0, c1 = int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1
            crops_px = sum(masks.crops[i].size for i in members)
            if len(members) * TRACE_CALL_PX + crops_px < TRACE_CALL_PX + (r1 - r0) * (c1 - c0):
                for i in members:  # a few masks spread over the tile: one small call each
                    b0, b1 = int(masks.crop_boxes[i][0]), int(masks.crop_boxes[i][1])
                    _trace(masks.crops[i].astype(np.int32) * (i + 1), transform, b0, b1, parts)
                continue
            _trace(lab[r0:r1, c0:c1], transform, r0, c0, parts)
    for i, p in enumerate(parts):
        out[i] = p[0] if len(p) == 1 else (MultiPolygon(p) if p else None)
    return out


# What one call of GDAL's polygonizer costs beyond its pixels, in pixels traced (about 0.45 ms
# against 13.4 ms for a 1024 x 1024 label image, measured on this project's 2-core machine).
TRACE_CALL_PX = 32_768


def _label_layers(masks: InstanceMasks) -> list[tuple[np.ndarray, np.ndarray, list[int]]]:
    """Masks drawn into label images (value = index + 1) so that no two in one image overlap:
    ``(labels, occupied, indices)`` per image, the first holding most masks."""
    h, w = masks.shape
    boxes = masks.crop_boxes
    layers: list[tuple[np.ndarray, np.ndarray, list[int]]] = []
    for i, crop in enumerate(masks.crops):
        if not crop.any():
            continue
        r0, c0, r1, c1 = (int(v) for v in boxes[i])
        k = next((k for k, (_, occ, _) in enumerate(layers) if not (occ[r0:r1, c0:c1] & crop).any()), len(layers))
        if k == len(layers):
            layers.append((np.zeros((h, w), np.int32), np.zeros((h, w), bool), []))
        lab, occ, members = layers[k]
        lab[r0:r1, c0:c1][crop] = i + 1
        occ[r0:r1, c0:c1] |= crop
        members.append(i)
    return layers


def _trace(labels: np.ndarray, transform: Affine, row: int, col: int, parts: list[list[Polygon]]) -> None:
    """Polygons of every label of ``labels`` (a window at ``row, col`` of the tile) into ``parts``."""
    t = transform * Affine.translation(col, row)
    for geom, value in rasterio.features.shapes(labels, mask=labels > 0, connectivity=4, transform=t):
        shell, *holes = geom["coordinates"]
        poly = shapely.Polygon(shell, holes) if holes else shapely.polygons(np.asarray(shell, np.float64))
        parts[int(value) - 1].append(poly)


def fill_small_holes(geoms: np.ndarray, max_area: float) -> np.ndarray:
    """(Multi)polygons with every hole smaller than ``max_area`` (map units squared) filled.

    A mask leaves a hole where a water tank, a skylight or a shadow sits on its roof; no
    building mapper keeps those. A hole at least ``max_area`` large (a courtyard) stays.

    >>> ring = shapely.box(0, 0, 10, 10).exterior.coords
    >>> roof = shapely.Polygon(ring, [shapely.box(2, 2, 3, 3).exterior.coords, shapely.box(5, 5, 9, 9).exterior.coords])
    >>> [len(g.interiors) for g in fill_small_holes(np.array([roof, None]), 4.0)[:1]]
    [1]
    >>> fill_small_holes(np.array([roof]), 16.5)[0].area
    100.0
    """
    geoms = np.asarray(geoms, dtype=object)
    out = geoms.copy()
    present = np.flatnonzero(~shapely.is_missing(geoms))
    parts, index = shapely.get_parts(geoms[present], return_index=True)
    for i in np.unique(present[index[shapely.get_num_interior_rings(parts) > 0]]):
        filled = [_fill_part(p, max_area) for p in shapely.get_parts(geoms[i])]
        out[i] = filled[0] if len(filled) == 1 else MultiPolygon(filled)
    return out


def _fill_part(poly: Polygon, max_area: float) -> Polygon:
    keep = [r for r in poly.interiors if shapely.area(shapely.polygons(r)) >= max_area]
    return poly if len(keep) == len(poly.interiors) else Polygon(poly.exterior, keep)


def simplify(geoms: np.ndarray, tolerance: float) -> np.ndarray:
    """Douglas-Peucker simplification that keeps polygons valid and holes in place.

    A geometry that simplification would empty is kept as it was.

    >>> sq = shapely.Polygon([(0, 0), (1, 0.01), (2, 0), (2, 2), (0, 2)])
    >>> len(simplify(np.array([sq]), 0.1)[0].exterior.coords)
    5
    """
    geoms = np.asarray(geoms, dtype=object)
    if tolerance <= 0 or geoms.size == 0:
        return geoms
    out = shapely.simplify(geoms, tolerance, preserve_topology=True)
    bad = shapely.is_empty(out) | ~shapely.is_valid(out)
    if bad.any():
        out[bad] = shapely.make_valid(out[bad])
        still = shapely.is_empty(out) | (shapely.get_type_id(out) > 6)
        out[still] = geoms[still]
    return out


def polygon_parts(geoms: np.ndarray, min_area: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Explode (multi)polygons into polygons, dropping parts smaller than ``min_area``.

    Returns the polygons and, for each, the index of the geometry it came from.

    >>> mp = shapely.MultiPolygon([shapely.box(0, 0, 2, 2), shapely.box(5, 5, 5.5, 5.5)])
    >>> parts, idx = polygon_parts(np.array([mp, shapely.box(0, 0, 1, 1)]), min_area=0.5)
    >>> [p.area for p in parts], idx.tolist()
    ([4.0, 1.0], [0, 1])
    """
    geoms = np.asarray(geoms, dtype=object)
    if geoms.size == 0:
        return geoms, np.zeros(0, np.int64)
    parts, index = shapely.get_parts(geoms, return_index=True)
    keep = (shapely.get_type_id(parts) == 3) & (shapely.area(parts) >= min_area)
    return parts[keep], index[keep]
