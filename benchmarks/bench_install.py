"""Size on disk and install time of the two installs, each from an empty virtual environment.

- light: ``python -m venv V && V/bin/pip install <checkout>`` (ONNX Runtime, no torch);
- with torch: ``V/bin/pip install -c constraints.txt "<checkout>[torch]"`` (a few GB; measured
  only with ``FSG_BENCH_FULL_INSTALL=1``, since it takes minutes and disk).

Size is ``du -sb`` of the whole venv; time is the wall time of ``venv`` + ``pip install`` (pip's
own cache as it is: warm after a first run, so mostly unpacking). Also checks that torch is not
importable in the light one. The venvs are deleted afterwards.

Usage: ``python benchmarks/bench_install.py --data DIR --out FILE.json``
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common

LIGHT_TARGET_MB = 400


def _du_bytes(path: Path) -> int:
    return int(subprocess.run(["du", "-sb", str(path)], capture_output=True, text=True, check=True).stdout.split()[0])


def measure(venv: Path, requirement: list[str]) -> dict[str, Any]:
    """Create ``venv`` and pip-install ``requirement``; seconds and bytes."""
    shutil.rmtree(venv, ignore_errors=True)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    t = time.perf_counter()
    subprocess.run([_base_python(), "-m", "venv", str(venv)], check=True, env=env)
    pip = subprocess.run(
        [str(venv / "bin" / "pip"), "install", "-q", *requirement], capture_output=True, text=True, env=env, cwd="/"
    )
    seconds = time.perf_counter() - t
    if pip.returncode != 0:
        raise RuntimeError(f"pip install {' '.join(requirement)} failed: {pip.stderr.strip().splitlines()[-1:]}")
    size = _du_bytes(venv)
    torch = (
        subprocess.run(
            [str(venv / "bin" / "python"), "-c", "import importlib.util as u; print(u.find_spec('torch') is not None)"],
            capture_output=True,
            text=True,
            env=env,
            cwd="/",
        ).stdout.strip()
        == "True"
    )
    return {
        "seconds": round(seconds, 1),
        "mib": round(size / 2**20, 1),
        "torch_importable": torch,
        "command": f"python -m venv V && V/bin/pip install {' '.join(requirement)}",
    }


def _base_python() -> str:
    """The interpreter this venv was made from (a venv made from a venv would copy nothing more)."""
    base = Path(sys.base_prefix) / "bin" / "python3"
    return str(base) if base.exists() else sys.executable


def run(data: Path) -> dict[str, Any]:
    repo = str(common.REPO)
    res: dict[str, Any] = {"name": "install", "python": sys.version.split()[0]}
    light = data / "venv-light"
    res["light"] = measure(light, [repo])
    shutil.rmtree(light, ignore_errors=True)
    common.log(f"install light: {res['light']}")
    if os.environ.get("FSG_BENCH_FULL_INSTALL") == "1":
        full = data / "venv-full"
        res["torch"] = measure(full, ["-c", str(common.REPO / "constraints.txt"), f"{repo}[torch]"])
        shutil.rmtree(full, ignore_errors=True)
        common.log(f"install torch: {res['torch']}")
    else:
        res["torch"] = {"skipped": "set FSG_BENCH_FULL_INSTALL=1 to measure it (a few GB, minutes)"}
    res["met"] = res["light"]["mib"] < LIGHT_TARGET_MB and not res["light"]["torch_importable"]
    return res


def main() -> None:
    ap = common.arg_parser(__doc__, weights_help="(unused)")
    a = ap.parse_args()
    common.write_fragment(a.out, run(a.data))


if __name__ == "__main__":
    main()
