"""`make bench`: run every benchmark, write benchmarks/results.json and benchmarks/RESULTS.md.

Each benchmark runs in its own process (``benchmarks/bench_*.py``), one after the other, so
that one's memory or torch settings never colour another's figures, and a failure is recorded
as a result while the others still run.

    .venv/bin/python benchmarks/run.py                      # everything (about 30 min on 2 cores)
    .venv/bin/python benchmarks/run.py --only merge,memory  # a subset (RESULTS.md keeps the others)
    .venv/bin/python benchmarks/run.py --quick              # smoke run: small inputs, figures meaningless
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common
import report

from fastsam_geo.weights import sha256_file

# name -> (module, time limit in seconds); run in this order
BENCHMARKS: dict[str, tuple[str, int]] = {
    "overhead": ("bench_overhead.py", 600),
    "throughput_300": ("bench_throughput.py", 600),
    "reprompt": ("bench_reprompt.py", 900),
    "merge_scaling": ("bench_merge.py", 900),
    "memory": ("bench_memory.py", 1500),
    "peer": ("bench_peer.py", 1500),
    "gpu": ("bench_gpu.py", 900),
    "onnx": ("bench_onnx.py", 900),
    "tta": ("bench_tta.py", 900),
    "refine": ("bench_refine.py", 900),
    "install": ("bench_install.py", 2400),
    "dask": ("bench_dask.py", 3600),  # 2 rounds of 5 runs on a 4096 px town, then the serial part
}
ALIASES = {"throughput": "throughput_300", "merge": "merge_scaling"}


def run_one(name: str, data: Path, frag_dir: Path, weights: str | None, quick: bool) -> dict[str, Any]:
    module, limit = BENCHMARKS[name]
    out = frag_dir / f"{name}.json"
    out.unlink(missing_ok=True)
    cmd = [sys.executable, str(common.BENCH / module), "--data", str(data), "--out", str(out)]
    if weights:
        cmd += ["--weights", weights]
    if quick:
        cmd.append("--quick")
    common.log(f"== {name}: {' '.join(cmd[1:])}")
    load_before = [round(v, 2) for v in os.getloadavg()]
    t = time.perf_counter()
    tail: list[str] = []
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=common.bench_env())
    assert proc.stderr is not None
    for line in proc.stderr:
        sys.stderr.write(line)
        tail = [*tail[-40:], line.rstrip()]
    try:
        proc.wait(timeout=limit)
    except subprocess.TimeoutExpired:
        proc.kill()
    elapsed = time.perf_counter() - t
    if proc.returncode == 0 and out.exists():
        res = json.loads(out.read_text())
    else:
        errors = [ln for ln in tail if ln and not ln.startswith("[bench")]
        res = {
            "name": name,
            "error": (errors[-1] if errors else f"exit status {proc.returncode}"),
            "stderr_tail": tail[-25:],
            "met": False,
        }
    res["bench_seconds"] = round(elapsed, 1)
    res["load_average_before"] = load_before  # 1, 5, 15 min: above ~2 on 2 cores, others were running too
    res["load_average_after"] = [round(v, 2) for v in os.getloadavg()]
    common.log(f"== {name}: done in {elapsed:.0f} s" + (f" (error: {res['error']})" if "error" in res else ""))
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", default=None, help=f"comma-separated subset of: {', '.join(BENCHMARKS)}")
    ap.add_argument("--skip", default="", help="comma-separated benchmarks to leave out")
    ap.add_argument("--quick", action="store_true", help="small inputs: checks the harness, figures mean nothing")
    ap.add_argument("--weights", default=None, help="default-model figures with these weights instead")
    ap.add_argument("--data-dir", type=Path, default=None, help="keep the synthetic rasters here (reused)")
    ap.add_argument("--results", type=Path, default=common.BENCH / "results.json")
    ap.add_argument("--markdown", type=Path, default=common.BENCH / "RESULTS.md")
    a = ap.parse_args()

    def names(text: str) -> list[str]:
        out = [ALIASES.get(n.strip(), n.strip()) for n in text.split(",") if n.strip()]
        bad = [n for n in out if n not in BENCHMARKS]
        if bad:
            ap.error(f"unknown benchmark(s) {bad}; choose from {list(BENCHMARKS)}")
        return out

    chosen = names(a.only) if a.only else list(BENCHMARKS)
    chosen = [n for n in chosen if n not in names(a.skip)]
    weights = common.default_weights(a.weights)
    if weights is None:
        common.log(
            f"WARNING: the default model {common.DEFAULT_WEIGHTS} is missing: default-model figures are "
            "made with a random FastSAM-s and mean nothing (train it with weights/make_default.sh)"
        )
    t0 = time.perf_counter()
    data = a.data_dir or Path(tempfile.mkdtemp(prefix="fastsam-geo-bench-"))
    data.mkdir(parents=True, exist_ok=True)
    frag_dir = data / "fragments"
    previous: dict[str, Any] = {}
    if a.only and a.results.exists():  # a subset keeps the other benchmarks' last figures
        previous = json.loads(a.results.read_text()).get("benchmarks", {})
    machine = common.machine_info()
    results: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "command": "make bench"
        if not (a.only or a.skip or a.quick)
        else " ".join(["python benchmarks/run.py", *sys.argv[1:]]),
        "quick": a.quick,
        "machine": machine,
        "gpu": None,
        "default_model": (
            f"{weights.relative_to(common.REPO) if weights.is_relative_to(common.REPO) else weights} "
            f"(sha256 {sha256_file(weights)[:16]})"
        )
        if weights
        else None,
        "benchmarks": dict(previous),
    }
    try:
        import torch

        results["gpu"] = common.gpu_name()
        results["torch_threads"] = torch.get_num_threads()
    except Exception as exc:  # pragma: no cover - torch is a dependency
        results["gpu"] = f"unknown ({exc})"
    try:
        for name in chosen:
            # the same weights for every benchmark, even if the default model appears meanwhile
            results["benchmarks"][name] = run_one(name, data, frag_dir, str(weights) if weights else "random", a.quick)
    finally:
        if a.data_dir is None:
            shutil.rmtree(data, ignore_errors=True)
    results["total_seconds"] = round(time.perf_counter() - t0, 1) if not a.only else None
    results["benchmarks"] = {k: results["benchmarks"][k] for k in BENCHMARKS if k in results["benchmarks"]}
    a.results.write_text(json.dumps(results, indent=2, default=str) + "\n")
    a.markdown.write_text(report.render(results))
    common.log(f"wrote {a.results} and {a.markdown} in {(time.perf_counter() - t0) / 60:.1f} min")
    failed = [n for n in chosen if "error" in results["benchmarks"].get(n, {})]
    if failed:
        common.log(f"failed: {', '.join(failed)} (recorded in RESULTS.md)")


if __name__ == "__main__":
    main()
