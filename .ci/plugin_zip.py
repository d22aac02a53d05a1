"""Build dist/fastsam_geo_plugin.zip: the QGIS plugin, with the engine as a wheel inside (``make plugin-zip``).

The zip holds ``fastsam_geo_plugin/`` (qgis_plugin/ and LICENSE) and
``fastsam_geo_plugin/engine/fastsam_geo-<version>-py3-none-any.whl``, built by ``pip wheel . --no-deps``:
the engine package with the default model (pyproject's data-files put ``weights/fastsam-geo-n.onnx``
and ``.pt`` under ``share/fastsam-geo/weights``). *Set up engine* installs that wheel when its
source is left empty. The zip must stay within what the QGIS plugin repository accepts:
25,000,000 bytes (``PLUGIN_MAX_UPLOAD_SIZE`` in qgis/QGIS-Django, qgis-app/plugins/validator.py).

Run from the repository root: ``python .ci/plugin_zip.py`` (any Python with pip).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SRC = REPO / "qgis_plugin"
ZIP = REPO / "dist" / "fastsam_geo_plugin.zip"
TOP = "fastsam_geo_plugin"
MAX_BYTES = 25_000_000
MODEL = "share/fastsam-geo/weights/fastsam-geo-n.onnx"


def build_wheel(out: Path) -> Path:
    """``pip wheel . --no-deps`` into ``out`` (setuptools' build/ and egg-info removed before and after,
    so no stale module of an earlier build gets into the wheel)."""
    stale = [REPO / "build", REPO / "fastsam_geo.egg-info"]
    for p in stale:
        shutil.rmtree(p, ignore_errors=True)
    try:
        cmd = [sys.executable, "-m", "pip", "wheel", str(REPO), "--no-deps", "-q", "-w", str(out)]
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode != 0:
            sys.exit(f"plugin-zip: {' '.join(cmd)} failed:\n{r.stdout[-2000:]}{r.stderr[-2000:]}")
    finally:
        for p in stale:
            shutil.rmtree(p, ignore_errors=True)
    (wheel,) = out.glob("fastsam_geo-*.whl")
    with zipfile.ZipFile(wheel) as z:
        names = z.namelist()
    if not any(n.endswith(".data/data/" + MODEL) for n in names):
        sys.exit(f"plugin-zip: {wheel.name} does not hold {MODEL} (pyproject's data-files; is weights/ complete?)")
    return wheel


def plugin_files() -> list[tuple[Path, str]]:
    files = [
        (p, p.relative_to(SRC).as_posix())
        for p in sorted(SRC.rglob("*"))
        if p.is_file() and "__pycache__" not in p.parts and p.suffix not in (".pyc", ".pyo")
    ]
    if not (SRC / "LICENSE").exists():
        files.append((REPO / "LICENSE", "LICENSE"))
    return files


def main() -> None:
    ZIP.parent.mkdir(exist_ok=True)
    ZIP.unlink(missing_ok=True)
    with tempfile.TemporaryDirectory(prefix="fsg-wheel-") as tmp:
        wheel = build_wheel(Path(tmp))
        files = plugin_files()
        with zipfile.ZipFile(ZIP, "w", zipfile.ZIP_DEFLATED) as z:
            for path, name in files:
                z.write(path, f"{TOP}/{name}")
            z.write(wheel, f"{TOP}/engine/{wheel.name}", compress_type=zipfile.ZIP_STORED)  # a zip already
        size = ZIP.stat().st_size
        print(
            f"{ZIP.relative_to(REPO)}: {len(files) + 1} files, {size:,} bytes "
            f"(engine {wheel.name}: {wheel.stat().st_size:,} bytes; the plugin repository takes up to {MAX_BYTES:,})"
        )
    if size > MAX_BYTES:
        ZIP.unlink()
        sys.exit(f"plugin-zip: {size:,} bytes is more than the QGIS plugin repository accepts ({MAX_BYTES:,})")


if __name__ == "__main__":
    main()
