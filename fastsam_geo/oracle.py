"""Segmenters that need no model: the truth (an oracle) and recorded masks (a replay).

``TruthSegmenter`` returns the true instance masks of each tile, rasterised from
footprint polygons: with it the whole pipeline (tiling, vectorising, seam merging,
writing) can be checked against the truth with the model taken out of the equation.
``RecordedSegmenter`` returns masks recorded from another segmenter, to time the rest of
the pipeline without the model (benchmarks).
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import geopandas as gpd
import numpy as np
import rasterio.features
import shapely
from affine import Affine

from fastsam_geo.masks import InstanceMasks
from fastsam_geo.tiling import Tile


class TruthSegmenter:
    """The true instance masks of each tile, from footprint polygons (any CRS).

    A pixel belongs to a footprint when its centre is inside it (GDAL's rule).
    """

    def __init__(self, footprints: gpd.GeoDataFrame | str | os.PathLike[str], crs: object | None = None) -> None:
        gdf = footprints if isinstance(footprints, gpd.GeoDataFrame) else gpd.read_file(footprints)
        if crs is not None and gdf.crs is not None:
            gdf = gdf.to_crs(crs)
        self.geoms = np.asarray(gdf.geometry.values, dtype=object)
        self.tree = shapely.STRtree(self.geoms)
        self.calls = 0

    def segment(self, tiles: Sequence[Tile]) -> list[InstanceMasks]:
        """One :class:`InstanceMasks` per tile (score 1.0 for every object)."""
        self.calls += 1
        return [self._tile_masks(t) for t in tiles]

    def _tile_masks(self, tile: Tile) -> InstanceMasks:
        h, w = tile.shape
        t = tile.transform
        left, top = t.c, t.f
        right, bottom = t * (w, h)
        window_box = shapely.box(min(left, right), min(top, bottom), max(left, right), max(top, bottom))
        hits = self.tree.query(window_box, predicate="intersects")
        inv = ~t
        crops, offsets = [], []
        for g in self.geoms[np.sort(hits)]:
            xmin, ymin, xmax, ymax = g.bounds
            c0, r0 = inv * (xmin, ymax)
            c1, r1 = inv * (xmax, ymin)
            c0, c1 = sorted((c0, c1))
            r0, r1 = sorted((r0, r1))
            c0, r0 = max(int(np.floor(c0)), 0), max(int(np.floor(r0)), 0)
            c1, r1 = min(int(np.ceil(c1)), w), min(int(np.ceil(r1)), h)
            if c1 <= c0 or r1 <= r0:
                continue
            crop = rasterio.features.rasterize(
                [g], out_shape=(r1 - r0, c1 - c0), transform=t * Affine.translation(c0, r0), dtype=np.uint8
            ).astype(bool)
            if tile.nodata is not None:
                crop &= ~tile.nodata[r0:r1, c0:c1]
            if not crop.any():
                continue
            rs, cs = np.flatnonzero(crop.any(1)), np.flatnonzero(crop.any(0))
            crops.append(crop[rs[0] : rs[-1] + 1, cs[0] : cs[-1] + 1])
            offsets.append((r0 + rs[0], c0 + cs[0]))
        if not crops:
            return InstanceMasks.empty((h, w))
        off = np.asarray(offsets, np.int64)
        hw = np.asarray([c.shape for c in crops], np.int64)
        boxes = np.concatenate([off[:, ::-1], off[:, ::-1] + hw[:, ::-1]], axis=1)
        return InstanceMasks(crops, off, np.ones(len(crops), np.float32), boxes, (h, w))


class RecordedSegmenter:
    """Replays recorded masks by tile id (for timing everything but the model)."""

    def __init__(self, recorded: dict[str, InstanceMasks]) -> None:
        self.recorded = recorded
        self.calls = 0

    def segment(self, tiles: Sequence[Tile]) -> list[InstanceMasks]:
        """The recorded masks of each tile (empty when none were recorded)."""
        self.calls += 1
        return [self.recorded.get(t.id, InstanceMasks.empty(t.shape)) for t in tiles]
