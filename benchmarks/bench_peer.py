"""Peer: segment-geospatial's FastSAM (``samgeo.fast_sam``) on the same rasters and weights.

The peer lives in its own virtual environment, ``.venv-peer`` at the repository's root, created
here when missing: ``segment-geospatial[fast]`` (which pins ultralytics 8.0.x), ``setuptools<81``
(samgeo's dependencies import ``pkg_resources``), and this environment's torch and torchvision
versions (so that both tools run the same torch). The default model is exported (yaml + tensors)
and rebuilt with the peer's ultralytics 8.0 classes (``peer_samgeo.py convert``), saved under the
only names samgeo accepts (``FastSAM-s.pt``). Each run is one process (``peer_samgeo.py run``:
samgeo's documented ``SamGeo(...).set_image`` / ``everything_prompt`` / ``raster_to_vector``
workflow) with ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1`` (ultralytics 8.0 predates torch's
``weights_only`` default), measured like ``fastsam-geo extract``: wall time, peak RSS, F1 and seam
score of its output against the truth. samgeo runs the model once on the whole raster resized to
1024 px; with ``retina_masks=True`` its masks are full-resolution. A process past the memory cap
or the time limit is stopped and recorded as such.

Usage: ``python benchmarks/bench_peer.py --data DIR --out FILE.json [--weights PT] [--quick]``
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from importlib.metadata import version
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common

PEER_VENV = common.REPO / ".venv-peer"
MARKER = PEER_VENV / ".fastsam-geo-bench-installed"
SIZES = {2048: 9001, 8192: 9003}
QUICK_SIZES = {1024: 9001, 2048: 9001}


def peer_requirements() -> list[str]:
    return [
        "segment-geospatial[fast]",
        "setuptools<81",
        f"torch=={version('torch')}",
        f"torchvision=={version('torchvision')}",
    ]


def ensure_peer_env(log_path: Path) -> dict[str, Any]:
    """Create ``.venv-peer`` if needed; what is installed there (or why installing failed)."""
    info: dict[str, Any] = {"venv": str(PEER_VENV.relative_to(common.REPO)), "requirements": peer_requirements()}
    py = PEER_VENV / "bin" / "python"
    if not (py.exists() and MARKER.exists()):
        t = time.perf_counter()
        common.log(f"peer: creating {PEER_VENV.name} (pip install {' '.join(peer_requirements())}), minutes...")
        with open(log_path, "w") as logf:
            steps = [
                [sys.executable, "-m", "venv", "--clear", str(PEER_VENV)],
                [str(py), "-m", "pip", "install", "--progress-bar", "off", *peer_requirements()],
            ]
            for cmd in steps:
                logf.write(f"$ {' '.join(cmd)}\n")
                logf.flush()
                rc = subprocess.run(cmd, stdout=logf, stderr=subprocess.STDOUT, env=common.bench_env()).returncode
                if rc != 0:
                    tail = log_path.read_text().strip().splitlines()[-15:]
                    info.update(installed=False, error=f"`{' '.join(cmd[-4:])}` exited {rc}", log_tail=tail)
                    return info
        MARKER.write_text(json.dumps({"requirements": peer_requirements(), "date": time.strftime("%F %T")}))
        info["install_seconds"] = round(time.perf_counter() - t, 1)
    probe = subprocess.run(
        [
            str(py),
            "-c",
            "import json; from importlib.metadata import version as v; "
            "print(json.dumps({p: v(p) for p in ('segment-geospatial', 'ultralytics', 'torch', 'torchvision', "
            "'numpy', 'opencv-python')}))",
        ],
        capture_output=True,
        text=True,
        env=common.bench_env(),
    )
    if probe.returncode != 0:
        info.update(installed=False, error=probe.stderr.strip().splitlines()[-1:])
        return info
    info.update(installed=True, versions=json.loads(probe.stdout))
    return info


def export_weights(weights: Path, export: Path) -> dict[str, Any]:
    """The network's yaml, tensors and class names (no pickled classes), for the peer to rebuild."""
    import torch

    ckpt = torch.load(weights, map_location="cpu", weights_only=False)
    model = (ckpt.get("ema") or ckpt["model"]).float()
    torch.save(
        {
            "yaml": dict(model.yaml),
            "state_dict": {k: v.clone() for k, v in model.state_dict().items()},
            "names": {int(k): str(v) for k, v in dict(model.names).items()},
            "imgsz": 1024,
        },
        export,
    )
    return {"tensors": len(model.state_dict()), "yaml": model.yaml.get("yaml_file", "")}


def peer_run(py: Path, workdir: Path, raster: Path, out: Path, conf: float, retina: bool) -> dict[str, Any]:
    cmd = [str(py), str(common.BENCH / "peer_samgeo.py"), "run", str(raster), str(out), str(conf)]
    if retina:
        cmd.append("--retina")
    env = common.bench_env(TORCH_HOME=str(workdir), TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD="1", PYTHONWARNINGS="ignore")
    env.pop("PYTHONPATH", None)
    r = common.run_measured(cmd, env=env, cwd=workdir, timeout_s=420, mem_cap_bytes=common.memory_cap(0.6, 12))
    row: dict[str, Any] = r.as_dict()
    lines = [ln for ln in r.stdout.strip().splitlines() if ln.startswith("{")]
    if r.ok and lines and out.exists():
        row["phases"] = json.loads(lines[-1])
    else:
        lines = [ln.strip() for ln in r.stderr_tail.splitlines() if ln.strip() and "warn" not in ln.lower()]
        ours = [ln for ln in lines if ln.startswith(("samgeo's", "no object found"))]
        errors = [ln for ln in lines if "Error" in ln.split(":", 1)[0]]
        row["failed"] = r.killed or next(iter(ours or errors[-1:] or lines[-1:]), f"exit {r.returncode}")
        if r.ok and not out.exists():
            row["failed"] = "no output written (samgeo's predict swallows the model's exception and returns None)"
    return row


def run(data: Path, weights: Path | None, quick: bool = False) -> dict[str, Any]:
    res: dict[str, Any] = {"name": "peer", "tool": "segment-geospatial (samgeo.fast_sam.SamGeo)"}
    conf = 0.25
    if weights is None:
        weights = common.random_fastsam_s(data / "weights")
        conf = 0.0005
        res["note"] = "default model missing: random FastSAM-s used (figures not meaningful)"
    res["model"] = weights.name
    env_info = ensure_peer_env(data / "peer-install.log")
    res["environment"] = env_info
    if not env_info.get("installed"):
        res["met"] = None
        res["failed"] = f"installing the peer failed: {env_info.get('error')}"
        return res
    py = PEER_VENV / "bin" / "python"
    rows = []
    with tempfile.TemporaryDirectory(dir=data) as tmp:
        work = Path(tmp)
        export = work / "export.pt"
        res["export"] = export_weights(weights, export)
        conv = subprocess.run(
            [str(py), str(common.BENCH / "peer_samgeo.py"), "convert", str(export), str(work / "FastSAM-s.pt")],
            capture_output=True,
            text=True,
            env=common.bench_env(),
        )
        if conv.returncode != 0:
            res["met"] = None
            res["failed"] = "converting the weights for ultralytics 8.0 failed: " + " ".join(
                conv.stderr.strip().splitlines()[-2:]
            )
            return res
        for size, seed in (QUICK_SIZES if quick else SIZES).items():
            sc = common.scene(data, size, seed)
            for retina in (False, True):
                run_dir = work / f"run{size}{'r' if retina else ''}"
                run_dir.mkdir()
                os.link(work / "FastSAM-s.pt", run_dir / "FastSAM-s.pt")
                out = run_dir / "peer.gpkg"
                row = peer_run(py, run_dir, sc.raster, out, conf, retina)
                row.update(size=size, seed=seed, retina_masks=retina)
                if "phases" in row:
                    row["scores"] = common.scores(out, sc.truth, sc.raster)
                rows.append(row)
                common.log(
                    f"peer: {size} px retina={retina}: {row['wall_s']} s, peak {row['peak_rss_mib']} MiB, "
                    + (f"F1 {row['scores']['f1']}" if "scores" in row else f"failed: {row.get('failed')}")
                )
    res["rows"] = rows
    res["settings"] = f"imgsz=1024, conf={conf}, iou=0.7, device=cpu (fastsam-geo: --conf {conf} --iou 0.7)"
    return res


def main() -> None:
    ap = common.arg_parser(__doc__)
    ap.add_argument("--setup-only", action="store_true", help="only create .venv-peer")
    a = ap.parse_args()
    if a.setup_only:
        print(json.dumps(ensure_peer_env(a.data / "peer-install.log"), indent=2))
        return
    common.write_fragment(a.out, run(a.data, common.default_weights(a.weights), a.quick))


if __name__ == "__main__":
    main()
