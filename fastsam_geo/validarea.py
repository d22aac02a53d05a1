"""A raster's valid-data area, where footprints are scored (:func:`fastsam_geo.evaluate.evaluate_on_raster`).

A chip is scored against its city's footprint file, and a sparse mosaic with masked holes only where it
holds imagery: :func:`raster_footprint` gives that area, :func:`inside` which footprints lie in it.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import shapely
from shapely.geometry.base import BaseGeometry

#: Share of a building's area that must lie in the raster's valid footprint for it to count.
INSIDE_SHARE = 0.5


def coarse_grid(width: int, height: int, transform: Any, max_side: int) -> tuple[int, int, Any]:
    """A grid over the same bounds with at most ``max_side`` pixels a side (the grid itself if smaller).

    >>> from affine import Affine
    >>> coarse_grid(4000, 2000, Affine(0.1, 0, 0, 0, -0.1, 0), 1000)[:2]
    (1000, 500)
    """
    from affine import Affine

    f = max(width, height) / max_side
    if f <= 1:
        return width, height, transform
    w, h = max(1, round(width / f)), max(1, round(height / f))
    return w, h, transform * Affine.scale(width / w, height / h)


def raster_footprint(raster: str | os.PathLike[str], max_side: int = 1024) -> tuple[BaseGeometry, Any]:
    """The raster's valid-data area (dataset mask, read at most ``max_side`` px a side) and its CRS.

    Holes of a sparse mosaic (nodata, alpha or internal mask) are left out; vectorised in one
    pass with ``rasterio.features.shapes``.
    """
    import rasterio
    import rasterio.features
    from rasterio.enums import Resampling

    with rasterio.open(raster) as ds:
        w, h, t = coarse_grid(ds.width, ds.height, ds.transform, max_side)
        valid = (ds.dataset_mask(out_shape=(h, w), resampling=Resampling.nearest) > 0).astype(np.uint8)
        crs = ds.crs
    if valid.all():
        left, top = t * (0, 0)
        right, bottom = t * (w, h)
        return shapely.box(min(left, right), min(top, bottom), max(left, right), max(top, bottom)), crs
    polys = [shapely.geometry.shape(g) for g, v in rasterio.features.shapes(valid, mask=valid > 0, transform=t)]
    return shapely.union_all(np.asarray(polys, dtype=object)) if polys else shapely.Polygon(), crs


def inside(geoms: np.ndarray, area: BaseGeometry, share: float = INSIDE_SHARE) -> np.ndarray:
    """Which of ``geoms`` have at least ``share`` of their area inside ``area`` (vectorised).

    >>> from shapely.geometry import box
    >>> inside(np.array([box(0, 0, 2, 2), box(1, 0, 3, 2), box(5, 5, 6, 6)]), box(0, 0, 2, 2)).tolist()
    [True, True, False]
    """
    if len(geoms) == 0:
        return np.zeros(0, bool)
    shapely.prepare(area)
    a = shapely.area(geoms)
    within = shapely.contains(area, geoms)
    rest = ~within
    out = within.copy()
    if rest.any():
        inter = shapely.area(shapely.intersection(geoms[rest], area))
        with np.errstate(divide="ignore", invalid="ignore"):
            out[rest] = np.where(a[rest] > 0, inter / a[rest], 0.0) >= share
    return out
