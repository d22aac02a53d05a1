"""Merge scaling: TileMerger over 10^4, 10^5 and 10^6 polygons from a tile grid.

A virtual raster (0.5 m pixels) is covered by a lattice of buildings, one per 61 px cell, each a
real traced outline (pixel-edge polygon of a synthetic footprint, holes and L-shapes included)
with a little jitter, plus a sparser lattice of large buildings wider than the tile overlap.
Each 1024 px tile (overlap 128) sees the buildings that reach into its window, clipped to the
window, as a tile's segmenter would: about 210 polygons per tile, those in the overlaps seen two
to four times, those crossing a window edge cut. The tiles are fed to ``TileMerger.add`` in
row-major order (as the pipeline does), then ``flush``; only the merger is timed (making the
pieces is not): the fastest of 3 runs for 10^4 and 10^5 polygons, one run for 10^6. The
exponent ``b`` of ``time ~ N^b`` is fitted by least squares on log-log; N log N from 10^4 to
10^6 is b = 1.09.

Usage: ``python benchmarks/bench_merge.py --data DIR --out FILE.json [--quick]``
"""

from __future__ import annotations

import math
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common

CELL = 61  # px between buildings; not a divisor of the tile stride, so tile edges cut buildings
SHIFT = 23  # px: the lattice's offset from the raster's corner
X0, Y0, PX = 500000.0, 4650000.0, 0.5


def templates(max_extent: float = CELL - 10) -> list[Any]:
    """Traced outlines (pixel space, centred on the origin) of a synthetic scene's footprints."""
    import numpy as np
    import shapely
    from affine import Affine
    from rasterio.features import rasterize

    from fastsam_geo.synthetic import plan_scene
    from fastsam_geo.vectorize import mask_to_geometry

    out = []
    for b in plan_scene(1024, 1024, seed=21).footprints:
        x0, y0, x1, y1 = b.polygon.bounds
        if max(x1 - x0, y1 - y0) > max_extent:
            continue
        c0, r0 = math.floor(x0), math.floor(y0)
        w, h = math.ceil(x1) - c0, math.ceil(y1) - r0
        crop = rasterize([b.polygon], out_shape=(h, w), transform=Affine.translation(c0, r0)).astype(bool)
        g = mask_to_geometry(crop, Affine.translation(c0, r0))
        if g is None or g.geom_type != "Polygon":
            continue
        cx, cy = (c0 + w / 2), (r0 + h / 2)
        out.append(shapely.transform(g, lambda c, cx=cx, cy=cy: c - np.array([cx, cy])))
    return out


class Lattice:
    """Buildings on a lattice of ``cell`` px cells; each tile's clipped pieces in map coordinates."""

    def __init__(self, shapes: list[Any], cell: int, shift: int, scale: float = 1.0, tag: int = 0) -> None:
        import numpy as np
        import shapely

        self.cell, self.shift, self.tag = cell, shift, tag
        self.shapes = np.array([shapely.transform(g, lambda c: c * scale) for g in shapes], dtype=object)
        self.coords = [shapely.get_coordinates(g) for g in self.shapes]
        self.reach = float(np.abs(shapely.bounds(self.shapes)).max()) + 5  # farthest vertex, plus jitter

    def pieces(self, window: Any, width: int, height: int, avoid: Lattice | None = None) -> tuple[Any, Any]:
        """The polygons a tile sees in ``window`` (map coordinates), and their buildings' ids.

        With ``avoid``, cells within reach of that lattice's buildings stay empty (no overlaps).
        """
        import numpy as np
        import shapely

        cell, shift, reach = self.cell, self.shift, self.reach
        c0, r0 = float(window.col_off), float(window.row_off)
        c1, r1 = c0 + float(window.width), r0 + float(window.height)
        i = np.arange(math.floor((c0 - shift - reach) / cell), math.ceil((c1 - shift + reach) / cell) + 1)
        j = np.arange(math.floor((r0 - shift - reach) / cell), math.ceil((r1 - shift + reach) / cell) + 1)
        ii, jj = (a.ravel() for a in np.meshgrid(i, j))
        h = (ii * 73856093) ^ (jj * 19349663) ^ self.tag
        k = h % len(self.shapes)
        cx = shift + ii * cell + cell / 2 + ((h >> 8) % 9) - 4
        cy = shift + jj * cell + cell / 2 + ((h >> 12) % 9) - 4
        # cells whose building reaches into the window and whose centre lies in the raster
        keep = (cx + reach > c0) & (cx - reach < c1) & (cy + reach > r0) & (cy - reach < r1)
        keep &= (cx > 0) & (cx < width) & (cy > 0) & (cy < height)
        if avoid is not None:
            gap = avoid.reach + reach + 8
            bi = np.floor((cx - avoid.shift) / avoid.cell)
            bj = np.floor((cy - avoid.shift) / avoid.cell)
            bcx, bcy = avoid.shift + (bi + 0.5) * avoid.cell, avoid.shift + (bj + 0.5) * avoid.cell
            keep &= (np.abs(cx - bcx) > gap) | (np.abs(cy - bcy) > gap)
        ii, jj, k, cx, cy = ii[keep], jj[keep], k[keep], cx[keep], cy[keep]
        if not len(k):
            return np.empty(0, object), np.zeros(0, np.int64)
        geoms = self.shapes[k].copy()
        lengths = np.array([len(self.coords[x]) for x in k])
        coords = np.concatenate([self.coords[x] for x in k])
        px = coords + np.column_stack([cx, cy])[np.repeat(np.arange(len(k)), lengths)]
        geoms = shapely.set_coordinates(geoms, np.column_stack([X0 + PX * px[:, 0], Y0 - PX * px[:, 1]]))
        win = shapely.box(X0 + PX * c0, Y0 - PX * r1, X0 + PX * c1, Y0 - PX * r0)
        wb = win.bounds
        b = shapely.bounds(geoms)
        cut = ~((b[:, 0] >= wb[0]) & (b[:, 2] <= wb[2]) & (b[:, 1] >= wb[1]) & (b[:, 3] <= wb[3]))
        geoms[cut] = shapely.intersection(geoms[cut], win)
        ok = ~shapely.is_empty(geoms) & (shapely.area(geoms) > 0)
        return geoms[ok], (ii[ok] * 1_000_003 + jj[ok]) * 2 + self.tag


class Town:
    """Small buildings one per 61 px cell, and large ones (3.5 x, up to 180 px) one per 487 px cell.

    Neither cell size divides the tile stride (896 px), so tile edges cut buildings anywhere;
    the large ones are wider than the 128 px overlap, so no tile sees them whole and their
    pieces must be joined (``seam_merged``).
    """

    def __init__(self) -> None:
        shapes = templates()
        self.lattices = [Lattice(shapes, CELL, SHIFT, 1.0, 0), Lattice(shapes, 487, 101, 3.5, 1)]
        self.coords = self.lattices[0].coords

    def pieces(self, window: Any, width: int, height: int) -> tuple[Any, Any]:
        import numpy as np

        small, big = self.lattices
        parts = [small.pieces(window, width, height, avoid=big), big.pieces(window, width, height)]
        return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def merge_once(town: Town, tiles_per_side: int, repeats: int = 1) -> dict[str, Any]:
    """Feed every tile of a ``tiles_per_side``-square grid to a TileMerger; time the merger only.

    The pieces are made first (not timed); the merge runs ``repeats`` times, the fastest counts.
    """
    import numpy as np
    from affine import Affine

    from fastsam_geo.merge import TileMerger
    from fastsam_geo.tiling import TileGrid

    size = common.TILE + (tiles_per_side - 1) * (common.TILE - common.OVERLAP)
    grid = TileGrid(size, size, common.TILE, common.OVERLAP, Affine(PX, 0, X0, 0, -PX, Y0))
    rng = np.random.default_rng(1)
    t_gen = time.perf_counter()
    tiles = []
    objects: set[int] = set()
    for spec in grid:
        geoms, ids = town.pieces(spec.window, size, size)
        objects.update(ids.tolist())
        tiles.append((spec.index, geoms, rng.uniform(0.3, 0.95, len(geoms)).astype(np.float32)))
    t_gen = time.perf_counter() - t_gen
    times = []
    for _ in range(repeats):
        merger = TileMerger(grid)
        n_out = seam = 0
        t = time.perf_counter()
        for index, geoms, scores in tiles:
            out = merger.add(index, geoms, scores)
            n_out += len(out)
            seam += int(out.seam_merged.sum())
        out = merger.flush()
        times.append(time.perf_counter() - t)
        n_out += len(out)
        seam += int(out.seam_merged.sum())
    n_in = sum(len(g) for _, g, _ in tiles)
    return {
        "tiles": len(grid),
        "raster_px": size,
        "polygons_in": n_in,
        "objects_out": n_out,
        "true_objects": len(objects),
        "seam_merged": seam,
        "pairs_tested": merger.pairs_tested,
        "merge_seconds": round(min(times), 3),
        "merge_runs": [round(t, 3) for t in times],
        "generate_seconds": round(t_gen, 3),
        "us_per_polygon": round(1e6 * min(times) / max(n_in, 1), 2),
    }


def run(data: Path, quick: bool = False) -> dict[str, Any]:
    import numpy as np

    town = Town()
    targets = [10**3, 10**4, 10**5] if quick else [10**4, 10**5, 10**6]
    rows = []
    from affine import Affine

    from fastsam_geo.tiling import TileGrid

    probe = TileGrid(2816, 2816, common.TILE, common.OVERLAP, Affine(PX, 0, X0, 0, -PX, Y0))
    per_tile = len(town.pieces(probe[4].window, 2816, 2816)[0])  # pieces seen by an interior tile
    for n in targets:
        side = max(round(math.sqrt(n / per_tile)), 1)
        r = merge_once(town, side, repeats=1 if n >= 10**6 else 3)
        r["target_n"] = n
        rows.append(r)
        common.log(f"merge: {r['polygons_in']} polygons in {r['merge_seconds']} s ({r})")
        del r  # (the pieces of the largest size are freed before the next)
    n_arr = np.array([r["polygons_in"] for r in rows], float)
    t_arr = np.array([r["merge_seconds"] for r in rows], float)
    b = float(np.polyfit(np.log(n_arr), np.log(t_arr), 1)[0])
    pairwise = [
        round(math.log(t_arr[i + 1] / t_arr[i]) / math.log(n_arr[i + 1] / n_arr[i]), 3) for i in range(len(rows) - 1)
    ]
    nlogn = math.log((n_arr[-1] * math.log(n_arr[-1])) / (n_arr[0] * math.log(n_arr[0]))) / math.log(
        n_arr[-1] / n_arr[0]
    )
    largest = rows[-1]
    return {
        "name": "merge_scaling",
        "templates": len(town.coords),
        "pieces_per_interior_tile": per_tile,
        "vertices_per_template_mean": round(float(np.mean([len(c) for c in town.coords])), 1),
        "rows": rows,
        "exponent": round(b, 3),
        "pairwise_exponents": pairwise,
        "nlogn_exponent": round(nlogn, 3),
        "target": "time grows as N log N or better (exponent <= N log N's); 10^6 polygons in < 60 s",
        "met_scaling": b <= nlogn + 0.02,
        "met_1e6": (not quick) and largest["merge_seconds"] < 60.0,
        "met": b <= nlogn + 0.02 and ((not quick) and largest["merge_seconds"] < 60.0),
    }


def main() -> None:
    ap = common.arg_parser(__doc__, weights_help="(unused)")
    a = ap.parse_args()
    common.write_fragment(a.out, run(a.data, a.quick))


if __name__ == "__main__":
    main()
