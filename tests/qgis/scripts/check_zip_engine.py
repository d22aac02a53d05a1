"""A user who has only the plugin zip: it installs into a clean profile, sets up its own engine
from the wheel inside it, and qgis_process runs the algorithm with that engine.

- The zip (copied by the caller into a temporary folder, away from the checkout) is unpacked
  into ``$HOME/.local/share/QGIS/QGIS3/profiles/default/python/plugins`` of a temporary HOME;
  ``PATH`` holds no engine, ``FASTSAM_GEO_HOME`` is unset, and nothing of the checkout is on
  QGIS's ``sys.path`` or ``PYTHONPATH``.
- Discovery finds no engine; *Set up engine* with the source left empty (``SetupEngineTask``,
  as the Settings button starts it) creates ``<profile>/fastsam_geo/venv`` and pip-installs the
  bundled wheel (its dependencies from the package index), light engine, no torch.
- ``qgis_process.bin run fastsam_geo:extract_buildings`` on the sample tile (same HOME, so the
  same profile and settings) writes the buildings; they equal what the installed engine's CLI
  (``<venv>/bin/fastsam-geo extract``) writes from the same tile.

Usage: ``/usr/bin/python3 tests/qgis/scripts/check_zip_engine.py /tmp/x/fastsam_geo_plugin.zip``
(QT_QPA_PLATFORM=offscreen). Environment: PIP_CACHE_DIR (pip's cache; default: the real home's).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import zipfile
from pathlib import Path
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
# pip's cache of the real home (common.py moves HOME): wheels it holds are not downloaded again
os.environ.setdefault("PIP_CACHE_DIR", os.path.join(os.path.expanduser("~"), ".cache", "pip"))
sys.path.insert(0, HERE)

from common import PLUGIN_NAME, REPO, RESULT, SAMPLE, check, make_iface, run_main  # noqa: E402
from qgis.core import QgsApplication, QgsSettings, QgsVectorLayer  # noqa: E402
from qgis.PyQt.QtCore import QCoreApplication, QSettings  # noqa: E402

sys.path[:] = [p for p in sys.path if os.path.realpath(p or ".") != HERE]  # nothing of the checkout stays


def start_profile(archive: Path) -> Path:
    """Unpack the zip into the default profile of the (temporary) HOME and start QGIS on it."""
    profile = Path(os.environ["HOME"]) / ".local" / "share" / "QGIS" / "QGIS3" / "profiles" / "default"
    plugins = profile / "python" / "plugins"
    plugins.mkdir(parents=True)
    with zipfile.ZipFile(archive) as z:
        z.extractall(plugins)
    QCoreApplication.setOrganizationName("QGIS")
    QCoreApplication.setApplicationName("QGIS3")
    QSettings.setDefaultFormat(QSettings.Format.IniFormat)
    QSettings.setPath(QSettings.Format.IniFormat, QSettings.Scope.UserScope, str(profile))
    app = QgsApplication([], True, str(profile))
    app.initQgis()
    start_profile.app = app  # type: ignore[attr-defined]
    return profile


def isolated() -> list[str]:
    """What of the checkout QGIS's Python could import (must be nothing)."""
    import importlib.util

    repo = str(REPO.resolve())
    leaks = [p for p in sys.path if p and os.path.realpath(p).startswith(repo)]
    leaks += [f"PYTHONPATH={p}" for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    if importlib.util.find_spec("fastsam_geo") is not None:
        leaks.append("fastsam_geo is importable")
    return leaks


def set_up_engine(profile: Path) -> dict[str, Any]:
    """Press *Set up engine* with the source left empty (the task the Settings button starts)."""
    from fastsam_geo_plugin.setup_engine import bundled_wheel, managed_venv
    from fastsam_geo_plugin.tasks import SetupEngineTask

    wheel = bundled_wheel()
    check("the installed plugin carries the engine wheel", wheel is not None and wheel.is_file(), wheel)
    end: dict[str, Any] = {}
    venv = managed_venv(QgsApplication.qgisSettingsDirPath())
    task = SetupEngineTask(str(venv), None, False, on_done=lambda t, ok: end.update(ok=ok, error=t.error))
    lines = task.lines
    t0 = time.monotonic()
    QgsApplication.taskManager().addTask(task)
    while not end and time.monotonic() - t0 < 1200:
        QgsApplication.processEvents()
        time.sleep(0.05)
    RESULT["setup_s"] = round(time.monotonic() - t0, 1)
    check("set-up with the source left empty succeeds", end.get("ok") is True, end or "timed out")
    done = [line for line in lines if "installed in" in line]
    check(
        "it installed the wheel that came with the plugin",
        bool(done) and done[-1].endswith(wheel.name if wheel else "?"),
        done[-1:] or lines[-5:],
    )
    RESULT["setup_log_tail"] = lines[-3:]
    return {"venv": venv, "lines": lines}


def run_qgis_process(out: Path) -> subprocess.CompletedProcess[str]:
    # QGIS_CUSTOM_CONFIG_PATH: set by qgis.testing on import; qgis_process must use the HOME profile
    drop = ("PYTHONPATH", "PYTHONHOME", "FASTSAM_GEO_HOME", "QGIS_CUSTOM_CONFIG_PATH")
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env.update(PATH="/usr/bin:/bin", QT_QPA_PLATFORM="offscreen")
    exe = "/usr/bin/qgis_process.bin"
    r = subprocess.run(
        [exe, "plugins", "enable", PLUGIN_NAME], env=env, capture_output=True, text=True, timeout=300, cwd=env["HOME"]
    )
    check("qgis_process plugins enable", r.returncode == 0, r.stdout[-500:] + r.stderr[-500:])
    keys = ("HOME", "XDG_DATA_HOME", "XDG_CONFIG_HOME", "QGIS_CUSTOM_CONFIG_PATH")
    RESULT["qgis_process_env"] = {k: env.get(k) for k in keys}
    RESULT["profile_listing"] = sorted(str(p) for p in Path(env["HOME"]).glob(".local/share/QGIS/QGIS3/**/plugins/*"))
    cmd = [exe, "run", "fastsam_geo:extract_buildings", "--", f"INPUT={SAMPLE}", f"OUTPUT={out}", "DEVICE=cpu"]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900, cwd=os.environ["HOME"])


def shapes(path: Path) -> list[str]:
    layer = QgsVectorLayer(f"{path}|layername=buildings", "b", "ogr")
    return sorted(f.geometry().asWkt(2) for f in layer.getFeatures())


def main() -> None:
    archive = Path(sys.argv[1])
    check("the zip is not inside the checkout", not str(archive.resolve()).startswith(str(REPO.resolve())), archive)
    check("the zip is within the plugin repository's 25,000,000 bytes", archive.stat().st_size <= 25_000_000)
    RESULT["zip_bytes"] = archive.stat().st_size
    profile = start_profile(archive)
    iface = make_iface()
    import qgis.utils

    plugins_dir = str(profile / "python" / "plugins")
    qgis.utils.iface = iface
    qgis.utils.plugin_paths = [plugins_dir]
    sys.path.insert(0, plugins_dir)
    qgis.utils.updateAvailablePlugins()
    check("loadPlugin", qgis.utils.loadPlugin(PLUGIN_NAME))
    check("startPlugin", qgis.utils.startPlugin(PLUGIN_NAME))
    os.environ.pop("FASTSAM_GEO_HOME", None)
    os.environ.pop("PYTHONPATH", None)
    os.environ["PATH"] = "/usr/bin:/bin"
    leaks = isolated()
    check("nothing of the checkout is importable in QGIS", not leaks, leaks)
    RESULT["qgis_sys_path"] = sys.path

    from fastsam_geo_plugin import connection

    python, _ = connection.discover(refresh=True)
    check("no engine anywhere at first", python is None, python)
    setup = set_up_engine(profile)
    python, _ = connection.discover(refresh=True)
    venv_py = str(Path(setup["venv"]) / "bin" / "python")
    check("discovery finds the engine it set up", python == venv_py, python)
    connection.shutdown()
    QgsSettings().sync()  # qgis_process reads the same profile

    out = Path(os.environ["HOME"]) / "qgis_process.gpkg"
    t0 = time.monotonic()
    r = run_qgis_process(out)
    RESULT["qgis_process_s"] = round(time.monotonic() - t0, 1)
    check("qgis_process run fastsam_geo:extract_buildings", r.returncode == 0 and out.is_file(), r.stderr[-2000:])
    check("qgis_process used the engine set up by the plugin", venv_py in r.stdout, r.stdout[-1500:])
    cli_out = Path(os.environ["HOME"]) / "cli.gpkg"
    cli = subprocess.run(
        [str(Path(setup["venv"]) / "bin" / "fastsam-geo"), "-q", "extract", str(SAMPLE), str(cli_out), "--no-cache"],
        capture_output=True,
        text=True,
        timeout=900,
        cwd=os.environ["HOME"],
    )
    check("the engine's CLI extracts the same tile", cli.returncode == 0, cli.stderr[-1500:])
    a, b = shapes(out), shapes(cli_out)
    RESULT["buildings"] = {"qgis_process": len(a), "cli": len(b)}
    check("qgis_process gives the CLI's polygons", len(a) > 100 and a == b, f"{len(a)} vs {len(b)}")


if __name__ == "__main__":
    run_main(main)
