"""Refined outlines (``fastsam_geo.refine``): what snapping each mask to the image's edges costs.

The default model (its ONNX twin) runs ``extract_buildings`` over a synthetic town with raw and
with refined masks, at 1 view and at the default 12, the four settings interleaved in each round
so that a change of load on the shared machine hits them alike; median of the rounds, no mask
cache. Reported: seconds per run, the ratio refined / raw at each view count, and F1 / mean IoU
against the town's truth. On real imagery the gain is measured on the validation split (README).

Usage: ``python benchmarks/bench_refine.py --data DIR --out FILE.json [--weights PT] [--quick]``
"""

from __future__ import annotations

import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common

SETTINGS = ((1, False), (1, True), (12, False), (12, True))


def measure(weights: Path | None, data: Path, quick: bool) -> dict[str, Any]:
    """Seconds and scores per (views, refine) setting (see the module docstring)."""
    from fastsam_geo.pipeline import extract_buildings
    from fastsam_geo.segment import FastSAMSegmenter
    from fastsam_geo.segmenters import resolve_model

    sc = common.scene(data, 512 if quick else 1024, seed=31)
    rounds = 1 if quick else 3
    model = resolve_model(weights, engine="auto").path
    segs = {s: FastSAMSegmenter(model, device="cpu", tta=s[0], refine=s[1]) for s in SETTINGS}
    seconds: dict[tuple[int, bool], list[float]] = {s: [] for s in SETTINGS}
    with tempfile.TemporaryDirectory(dir=data) as tmp:
        run = {"overwrite": True, "cache_dir": None, "resumable": False}
        extract_buildings(sc.raster, Path(tmp) / "warm.gpkg", segmenter=segs[SETTINGS[0]], tta=1, **run)
        for _ in range(rounds):
            for s in SETTINGS:
                summary = extract_buildings(sc.raster, Path(tmp) / f"{s[0]}_{s[1]}.gpkg", segmenter=segs[s], **run)
                seconds[s].append(summary.seconds)
        scores = {s: common.scores(Path(tmp) / f"{s[0]}_{s[1]}.gpkg", sc.truth, sc.raster) for s in SETTINGS}
    rows = []
    for views, refine in SETTINGS:
        med = statistics.median(seconds[(views, refine)])
        raw = statistics.median(seconds[(views, False)])
        s = scores[(views, refine)]
        rows.append(
            {
                "tta": views,
                "refine": refine,
                "seconds": common.stats(seconds[(views, refine)]),
                "ratio_to_raw": round(med / raw, 3),
                "f1": s["f1"],
                "mean_iou": s["mean_iou"],
            }
        )
        common.log(
            f"tta {views} refine {refine}: {med:.2f} s ({med / raw:.3f} x raw), F1 {s['f1']}, IoU {s['mean_iou']}"
        )
    return {"name": "refine", "scene": {"size": sc.size, "buildings": sc.buildings}, "rounds": rounds, "rows": rows}


def main() -> None:
    a = common.arg_parser(__doc__).parse_args()
    res = measure(common.default_weights(a.weights), a.data, a.quick)
    res["met"] = True  # recorded, no target: the cost of the default outline step
    common.write_fragment(a.out, res)


if __name__ == "__main__":
    main()
