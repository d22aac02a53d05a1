"""Dask: more workers must mean faster. One run interleaving plain, one core, 1 and 2 workers, torch.

A synthetic town of 4096 x 4096 px (``fastsam-geo sample t.tif --size 4096 --seed 4242``, as in
issue 19) is extracted by the real command (``fastsam-geo -q extract t.tif o.gpkg --no-cache``,
the CLI's default model and tiles), each configuration in its own process, in rounds that
interleave the configurations so that a change of machine load colours all of them alike:

- ``plain``: one process (engine auto: ONNX Runtime on the model's ONNX twin);
- ``plain_1core``: the same pinned to one core (``taskset -c 0``; the engine follows the affinity);
- ``workers_1`` / ``workers_2``: ``--workers 1`` / ``--workers 2`` (LocalCluster, cluster start-up included);
- ``workers_1_1core``: ``--workers 1`` with the whole cluster pinned to one core, so that
  ``workers_2`` against it is the gain of a second core and a second worker (each worker
  process then runs one intra-op thread, as each of the two of ``--workers 2`` does);
- ``torch``: ``--engine torch``, the plain run on torch.

Each worker runs ``cores of its host // worker processes on it`` intra-op threads: ``--workers 1``
already has both cores of this machine, so ``--workers 2 / --workers 1`` is bounded by
``2 x plain / plain_1core`` (one process with two threads against two processes with one each).

The 1-minute load average is recorded before and after every run. Outputs of the Dask runs must
equal the plain run's (ids included). Then, measured in one process on a 1024 px town at tile
256: the tile work per tile, the pickled size of a tile result, and the serial part (merge +
write), for the paper estimate of 10^5 sheets.

Usage: ``python benchmarks/bench_dask.py --data DIR --out FILE.json [--quick] [--weights W] [--size PX]``
"""

from __future__ import annotations

import os
import pickle
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common

TILE, OVERLAP = 256, 32
CONFIGS: dict[str, tuple[list[str], list[str]]] = {  # name -> (command prefix, extra extract options)
    "plain": ([], []),
    "plain_1core": (["taskset", "-c", "0"], []),
    "workers_1": ([], ["--workers", "1"]),
    "workers_2": ([], ["--workers", "2"]),
    "workers_1_1core": (["taskset", "-c", "0"], ["--workers", "1"]),
    "torch": ([], ["--engine", "torch"]),
}


def _cli(prefix: list[str], *args: str) -> subprocess.CompletedProcess[str]:
    cmd = [*prefix, sys.executable, "-m", "fastsam_geo", *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=common.bench_env(), check=False)


def _extract(raster: Path, out: Path, name: str, weights: str | None) -> dict[str, Any]:
    """One run of configuration ``name``: wall time, load average before and after, summary."""
    import json

    prefix, extra = CONFIGS[name]
    # one view (--tta 1): the figures compare the executors, as recorded before views were fused by default
    args = ["-q", "extract", str(raster), str(out), "--no-cache", "--overwrite", "--json", "--tta", "1", *extra]
    if weights:
        args += ["-w", weights]
    load_before = round(os.getloadavg()[0], 2)
    t = time.perf_counter()
    proc = _cli(prefix, *args)
    wall = time.perf_counter() - t
    if proc.returncode != 0:
        raise RuntimeError(f"{name}: exit {proc.returncode}: {proc.stderr.strip()[-500:]}")
    summary = json.loads(proc.stdout)
    return {
        "wall_s": round(wall, 2),
        "load_before": load_before,
        "load_after": round(os.getloadavg()[0], 2),
        "buildings": summary["buildings"],
        "tiles": summary["tiles_total"],
        "engine": summary.get("engine"),
        "segment_s": summary["stage_seconds"].get("segment"),
    }


def interleaved(raster: Path, folder: Path, rounds: int, weights: str | None) -> dict[str, Any]:
    """Every configuration once per round, in turn; the plain run's output kept for comparison."""
    names = [n for n in CONFIGS if not CONFIGS[n][0] or shutil.which("taskset")]
    runs: dict[str, list[dict[str, Any]]] = {n: [] for n in names}
    for k in range(rounds):
        for name in names:
            r = _extract(raster, folder / f"dask_{name}.gpkg", name, weights)
            common.log(f"dask: round {k + 1} {name}: {r['wall_s']} s (load {r['load_before']} -> {r['load_after']})")
            runs[name].append(r)
    same = {n: _same(folder / "dask_plain.gpkg", folder / f"dask_{n}.gpkg") for n in ("workers_1", "workers_2")}
    med = {n: statistics.median(r["wall_s"] for r in rs) for n, rs in runs.items()}
    return {"runs": runs, "median_s": med, "outputs_equal": same}


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
    from fastsam_geo.segmenters import resolve_model
    from fastsam_geo.sink import ExtractSummary, RunSink
    from fastsam_geo.tilework import TileContext, process_tile

    options = build_options(**{k: v for k, v in kw.items() if k not in ("device",)}, device="cpu", tta=1)
    plan = plan_run(raster, folder / "serial.gpkg", options)
    seg = FastSAMSegmenter(resolve_model(kw["weights"]).path, device="cpu")  # the engine extract picks
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
        sink = RunSink(plan_k, ExtractSummary(str(raster), str(out))).open(plan_k.params("FastSAM", None))
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


def run(data: Path, weights: str | None, quick: bool = False, size: int | None = None) -> dict[str, Any]:
    size = size or (1024 if quick else 4096)
    raster = data / f"dask_town_{size}.tif"
    if not raster.exists():
        made = _cli([], "sample", str(raster), "--size", str(size), "--seed", "4242", "--overwrite")
        if made.returncode != 0:
            raise RuntimeError(made.stderr.strip())
    rounds = 1 if quick else 2
    res = interleaved(raster, data, rounds, weights)
    med = res["median_s"]
    tiles = res["runs"]["plain"][0]["tiles"]
    sc = common.scene(data, 768 if quick else 1024, seed=9010)
    serial_weights = Path(weights) if weights else common.DEFAULT_WEIGHTS
    kw: dict[str, Any] = dict(weights=serial_weights, tile_size=TILE, overlap=OVERLAP, device="cpu")
    serial = _serial_part(sc.raster, kw, data)
    merge_us = None
    prev = common.BENCH / "results.json"
    if prev.exists():
        import json

        rows = json.loads(prev.read_text()).get("benchmarks", {}).get("merge_scaling", {}).get("rows", [])
        merge_us = rows[-1]["us_per_polygon"] if rows else None
    speedup = round(med["workers_1"] / med["workers_2"], 2)
    w1_vs_1core = round(med["workers_1"] / med["plain_1core"], 3) if "plain_1core" in med else None
    one_core = "workers_1_1core" in med and "plain_1core" in med
    core_scaling = round(med["workers_1_1core"] / med["workers_2"], 2) if one_core else None
    w1_1core_vs_1core = round(med["workers_1_1core"] / med["plain_1core"], 3) if one_core else None
    bound = round(2 * med["plain"] / med["plain_1core"], 2) if "plain_1core" in med else None
    ort_vs_torch = round(med["torch"] / med["plain"], 2)
    equal = all(res["outputs_equal"].values())
    return {
        "name": "dask",
        "raster": f"{size} x {size} px synthetic town (fastsam-geo sample --seed 4242), CLI defaults, -q --no-cache",
        "tiles": tiles,
        "rounds": rounds,
        "cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        **res,
        "speedup_2_vs_1_workers": speedup,
        "workers_1_vs_plain_1core": w1_vs_1core,
        "speedup_2_workers_vs_1_worker_on_1_core": core_scaling,
        "workers_1_1core_vs_plain_1core": w1_1core_vs_1core,
        "speedup_2_vs_1_workers_bound": bound,
        "torch_vs_onnx_plain": ort_vs_torch,
        "serial": serial,
        "estimate": estimate(serial, merge_us),
        "target": "--workers 2 / --workers 1 >= 1.8x; --workers 1 within 10 % of a plain one-core run; equal outputs",
        "met_on_one_core_per_worker": bool(equal and core_scaling and core_scaling >= 1.8),
        "met": equal and speedup >= 1.8 and (w1_vs_1core is None or w1_vs_1core <= 1.10),
    }


def main() -> None:
    ap = common.arg_parser(__doc__)
    ap.add_argument("--size", type=int, default=None, help="raster size in px (default 4096; 1024 with --quick)")
    a = ap.parse_args()
    common.write_fragment(a.out, run(a.data, a.weights, a.quick, a.size))


if __name__ == "__main__":
    main()
