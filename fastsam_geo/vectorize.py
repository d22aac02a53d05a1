"""Instance masks to polygons in map coordinates.

Masks are traced by GDAL's polygonizer (``rasterio.features.shapes``): the crops of all of
a tile's masks are packed into one label image and traced by one call (its set-up costs more
than tracing a building, and its scan of the pixels most of all), then moved into place.
Polygons follow pixel edges exactly (holes kept, always valid); simplification happens once,
after seams are merged (:func:`simplify`), so that pieces of one building still meet exactly
at a seam.
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

    Every mask's crop is packed into one label image (:func:`pack_crops`; overlapping masks
    too, each in its own place) and traced by a single call of GDAL's polygonizer, whose cost
    is mostly the pixels it scans: the crops hold a fraction of the tile's. Each polygon is then
    moved from its place in the packed image to its crop's place in the tile, and into map
    coordinates, in one vectorised step.

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
    labels, slots = pack_crops(masks.crops)
    polys, owner = [], []
    with rasterio.Env():
        for geom, value in rasterio.features.shapes(labels, mask=labels > 0, connectivity=4):
            shell, *holes = geom["coordinates"]
            polys.append(shapely.Polygon(shell, holes) if holes else shapely.polygons(np.asarray(shell, np.float64)))
            owner.append(int(value) - 1)
    if not polys:
        return out
    geoms, who = np.asarray(polys, dtype=object), np.asarray(owner, np.int64)
    coords, idx = shapely.get_coordinates(geoms, return_index=True)
    shift = (np.asarray(masks.offsets, np.int64) - slots)[who[idx]]  # (row, col): packed -> tile pixels
    col, row = coords[:, 0] + shift[:, 1], coords[:, 1] + shift[:, 0]
    t = transform
    geoms = shapely.set_coordinates(geoms, np.column_stack([t.a * col + t.b * row + t.c, t.d * col + t.e * row + t.f]))
    order = np.argsort(who, kind="stable")
    ends = np.searchsorted(who[order], np.arange(n + 1))
    for i in range(n):
        p = geoms[order[ends[i] : ends[i + 1]]]
        out[i] = p[0] if len(p) == 1 else (MultiPolygon(list(p)) if len(p) else None)
    return out


#: Width of the packed label image (wider when a crop is).
PACK_WIDTH = 1024


def pack_crops(crops: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Shelf-pack boolean crops into one int32 label image (crop ``i``'s pixels hold ``i + 1``).

    Returns the image and each crop's ``(row, col)`` in it. Crops go tallest first, left to
    right in rows ("shelves") of :data:`PACK_WIDTH` pixels; labels keep touching crops apart.

    >>> a, b = np.ones((2, 3), bool), np.ones((4, 1), bool)
    >>> labels, slots = pack_crops([a, b])
    >>> labels.shape, slots.tolist()
    ((4, 1024), [[0, 1], [0, 0]])
    >>> labels[:, :4].tolist()
    [[2, 1, 1, 1], [2, 1, 1, 1], [2, 0, 0, 0], [2, 0, 0, 0]]
    """
    hw = np.asarray([c.shape for c in crops], np.int64).reshape(-1, 2)
    width = max(PACK_WIDTH, int(hw[:, 1].max(initial=0)))
    slots = np.zeros((len(crops), 2), np.int64)
    x = y = shelf = 0
    for i in np.argsort(-hw[:, 0], kind="stable"):
        h, w = int(hw[i, 0]), int(hw[i, 1])
        if x + w > width:
            y, x, shelf = y + shelf, 0, 0
        slots[i] = y, x
        x, shelf = x + w, max(shelf, h)
    labels = np.zeros((y + shelf, width), np.int32)
    for i, crop in enumerate(crops):
        r, c = slots[i]
        labels[r : r + crop.shape[0], c : c + crop.shape[1]][crop] = i + 1
    return labels, slots


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
