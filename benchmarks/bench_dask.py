"""Dask: one process against a LocalCluster of 1 and 2 worker processes; the figures of a paper
estimate for a national orthophoto programme.

A synthetic 1024 px town (0.5 m) is extracted with the default model at tile 256 (overlap 32,
25 tiles): in this process (``LocalExecutor``), then with ``client=`` on a LocalCluster of 1 and
of 2 worker processes (threads_per_worker=1; cluster start-up timed apart; each Dask run
includes the worker plugin loading the model). The outputs must be equal. Then, measured in
this process: the tile work per tile (read, segment, select, vectorize), the pickled size of a
tile result (what a worker sends back), and the serial part, merge + write (``RunSink.add``
then ``finish``) in polygons per second, fed the recorded results.

Usage: ``python benchmarks/bench_dask.py --data DIR --out FILE.json [--quick] [--weights W]``
"""

from __future__ import annotations

import pickle
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common

TILE, OVERLAP = 256, 32


def _dask_run(raster: Path, out: Path, n_workers: int, kw: dict[str, Any]) -> dict[str, Any]:
    import distributed

    from fastsam_geo.pipeline import extract_buildings

    t0 = time.perf_counter()
    cluster = distributed.LocalCluster(
        n_workers=n_workers, threads_per_worker=1, processes=True, dashboard_address=":0"
    )
    client = distributed.Client(cluster, timeout="60s")
    try:
        client.wait_for_workers(n_workers, timeout=180)
        start = time.perf_counter() - t0
        t1 = time.perf_counter()
        s = extract_buildings(raster, out, client=client, overwrite=True, **kw)
        wall = time.perf_counter() - t1
    finally:
        client.close()
        cluster.close()
    return {
        "workers": n_workers,
        "cluster_start_s": round(start, 2),
        "wall_s": round(wall, 2),
        "buildings": s.buildings,
    }


def _same(a: Path, b: Path) -> bool:
    import geopandas as gpd
    import shapely

    x = gpd.read_file(a, layer="buildings").sort_values("id").reset_index(drop=True)
    y = gpd.read_file(b, layer="buildings").sort_values("id").reset_index(drop=True)
    if len(x) != len(y):
        return False
    geo = bool(
        shapely.equals_exact(shapely.normalize(x.geometry.values), shapely.normalize(y.geometry.values), 1e-6).all()
    )
    cols = [c for c in x.columns if c != "geometry"]
    return geo and all(list(x[c]) == list(y[c]) for c in cols)


def _serial_part(raster: Path, kw: dict[str, Any], folder: Path) -> dict[str, Any]:
    """Tile work per tile, bytes per pickled result, and the merge + write rate, in this process."""
    from fastsam_geo.pipeline import build_options
    from fastsam_geo.plan import open_source, plan_run
    from fastsam_geo.segment import FastSAMSegmenter
    from fastsam_geo.sink import ExtractSummary, RunSink
    from fastsam_geo.tilework import TileContext, process_tile

    options = build_options(**{k: v for k, v in kw.items() if k not in ("device",)}, device="cpu")
    plan = plan_run(raster, folder / "serial.gpkg", options)
    seg = FastSAMSegmenter(kw["weights"], device="cpu")
    ctx = TileContext.of(plan)
    results, tile_s = [], []
    with open_source(raster, options.tiling) as src:
        for spec in plan.specs:
            t = time.perf_counter()
            results.append(process_tile(spec, ctx, seg, src))
            tile_s.append(time.perf_counter() - t)
    sizes = [len(pickle.dumps(r)) for r in results]
    polys = sum(len(r.geoms) for r in results)
    rates = []
    for k in range(3):
        out = folder / f"serial{k}.gpkg"
        out.unlink(missing_ok=True)
        plan_k = plan_run(raster, out, options)
        t = time.perf_counter()
        sink = RunSink(plan_k, ExtractSummary(str(raster), str(out))).open(plan_k.params("FastSAMSegmenter", None))
        for r in results:
            sink.add(r)
        sink.finish()
        sink.close(None)
        rates.append(polys / (time.perf_counter() - t))
    post = [r.seconds.get("select", 0) + r.seconds.get("vectorize", 0) + r.seconds.get("read", 0) for r in results]
    return {
        "tile_seconds": common.stats(tile_s),
        "tile_post_model_seconds": common.stats(post),  # read + select + vectorize: the CPU part of a tile
        "tile_result_bytes": common.stats(sizes),
        "polygons_per_tile": round(polys / len(results), 1),
        "sink_polygons_per_s": common.stats(rates),  # merge + write + ledger, the serial part
    }


def estimate(serial: dict[str, Any], merge_us_per_polygon: float | None, gpu_forward_s: float = 0.05) -> dict[str, Any]:
    """10^5 sheets of 5000 x 5000 px (1 km at 0.2 m) on 100 GPU workers, tile 1024 / overlap 128.

    ``gpu_forward_s`` is an assumption (no GPU here): FastSAM-s at 1024 px, batch 4, per tile.
    """
    import math

    stride = 1024 - 128
    per_side_mosaic = 5000 / stride  # a mosaic's tiles run across sheet edges
    tiles = round(1e5 * per_side_mosaic**2)
    worker_tile_s = gpu_forward_s + serial["tile_post_model_seconds"]["median"]
    workers = 100
    tile_work_h = tiles * worker_tile_s / workers / 3600
    # polygons per 1024 tile: scale the measured density (per 256 px tile) by the area ratio
    polys_per_tile = serial["polygons_per_tile"] * (1024 / TILE) ** 2
    arrival = workers / worker_tile_s * polys_per_tile  # polygons/s reaching the merge
    sink_rate = serial["sink_polygons_per_s"]["median"]
    merge_rate = 1e6 / merge_us_per_polygon if merge_us_per_polygon else None
    serial_h = tiles * polys_per_tile / sink_rate / 3600
    return {
        "sheets": 100000,
        "tiles": tiles,
        "gpu_forward_s_assumed": gpu_forward_s,
        "worker_tile_s": round(worker_tile_s, 4),
        "tile_work_hours_on_100": round(tile_work_h, 1),
        "polygons_per_1024_tile": round(polys_per_tile),
        "polygons_arriving_per_s": round(arrival),
        "sink_polygons_per_s": round(sink_rate),
        "merge_only_polygons_per_s": round(merge_rate) if merge_rate else None,
        "serial_hours": round(serial_h, 1),
        "workers_where_serial_bounds": math.floor(sink_rate / (polys_per_tile / worker_tile_s)),
        "result_bytes_per_1024_tile": round(serial["tile_result_bytes"]["median"] * (1024 / TILE) ** 2),
    }


def run(data: Path, weights: Path, quick: bool = False) -> dict[str, Any]:
    import os

    size = 768 if quick else 1024
    sc = common.scene(data, size, seed=9010)
    kw: dict[str, Any] = dict(weights=weights, tile_size=TILE, overlap=OVERLAP, device="cpu")
    from fastsam_geo.pipeline import extract_buildings

    t = time.perf_counter()
    local = extract_buildings(sc.raster, data / "dask_local.gpkg", overwrite=True, **kw)
    local_s = time.perf_counter() - t
    runs = [_dask_run(sc.raster, data / f"dask_{n}.gpkg", n, kw) for n in (1, 2)]
    equal = all(_same(data / "dask_local.gpkg", data / f"dask_{n}.gpkg") for n in (1, 2))
    serial = _serial_part(sc.raster, kw, data)
    merge_us = None
    prev = common.BENCH / "results.json"
    if prev.exists():
        import json

        rows = json.loads(prev.read_text()).get("benchmarks", {}).get("merge_scaling", {}).get("rows", [])
        merge_us = rows[-1]["us_per_polygon"] if rows else None
    return {
        "name": "dask",
        "raster": f"{size} x {size} px synthetic (seed 9010), tile {TILE}, overlap {OVERLAP}",
        "tiles": local.tiles_total,
        "cores": os.cpu_count(),
        "local_wall_s": round(local_s, 2),
        "dask_runs": runs,
        "speedup_2_vs_1_workers": round(runs[0]["wall_s"] / runs[1]["wall_s"], 2),
        "outputs_equal": equal,
        "serial": serial,
        "estimate": estimate(serial, merge_us),
        "target": "1 and 2 Dask workers give the single-process output; figures for the 10^5-sheet estimate",
        "met": equal,
    }


def main() -> None:
    ap = common.arg_parser(__doc__)
    a = ap.parse_args()
    weights = common.default_weights(a.weights) or common.random_fastsam_s(a.data)
    common.write_fragment(a.out, run(a.data, weights, a.quick))


if __name__ == "__main__":
    main()
