"""Seam merging: one polygon per object, whatever the tiling and the order of tiles."""

from __future__ import annotations

import numpy as np
import pytest
import shapely
from affine import Affine

from fastsam_geo.merge import MergedObjects, TileMerger
from fastsam_geo.tiling import TileGrid

# Pixel-aligned map coordinates: 1 m pixels, origin (0, 0), rows going down (y = -row).
T = Affine(1, 0, 0, 0, -1, 0)


def px_box(c0: float, r0: float, c1: float, r1: float) -> shapely.Polygon:
    """A box given in pixel coordinates, returned in map coordinates."""
    return shapely.box(c0, -r1, c1, -r0)


def clip_to_tile(geom: shapely.Geometry, grid: TileGrid, index: int) -> shapely.Geometry:
    return shapely.intersection(geom, shapely.box(*grid.window_bounds(index)))


def assert_same_shape(a: shapely.Geometry, b: shapely.Geometry) -> None:
    """Topologically equal (same point set), whatever the vertex order or collinear vertices."""
    assert shapely.equals(a, b), f"{a.wkt[:200]} != {b.wkt[:200]}"


def run_tiles(grid: TileGrid, objects: list[shapely.Geometry], order: list[int] | None = None) -> MergedObjects:
    """What an oracle would see: every object clipped to every tile window it touches."""
    merger = TileMerger(grid)
    out = []
    for idx in order if order is not None else range(len(grid)):
        pieces = [clip_to_tile(g, grid, idx) for g in objects]
        pieces = [p for p in pieces if not p.is_empty and p.area > 0]
        out.append(merger.add(idx, np.array(pieces, dtype=object), np.ones(len(pieces))))
    out.append(merger.flush())
    assert merger.pending == 0
    return MergedObjects.concatenate(out)


def test_object_cut_by_a_seam_comes_out_once_and_whole() -> None:
    grid = TileGrid(200, 100, tile_size=128, overlap=32, transform=T)
    # Spans x 40..180: wider than the overlap, so no tile sees it whole.
    building = px_box(40, 20, 180, 60)
    res = run_tiles(grid, [building])
    assert len(res) == 1
    assert bool(res.seam_merged[0])
    assert_same_shape(res.geoms[0], building)
    assert res.tile_ids[0] == "r0000_c0000;r0000_c0001"


def test_object_seen_whole_in_an_overlap_is_kept_once() -> None:
    grid = TileGrid(200, 100, tile_size=128, overlap=56, transform=T)
    building = px_box(80, 20, 120, 60)  # inside the overlap 72..128
    res = run_tiles(grid, [building])
    assert len(res) == 1
    assert not bool(res.seam_merged[0])
    assert res.pieces[0] == 2
    assert_same_shape(res.geoms[0], building)


def test_object_across_four_tiles_joins_into_one() -> None:
    grid = TileGrid(300, 300, tile_size=160, overlap=20, transform=T)
    # An L-shape over the corner where four tiles meet, with a courtyard.
    outer = shapely.union(px_box(100, 100, 220, 140), px_box(100, 100, 140, 230))
    building = shapely.Polygon(outer.exterior.coords, [px_box(110, 110, 130, 130).exterior.coords])
    res = run_tiles(grid, [building])
    assert len(res) == 1
    assert_same_shape(res.geoms[0], building)
    assert len(res.geoms[0].interiors) == 1


def test_neighbours_touching_across_a_seam_stay_apart() -> None:
    grid = TileGrid(200, 100, tile_size=128, overlap=32, transform=T)
    # Two buildings sharing a wall at x=100 (inside the overlap 96..128), both cut by tile edges.
    a, b = px_box(60, 20, 100, 60), px_box(100, 20, 170, 60)
    res = run_tiles(grid, [a, b])
    assert len(res) == 2
    areas = sorted(shapely.area(res.geoms).tolist())
    assert areas == sorted([a.area, b.area])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_result_does_not_depend_on_tile_order(seed: int) -> None:
    rng = np.random.default_rng(seed)
    grid = TileGrid(700, 500, tile_size=160, overlap=32, transform=T)
    objs = []
    for _ in range(60):
        c, r = rng.uniform(0, 680), rng.uniform(0, 480)
        w, h = rng.uniform(5, 90, 2)
        cand = px_box(c, r, min(c + w, 700), min(r + h, 500))
        if not any(cand.buffer(2).intersects(o) for o in objs):
            objs.append(cand)
    order = list(rng.permutation(len(grid)))
    a = run_tiles(grid, objs)
    b = run_tiles(grid, objs, order=[int(i) for i in order])
    assert len(a) == len(b) == len(objs)
    key = lambda g: (round(g.bounds[0], 6), round(g.bounds[1], 6))  # noqa: E731
    for ga, gb, go in zip(sorted(a.geoms, key=key), sorted(b.geoms, key=key), sorted(objs, key=key), strict=True):
        assert_same_shape(ga, gb)
        assert_same_shape(ga, go)


def test_pending_pool_stays_small_while_streaming() -> None:
    """Only pieces near seams wait; interior pieces leave at once (flat memory)."""
    grid = TileGrid(2000, 2000, tile_size=200, overlap=40, transform=T)
    merger = TileMerger(grid)
    most = 0
    total = 0
    for idx in range(len(grid)):
        w = grid[idx].window
        xs = np.arange(w.col_off + 2, w.col_off + w.width - 10, 12)
        ys = np.arange(w.row_off + 2, w.row_off + w.height - 10, 12)
        geoms = np.array([px_box(x, y, x + 8, y + 8) for x in xs for y in ys], dtype=object)
        total += len(merger.add(idx, geoms, np.ones(len(geoms))))
        most = max(most, merger.pending)
    total += len(merger.flush())
    per_tile = len(geoms)
    # At most about two rows of tiles' seam pieces wait, never the whole raster.
    assert most < 2 * grid.shape[1] * per_tile
    assert most < 0.2 * total


def test_adding_a_tile_twice_is_refused() -> None:
    grid = TileGrid(100, 100, tile_size=64, overlap=8, transform=T)
    merger = TileMerger(grid)
    merger.skip(0)
    with pytest.raises(ValueError, match="already"):
        merger.skip(0)


def test_pairs_tested_grow_linearly_not_quadratically() -> None:
    """Candidate pairs come from the spatial index: far-apart pieces are never compared."""
    counts = []
    for n in (4, 8):
        grid = TileGrid(n * 100, 300, tile_size=128, overlap=28, transform=T)
        objs = [px_box(x, r, x + 40, r + 40) for x in range(80, n * 100 - 60, 100) for r in (20, 120, 220)]
        merger = TileMerger(grid)
        for idx in range(len(grid)):
            pieces = [clip_to_tile(g, grid, idx) for g in objs]
            pieces = [p for p in pieces if p.area > 0]
            merger.add(idx, np.array(pieces, dtype=object), np.ones(len(pieces)))
        counts.append(merger.pairs_tested)
    assert counts[1] <= 2.5 * counts[0]
