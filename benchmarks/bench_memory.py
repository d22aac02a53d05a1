"""Memory and end-to-end throughput: ``fastsam-geo extract`` as a real subprocess per raster size.

For synthetic rasters of 2048, 8192 and 16384 px square (0.5 m, default model, the CLI's
defaults: 1024 px tiles, overlap 128, batch 4, mask cache on), each run is one
``fastsam-geo -q extract RASTER OUT.gpkg --json`` process. Its peak RSS is the kernel's
high-water mark (``os.wait4``'s ``ru_maxrss``), cross-checked by polling the process tree
every 50 ms; its ``--json`` summary gives the time of the extraction itself (without Python's
start and the model's load), per-stage seconds and tile counts; the output is scored against
the truth (F1, seam score).

Usage: ``python benchmarks/bench_memory.py --data DIR --out FILE.json [--weights PT] [--quick]``
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common

SIZES = {2048: 9001, 8192: 9003, 16384: 9004}
QUICK_SIZES = {1024: 9001, 2048: 9001, 3072: 9004}


def fastsam_geo_cmd() -> list[str]:
    """The ``fastsam-geo`` console script of this environment (else ``python -m fastsam_geo``)."""
    script = Path(sys.executable).parent / "fastsam-geo"
    return [str(script)] if script.exists() else [sys.executable, "-m", "fastsam_geo"]


def extract_run(
    raster: Path, out: Path, weights: Path | None, cache: Path, extra: list[str] | None = None, **env: str
) -> dict:
    """One measured ``fastsam-geo extract`` process; its summary, memory and times (``env``: extra variables)."""
    cmd = [*fastsam_geo_cmd(), "-q", "extract", str(raster), str(out), "--json", "--overwrite", "--tta", "1"]
    cmd += ["--cache-dir", str(cache)]
    if weights is not None:
        cmd += ["-w", str(weights)]
    cmd += extra or []
    r = common.run_measured(cmd, env=common.bench_env(**env), timeout_s=900, mem_cap_bytes=common.memory_cap(0.6, 12))
    row: dict[str, Any] = r.as_dict()
    if r.ok:
        summary = json.loads(r.stdout)
        row["summary"] = {
            k: summary[k] for k in ("buildings", "seam_merged", "tiles_processed", "seconds", "stage_seconds")
        }
    return row


def run(data: Path, weights: Path | None, quick: bool = False) -> dict[str, Any]:
    res: dict[str, Any] = {"name": "memory"}
    extra: list[str] = []
    if weights is None:
        weights = common.random_fastsam_s(data / "weights")
        extra = ["--conf", "0.0005"]
        res["note"] = "default model missing: random FastSAM-s used (figures not meaningful)"
    res["model"] = weights.name
    from fastsam_geo.segment import FastSAMSegmenter

    probe = FastSAMSegmenter(weights, device="auto")  # what the CLI's defaults pick here
    res["batch_size"], res["device"] = probe.batch_size, str(probe.device)
    del probe
    res["command"] = " ".join(
        [
            "fastsam-geo",
            "-q",
            "extract",
            "RASTER",
            "OUT.gpkg",
            "--json",
            "--overwrite",
            "--tta",
            "1",
            "--cache-dir",
            "TMP",
            "-w",
            weights.name,
            *extra,
        ]
    )
    rows = []
    with tempfile.TemporaryDirectory(dir=data) as tmp:
        for size, seed in (QUICK_SIZES if quick else SIZES).items():
            sc = common.scene(data, size, seed)
            out = Path(tmp) / f"b{size}.gpkg"
            row = extract_run(sc.raster, out, weights, Path(tmp) / f"cache{size}", extra)
            row.update(
                size=size,
                seed=seed,
                megapixels=round(size * size / 1e6, 2),
                truth_buildings=sc.buildings,
                scene_write_s=round(sc.seconds, 1),
            )
            if "summary" in row:
                s = row["summary"]
                row["megapixels_per_s"] = round(size * size / 1e6 / s["seconds"], 3)
                row["tiles_per_s"] = round(s["tiles_processed"] / s["seconds"], 3)
                row["read_wait_share"] = round(s["stage_seconds"].get("read_wait", 0.0) / s["seconds"], 4)
                row["scores"] = common.scores(out, sc.truth, sc.raster)
            rows.append(row)
            common.log(
                f"memory: {size} px: rc {row['returncode']}, {row['wall_s']} s, peak RSS {row['peak_rss_mib']} MiB"
                + (f", {row['megapixels_per_s']} Mpx/s, F1 {row['scores']['f1']}" if "summary" in row else "")
            )
            out.unlink(missing_ok=True)
        # Diagnosis when memory is not flat: the largest raster again with GDAL's block cache capped
        # (GDAL_CACHEMAX, default 5 % of RAM): that cache keeps the decoded blocks of every window read.
        ratio_now = (
            rows[-1]["peak_rss_mib"] / rows[0]["peak_rss_mib"] if all("summary" in r for r in rows) else float("inf")
        )
        if not quick and ratio_now > 1.3:  # only when memory is not flat: is it GDAL's block cache?
            size, seed = max(SIZES.items())
            sc = common.scene(data, size, seed)
            out = Path(tmp) / f"b{size}-cachemax.gpkg"
            row = extract_run(sc.raster, out, weights, Path(tmp) / f"cache{size}-cachemax", extra, GDAL_CACHEMAX="64")
            row.update(size=size, seed=seed, gdal_cachemax_mb=64)
            if "summary" in row:
                row["megapixels_per_s"] = round(size * size / 1e6 / row["summary"]["seconds"], 3)
            res["diagnosis_gdal_cachemax_64"] = row
            common.log(
                f"memory: {size} px with GDAL_CACHEMAX=64: {row['wall_s']} s, peak RSS {row['peak_rss_mib']} MiB"
            )
    res["rows"] = rows
    ok = [r for r in rows if r["returncode"] == 0 and not r["killed"]]
    if len(ok) == len(rows):
        ratio = rows[-1]["peak_rss_mib"] / rows[0]["peak_rss_mib"]
        res["peak_rss_ratio_largest_to_smallest"] = round(ratio, 3)
        res["met"] = ratio <= 1.3
    else:
        res["met"] = False
    res["target"] = f"peak RSS of the {rows[-1]['size']} px run <= 1.3 x the {rows[0]['size']} px run"
    return res


def main() -> None:
    ap = common.arg_parser(__doc__)
    a = ap.parse_args()
    common.write_fragment(a.out, run(a.data, common.default_weights(a.weights), a.quick))


if __name__ == "__main__":
    main()
