"""Masks to polygons: exact pixel edges, holes kept, map coordinates, valid output."""

from __future__ import annotations

import numpy as np
import rasterio.features
import shapely
from affine import Affine

from fastsam_geo.masks import InstanceMasks
from fastsam_geo.vectorize import fill_small_holes, mask_to_geometry, masks_to_geometries, polygon_parts, simplify


def test_polygons_cover_exactly_the_mask_pixels_in_map_units() -> None:
    rng = np.random.default_rng(0)
    t = Affine(0.5, 0, 500000, 0, -0.5, 4650000)
    dense = np.zeros((3, 64, 80), bool)
    dense[0, 10:30, 5:40] = True
    dense[0, 15:25, 15:25] = False  # a courtyard
    dense[1, 40:64, 60:80] = True  # touches the tile's corner
    dense[2] = rng.random((64, 80)) > 0.97  # speckle: many parts
    masks = InstanceMasks.from_dense(dense)
    geoms = masks_to_geometries(masks, t)
    assert all(shapely.is_valid(geoms))
    for i, g in enumerate(geoms):
        back = rasterio.features.rasterize([g], out_shape=(64, 80), transform=t).astype(bool)
        assert (back == dense[i]).all()
        assert np.isclose(g.area, dense[i].sum() * 0.25)
    assert len(geoms[0].interiors) == 1
    assert geoms[1].bounds == (500030.0, 4649968.0, 500040.0, 4649980.0)


def test_simplify_keeps_holes_and_validity() -> None:
    t = Affine.identity()
    dense = np.zeros((1, 60, 60), bool)
    yy, xx = np.mgrid[:60, :60]
    dense[0] = (np.abs(xx - 30) + np.abs(yy - 30) < 25) & ~((np.abs(xx - 30) < 5) & (np.abs(yy - 30) < 5))
    g = masks_to_geometries(InstanceMasks.from_dense(dense), t)
    s = simplify(g, 1.0)
    assert shapely.is_valid(s[0])
    assert len(s[0].interiors) == 1
    assert len(s[0].exterior.coords) < len(g[0].exterior.coords) / 4
    assert abs(s[0].area - g[0].area) / g[0].area < 0.05


def test_polygon_parts_keeps_the_source_index() -> None:
    mp = shapely.MultiPolygon([shapely.box(0, 0, 4, 4), shapely.box(10, 10, 12, 12)])
    parts, idx = polygon_parts(np.array([shapely.box(0, 0, 1, 1), mp], dtype=object), min_area=2)
    assert idx.tolist() == [1, 1]
    assert sorted(p.area for p in parts) == [4.0, 16.0]


def test_fill_small_holes_in_every_part_keeps_large_ones_and_missing_values() -> None:
    def holed(x: float, hole: float) -> shapely.Polygon:
        inner = shapely.box(x + 2, 2, x + 2 + hole, 2 + hole)
        return shapely.Polygon(shapely.box(x, 0, x + 10, 10).exterior.coords, [inner.exterior.coords])

    multi = shapely.MultiPolygon([holed(0, 1), holed(20, 5)])
    plain = shapely.box(0, 0, 1, 1)
    out = fill_small_holes(np.array([multi, None, plain, holed(40, 1)], dtype=object), max_area=4.0)
    assert [len(p.interiors) for p in out[0].geoms] == [0, 1]
    assert out[1] is None and out[2] is plain
    assert out[3].area == 100.0 and out[3].is_valid


def test_packed_tracing_equals_tracing_each_mask_alone() -> None:
    """Every mask traced in the packed label image is, coordinate for coordinate, what GDAL
    gives for that mask alone: overlapping masks, speckle, diagonal touches, holes, masks wider
    than the packed image."""
    rng = np.random.default_rng(7)
    t = Affine(0.3, 0, 612345.6, 0, -0.3, 4321098.7)
    dense = np.zeros((40, 90, 1100), bool)
    for k in range(38):
        r, c = rng.integers(0, 80), rng.integers(0, 1080)
        h, w = rng.integers(1, 30), rng.integers(1, 60)
        dense[k, r : r + h, c : c + w] = rng.random((min(h, 90 - r), min(w, 1100 - c))) > 0.3
    dense[38, 10:80, 2:1098] = True  # wider than the packed image
    dense[38, 30:40, 500:520] = False
    dense[39, ::2, ::2] = True  # diagonal neighbours only: one part per pixel
    masks = InstanceMasks.from_dense(dense)
    geoms = masks_to_geometries(masks, t)
    for k in range(len(dense)):
        alone = mask_to_geometry(dense[k], t)
        assert (geoms[k] is None) == (alone is None)
        if alone is not None:
            assert shapely.equals_exact(shapely.normalize(geoms[k]), shapely.normalize(alone), 1e-6), k
    assert len(geoms[39].geoms) == 45 * 550
