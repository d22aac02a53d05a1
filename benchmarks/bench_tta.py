"""Test-time augmentation (``--tta``): what 1, 2, 4, 8 and 12 views of each tile cost, side by side.

The default model (auto engine: its ONNX twin) runs ``extract_buildings`` over a synthetic town
at every view count, the counts interleaved in each round so that a change of load on the shared
machine hits them alike; median of the rounds, no mask cache. Reported: seconds per run and per
tile, the ratio to 1 view, and F1 / mean IoU against the town's truth. The accuracy on real
imagery is measured on the validation split (``weights/eval_split.py ... -- --tta N``, README).

Usage: ``python benchmarks/bench_tta.py --data DIR --out FILE.json [--weights PT] [--quick]``
"""

from __future__ import annotations

import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common

COUNTS = (1, 2, 4, 8, 12)


def measure(weights: Path | None, data: Path, quick: bool) -> dict[str, Any]:
    """Seconds and scores per view count (see the module docstring)."""
    from fastsam_geo.pipeline import extract_buildings

    sc = common.scene(data, 512 if quick else 1024, seed=31)
    rounds = 1 if quick else 3
    seconds: dict[int, list[float]] = {n: [] for n in COUNTS}
    out: dict[int, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(dir=data) as tmp:
        run = {"weights": weights, "device": "cpu", "overwrite": True, "cache_dir": None}
        extract_buildings(sc.raster, Path(tmp) / "warm.gpkg", **run)  # load and warm the model
        for _ in range(rounds):
            for n in COUNTS:
                pred = Path(tmp) / f"tta{n}.gpkg"
                summary = extract_buildings(sc.raster, pred, tta=n, **run)
                seconds[n].append(summary.seconds)
                out[n] = {"tiles": summary.tiles_total, "engine": summary.engine}
        for n in COUNTS:
            s = common.scores(Path(tmp) / f"tta{n}.gpkg", sc.truth, sc.raster)
            out[n].update(f1=s["f1"], mean_iou=s["mean_iou"], predicted=s["predicted"])
    base = statistics.median(seconds[1])
    rows = []
    for n in COUNTS:
        med = statistics.median(seconds[n])
        rows.append(
            {
                "tta": n,
                "seconds": common.stats(seconds[n]),
                "seconds_per_tile": round(med / max(out[n]["tiles"], 1), 3),
                "ratio_to_1": round(med / base, 2),
                **out[n],
            }
        )
        common.log(f"tta {n}: {med:.2f} s ({med / base:.2f} x), F1 {out[n]['f1']}, mean IoU {out[n]['mean_iou']}")
    return {"name": "tta", "scene": {"size": sc.size, "buildings": sc.buildings}, "rounds": rounds, "rows": rows}


def main() -> None:
    a = common.arg_parser(__doc__).parse_args()
    res = measure(common.default_weights(a.weights), a.data, a.quick)
    res["met"] = True  # recorded, no target: the cost of a choice the user makes
    common.write_fragment(a.out, res)


if __name__ == "__main__":
    main()
