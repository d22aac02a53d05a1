"""Overhead: everything but inference, as a share of the model's time (default model, on the engine
``extract`` picks: ONNX Runtime on the model's ONNX twin when onnxruntime is installed).

1. ``extract_buildings`` runs the default model over a synthetic raster (3712 px square at
   0.5 m, read at the model's working resolution: 9 x 9 tiles of 1024 px at 0.25 m), recording
   each tile's everything masks. Its ``segment``
   stage (forward pass, NMS, mask assembly) is the model's time.
2. The same call with a ``RecordedSegmenter`` that hands back the recorded masks: its wall time
   is everything else (read, stretch, select, vectorize, merge, write) with the model taken out.
3. The cost of writing the tiles' masks to the everything-mask cache (on by default in the CLI).

Usage: ``python benchmarks/bench_overhead.py --data DIR --out FILE.json [--weights PT] [--quick]``
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common


def run(data: Path, weights: Path | None, quick: bool = False) -> dict[str, Any]:
    import numpy as np

    from fastsam_geo.cache import MaskCache
    from fastsam_geo.oracle import RecordedSegmenter
    from fastsam_geo.pipeline import extract_buildings
    from fastsam_geo.segment import FastSAMSegmenter
    from fastsam_geo.segmenters import resolve_model

    res: dict[str, Any] = {"name": "overhead"}
    conf = 0.25
    if weights is None:  # only for trying the harness: a random FastSAM-s gives few real masks
        weights = common.random_fastsam_s(data / "weights")
        conf = 0.0005
        res["note"] = "default model missing: random FastSAM-s used (figures not meaningful)"
    size = 1920 if quick else 3712
    sc = common.scene(data, size, seed=9002)
    # the file and engine extract runs (engine auto); the engine's default batch size for the CPU
    model = resolve_model(weights)
    conf = model.conf if conf == 0.25 and model.conf else conf  # the model's calibrated threshold
    seg = FastSAMSegmenter(model.path, device="cpu", conf=conf)
    # Both runs read the raster at the model's working resolution, so that the replay finds the
    # recorded masks under the same tile ids (the replay segmenter carries no resolution of its own).
    gsd: float | str = model.gsd or "native"
    res.update(
        model=Path(seg.weights_path).name,
        engine=seg.engine,
        weights_sha256=seg.weights_sha256,
        raster=f"{size} x {size} px synthetic (seed 9002, {sc.buildings} buildings)",
        tiles=common.tiles_of(sc.raster),
        device=str(seg.device),
        batch_size=seg.batch_size,
        torch_threads=seg.threads,
        conf=conf,
    )
    n_model, n_replay = (1, 2) if quick else (3, 5)
    with tempfile.TemporaryDirectory(dir=data) as tmp:
        out = Path(tmp) / "buildings.gpkg"
        model_runs = []
        rec = None
        for i in range(n_model):
            rec = common.Recorder(seg)
            s = extract_buildings(sc.raster, out, segmenter=rec, overwrite=True, gsd=gsd)
            model_runs.append(s)
            common.log(f"overhead: model run {i + 1}: {s.seconds:.2f} s, stages {s.stage_seconds}")
        assert rec is not None
        recorded = rec.recorded
        counts = np.array([len(m) for m in recorded.values()])
        replay_runs = []
        cpu = []
        for i in range(n_replay):
            t_cpu = time.process_time()
            s = extract_buildings(sc.raster, out, segmenter=RecordedSegmenter(recorded), overwrite=True, gsd=gsd)
            cpu.append(time.process_time() - t_cpu)
            replay_runs.append(s)
            common.log(f"overhead: replay run {i + 1}: {s.seconds:.2f} s, stages {s.stage_seconds}")
            if s.buildings != model_runs[-1].buildings:
                raise RuntimeError(f"replay wrote {s.buildings} buildings, the model run {model_runs[-1].buildings}")
        cache = MaskCache(Path(tmp) / "cache", memory_items=0)
        t = time.perf_counter()
        for k, masks in enumerate(recorded.values()):
            cache.put(f"{k:064x}", masks)
        cache_put = time.perf_counter() - t

    model_s = [r.stage_seconds.get("segment", 0.0) for r in model_runs]
    model_total = [r.seconds for r in model_runs]
    replay_s = [r.seconds for r in replay_runs]
    model_med = statistics.median(model_s)
    replay_med = statistics.median(replay_s)
    added = [t - m for t, m in zip(model_total, model_s, strict=True)]
    best_replay = min(replay_runs, key=lambda r: r.seconds)
    res.update(
        tiles=len(recorded),  # at the working resolution
        gsd_m=model.gsd,
        masks_per_tile={"mean": round(float(counts.mean()), 1), "min": int(counts.min()), "max": int(counts.max())},
        buildings_written=model_runs[-1].buildings,
        model_seconds=common.stats(model_s),
        model_seconds_per_tile=round(model_med / len(recorded), 4),
        model_run_total_seconds=common.stats(model_total),
        model_run_stages=model_runs[-1].stage_seconds,
        replay_seconds=common.stats(replay_s),
        replay_cpu_seconds=common.stats(cpu),
        replay_stages=best_replay.stage_seconds,
        cache_write_seconds=round(cache_put, 4),
        overhead_share=round(replay_med / model_med, 4),
        overhead_share_with_cache=round((replay_med + cache_put) / model_med, 4),
        added_wall_share=round(statistics.median(added) / model_med, 4),
        target="<= 10 % of the ONNX Runtime model's time",
    )
    res["met"] = res["overhead_share"] <= 0.10
    return res


def main() -> None:
    ap = common.arg_parser(__doc__)
    a = ap.parse_args()
    common.write_fragment(a.out, run(a.data, common.default_weights(a.weights), a.quick))


if __name__ == "__main__":
    main()
