"""Property tests of the tile grid: windows, cores, overlap, the last tile, errors."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from affine import Affine
from hypothesis import given, settings
from hypothesis import strategies as st
from rasterio.windows import Window
from rasterio.windows import transform as window_transform

from fastsam_geo.errors import TilingError
from fastsam_geo.tiling import TileGrid, axis_cores, axis_starts

# rasterio.windows multiplies Affines with `*`, which affine 3 flags on every call.
pytestmark = pytest.mark.filterwarnings("ignore:Use `@` matmul:PendingDeprecationWarning")

TRANSFORM = Affine(0.5, 0.0, 500000.0, 0.0, -0.5, 4650000.0)


@st.composite
def grids(draw: st.DrawFn, max_side: int = 5000, max_tile: int = 2048) -> tuple[int, int, int, int]:
    """``(width, height, tile_size, overlap)`` with ``0 <= overlap < tile_size``."""
    width = draw(st.integers(1, max_side))
    height = draw(st.integers(1, max_side))
    tile = draw(st.integers(16, max_tile))
    overlap = draw(st.integers(0, tile - 1))
    return width, height, tile, overlap


def _check_axis(starts: np.ndarray, cores: np.ndarray, size: int, tile: int, overlap: int) -> None:
    """1-D rules of one axis of the grid."""
    length = min(tile, size)
    assert starts[0] == 0
    assert np.all(np.diff(starts) > 0), "starts must increase strictly"
    # Inside the raster, the last window moved back to end exactly at the border (not padded).
    assert np.all(starts >= 0) and np.all(starts + length <= size)
    assert starts[-1] + length == size
    # Covered: no gap between consecutive windows.
    assert np.all(starts[1:] <= starts[:-1] + length)
    if size > tile:
        # Neighbours overlap by at least `overlap`; all but the last step are exactly the stride.
        assert np.all(starts[:-1] + length - starts[1:] >= overlap)
        assert np.all(np.diff(starts)[:-1] == tile - overlap)
    else:
        assert starts.tolist() == [0]
    # Cores: a partition of [0, size) into non-empty intervals, each inside its own window.
    assert cores.shape == (len(starts), 2)
    assert cores[0, 0] == 0 and cores[-1, 1] == size
    assert np.all(cores[1:, 0] == cores[:-1, 1])
    assert np.all(cores[:, 1] > cores[:, 0])
    assert np.all(cores[:, 0] >= starts) and np.all(cores[:, 1] <= starts + length)


@settings(max_examples=200, deadline=None)
@given(grids(), st.data())
def test_grid_properties_full_range(args: tuple[int, int, int, int], data: st.DataObject) -> None:
    width, height, tile, overlap = args
    grid = TileGrid(width, height, tile_size=tile, overlap=overlap, transform=TRANSFORM)
    _check_axis(grid.col_starts, grid.col_cores, width, tile, overlap)
    _check_axis(grid.row_starts, grid.row_cores, height, tile, overlap)
    n_rows, n_cols = grid.shape
    assert len(grid) == n_rows * n_cols
    # Core areas sum to the raster area.
    core_w = grid.col_cores[:, 1] - grid.col_cores[:, 0]
    core_h = grid.row_cores[:, 1] - grid.row_cores[:, 0]
    assert int(core_h.sum()) * int(core_w.sum()) == width * height
    # The specs are the product of the two axes (so the 1-D rules carry over to 2-D): check
    # the corners and a sample of tiles.
    sample = {0, len(grid) - 1, n_cols - 1, len(grid) - n_cols}
    sample |= set(data.draw(st.lists(st.integers(0, len(grid) - 1), max_size=20)))
    for i in sample:
        spec = grid[i]
        row, col = divmod(i, n_cols)
        assert (spec.row, spec.col, spec.index) == (row, col, i)
        assert spec.id == f"r{row:04d}_c{col:04d}"
        assert spec.window == Window(
            int(grid.col_starts[col]), int(grid.row_starts[row]), min(tile, width), min(tile, height)
        )
        (c0, c1), (r0, r1) = grid.col_cores[col], grid.row_cores[row]
        assert spec.core == Window(int(c0), int(r0), int(c1 - c0), int(r1 - r0))
        assert spec.transform == window_transform(spec.window, TRANSFORM)
        assert spec.transform.c == TRANSFORM.c + spec.window.col_off * TRANSFORM.a
        assert spec.transform.f == TRANSFORM.f + spec.window.row_off * TRANSFORM.e
    with pytest.raises(IndexError):
        grid[len(grid)]


@settings(max_examples=120, deadline=None)
@given(grids(max_side=700, max_tile=400), st.data())
def test_grid_exact_2d(args: tuple[int, int, int, int], data: st.DataObject) -> None:
    """On grids small enough to enumerate: pixel-exact coverage and partition by every tile."""
    width, height, tile, overlap = args
    grid = TileGrid(width, height, tile_size=tile, overlap=overlap)
    windows = np.zeros((height, width), np.int32)
    cores = np.zeros((height, width), np.int32)
    specs = list(grid)
    assert len(specs) == len(grid)
    core_area = 0
    for spec in specs:
        w, c = spec.window, spec.core
        assert w.col_off >= 0 and w.col_off + w.width <= width
        assert w.row_off >= 0 and w.row_off + w.height <= height
        # Not padded: every window has the full tile size (or the raster's, if smaller).
        assert (w.width, w.height) == (min(tile, width), min(tile, height))
        # The core lies inside its own window.
        assert w.col_off <= c.col_off and c.col_off + c.width <= w.col_off + w.width
        assert w.row_off <= c.row_off and c.row_off + c.height <= w.row_off + w.height
        windows[w.row_off : w.row_off + w.height, w.col_off : w.col_off + w.width] += 1
        cores[c.row_off : c.row_off + c.height, c.col_off : c.col_off + c.width] += 1
        core_area += c.width * c.height
    assert windows.min() >= 1, "some pixel is in no window"
    assert (cores == 1).all(), "cores must cover every pixel exactly once"
    assert core_area == width * height
    # Horizontal and vertical neighbours overlap by at least `overlap` when the raster is bigger.
    n_rows, n_cols = grid.shape
    for spec in specs:
        if spec.col + 1 < n_cols:
            right = grid[spec.index + 1].window
            assert spec.window.col_off + spec.window.width - right.col_off >= overlap
        if spec.row + 1 < n_rows:
            below = grid[spec.index + n_cols].window
            assert spec.window.row_off + spec.window.height - below.row_off >= overlap

    # indices_intersecting agrees with a brute-force check over every tile.
    # Integer boxes hit window edges exactly (the half-open boundary); floats fall in between.
    def coord(lo: float, hi: float) -> st.SearchStrategy[float]:
        return st.integers(int(lo), int(hi)).map(float) | st.floats(lo, hi, allow_nan=False)

    c0 = data.draw(coord(-50, width + 50))
    r0 = data.draw(coord(-50, height + 50))
    c1 = c0 + data.draw(coord(1, width))
    r1 = r0 + data.draw(coord(1, height))
    expected = [
        s.index
        for s in specs
        if s.window.col_off < c1
        and s.window.col_off + s.window.width > c0
        and s.window.row_off < r1
        and s.window.row_off + s.window.height > r0
    ]
    got = grid.indices_intersecting(c0, r0, c1, r1)
    assert sorted(got.tolist()) == expected


def test_indices_intersecting_on_window_edges() -> None:
    """Boxes whose edges fall exactly on window starts and ends: half-open on both sides."""
    grid = TileGrid(1000, 600, tile_size=256, overlap=32)
    specs = list(grid)
    edges_c = sorted({0, 1000, *grid.col_starts.tolist(), *(grid.col_starts + 256).tolist()})
    edges_r = sorted({0, 600, *grid.row_starts.tolist(), *(grid.row_starts + 256).tolist()})
    for c0, c1 in itertools.combinations(edges_c, 2):
        for r0, r1 in itertools.combinations(edges_r, 2):
            expected = [
                s.index
                for s in specs
                if s.window.col_off < c1
                and s.window.col_off + s.window.width > c0
                and s.window.row_off < r1
                and s.window.row_off + s.window.height > r0
            ]
            assert sorted(grid.indices_intersecting(c0, r0, c1, r1).tolist()) == expected
    assert grid.indices_intersecting(0, 0, 224, 224).tolist() == [0]
    assert grid.indices_intersecting(256, 256, 300, 300).tolist() == [6]
    assert grid.indices_intersecting(255, 255, 300, 300).tolist() == [0, 1, 5, 6]
    assert grid.indices_intersecting(-10, -10, 0, 0).tolist() == []


@settings(max_examples=100, deadline=None)
@given(st.integers(16, 2048), st.data())
def test_raster_smaller_than_a_tile_gives_one_tile(tile: int, data: st.DataObject) -> None:
    width = data.draw(st.integers(1, tile))
    height = data.draw(st.integers(1, tile))
    overlap = data.draw(st.integers(0, tile - 1))
    grid = TileGrid(width, height, tile_size=tile, overlap=overlap)
    assert len(grid) == 1 and grid.shape == (1, 1)
    spec = grid[0]
    assert spec.window == Window(0, 0, width, height)
    assert spec.core == Window(0, 0, width, height)


def test_last_tile_is_moved_back_not_padded() -> None:
    grid = TileGrid(1000, 300, tile_size=256, overlap=32)
    assert grid.col_starts.tolist() == [0, 224, 448, 672, 744]
    assert grid.row_starts.tolist() == [0, 44]
    last = grid[len(grid) - 1].window
    assert (last.col_off, last.row_off, last.width, last.height) == (744, 44, 256, 256)
    assert axis_cores(grid.col_starts, 256, 1000).tolist() == [
        [0, 240],
        [240, 464],
        [464, 688],
        [688, 836],
        [836, 1000],
    ]


def test_zero_overlap_tiles_abut() -> None:
    assert axis_starts(1024, 256, 0).tolist() == [0, 256, 512, 768]
    assert axis_cores(axis_starts(1024, 256, 0), 256, 1024)[:, 0].tolist() == [0, 256, 512, 768]


def test_bounds_use_the_transform() -> None:
    grid = TileGrid(1000, 600, tile_size=256, overlap=32, transform=TRANSFORM)
    left, bottom, right, top = grid.window_bounds(0)
    assert (left, top) == (500000.0, 4650000.0)
    assert (right, bottom) == (500000.0 + 128.0, 4650000.0 - 128.0)
    left, bottom, right, top = grid.core_bounds(len(grid) - 1)
    assert (right, bottom) == (500000.0 + 500.0, 4650000.0 - 300.0)


@pytest.mark.parametrize(
    ("width", "height", "tile", "overlap", "needle"),
    [
        (100, 100, 64, 64, "overlap=64"),  # overlap == tile
        (100, 100, 64, 100, "overlap=100"),  # overlap > tile
        (100, 100, 64, -1, "overlap=-1"),
        (100, 100, 0, 0, "tile_size=0"),
        (100, 100, -16, 0, "tile_size=-16"),
        (0, 100, 64, 8, "size 0"),
        (100, 0, 64, 8, "size 0"),
    ],
)
def test_bad_arguments_raise_tiling_error(
    width: int, height: int, tile: int, overlap: int, needle: str
) -> None:
    with pytest.raises(TilingError, match=needle) as info:
        TileGrid(width, height, tile_size=tile, overlap=overlap)
    assert isinstance(info.value, ValueError)
    assert "\n" not in str(info.value)
