"""In real QGIS: with no engine anywhere, the plugin sets one up itself and then runs it.

A copy of the plugin (not a symlink, so the checkout's .venv is not found next to it), a fresh
profile, no fastsam-geo on PATH. Then, in order:

1. discovery finds nothing, and the error offers the set-up;
2. no suitable Python (only interpreters without venv): one clear sentence, nothing created;
3. no network (pip pointed at a closed port): one clear sentence naming it, nothing left behind;
   fastsam-geo missing from the index (this copy carries no wheel): named as such, not as a network failure;
4. cancel: the QgsTask stops pip at once and removes the half-made environment;
5. the real set-up from this checkout (light engine, no torch) in a QgsTask with progress; then
   discovery finds the new environment, it has no torch, and its worker extracts the sample tile
   with the bundled ONNX model.

Usage: ``/usr/bin/python3 tests/qgis/scripts/check_setup.py`` (QT_QPA_PLATFORM=offscreen).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
# pip's cache of the real home (common.py moves HOME to a temporary folder): the wheels it holds
# need not be downloaded again
os.environ.setdefault("PIP_CACHE_DIR", os.path.join(os.path.expanduser("~"), ".cache", "pip"))

from common import REPO, RESULT, SAMPLE, check, run_main, start_qgis
from qgis.core import QgsApplication


def start(task_cls: Any, *args: Any) -> tuple[Any, dict[str, Any]]:
    """Add a SetupEngineTask to QGIS's task manager; its end lands in the returned dict (the task
    manager deletes the C++ task when it ends, so its state is read in ``on_done``)."""
    end: dict[str, Any] = {}

    def on_done(task: Any, ok: bool) -> None:
        end.update(ok=ok, status=task.status(), error=task.error, python=task.python)

    task = task_cls(*args, on_done=on_done)
    task.lines_seen = task.lines  # a Python list: readable after the C++ side is gone
    QgsApplication.taskManager().addTask(task)
    return task, end


def wait_for(end: dict[str, Any], timeout: float) -> bool:
    """Process events until the task's ``on_done`` ran (True) or ``timeout`` seconds pass (False)."""
    limit = time.monotonic() + timeout
    while time.monotonic() < limit:
        QgsApplication.processEvents()
        if end:
            return True
        time.sleep(0.05)
    return False


def main() -> None:
    start_qgis(processing=False)
    tmp = Path(tempfile.mkdtemp(prefix="fsg-setup-"))
    plugins = tmp / "plugins"
    shutil.copytree(REPO / "qgis_plugin", plugins / "fastsam_geo_plugin", ignore=shutil.ignore_patterns("__pycache__"))
    sys.path.insert(0, str(plugins))
    os.environ.pop("FASTSAM_GEO_HOME", None)
    from fastsam_geo_plugin import connection, setup_engine
    from fastsam_geo_plugin.engine import WorkerNotFound
    from fastsam_geo_plugin.tasks import SetupEngineTask

    venv = setup_engine.managed_venv(QgsApplication.qgisSettingsDirPath())
    python, _report = connection.discover(refresh=True)
    check("no engine found at first", python is None, python)
    try:
        connection.client()
        check("client() without an engine raises WorkerNotFound", False)
    except WorkerNotFound as exc:
        check("the not-found message offers the set-up", "Set up engine" in str(exc), str(exc)[:200])

    # 2. no suitable Python
    real = setup_engine.python_candidates
    setup_engine.python_candidates = lambda: ["/bin/false"]
    try:
        setup_engine.setup_engine(tmp / "nopython", log=lambda _line: None)
        check("no suitable Python -> SetupError", False)
    except setup_engine.SetupError as exc:
        check("no suitable Python: clear message", "no Python 3.10+ with venv" in str(exc), exc)
    setup_engine.python_candidates = real
    check("no suitable Python: nothing created", not (tmp / "nopython").exists())

    # 3. no network: pip cannot reach any index
    os.environ.update(PIP_INDEX_URL="http://127.0.0.1:9/simple", PIP_RETRIES="0", PIP_TIMEOUT="3")
    t = time.monotonic()
    try:
        setup_engine.setup_engine(tmp / "nonet", log=lambda _line: None)
        check("no network -> SetupError", False)
    except setup_engine.SetupError as exc:
        check("no network: the message says so", "no network" in str(exc), exc)
    check("no network: the half-made venv is removed", not (tmp / "nonet").exists())
    RESULT["no_network_s"] = round(time.monotonic() - t, 1)
    for key in ("PIP_INDEX_URL", "PIP_RETRIES", "PIP_TIMEOUT"):
        os.environ.pop(key)

    # 3b. the index answers but has no fastsam-geo (no bundled wheel in this copy): not a network failure
    try:
        setup_engine.setup_engine(tmp / "missing", log=lambda _line: None)
        check("fastsam-geo missing from the index -> SetupError", False)
    except setup_engine.SetupError as exc:
        text = str(exc)
        check(
            "missing from the index: named as such, not as a network failure",
            "fastsam-geo is not on the package index" in text and "not a network failure" in text,
            text,
        )
    check("missing from the index: the half-made venv is removed", not (tmp / "missing").exists())

    # 4. cancel while pip runs
    task, end = start(SetupEngineTask, str(venv), str(REPO))
    lines = task.lines_seen
    limit = time.monotonic() + 120
    while time.monotonic() < limit and not any(line.startswith("$ ") and " pip " in line for line in lines):
        QgsApplication.processEvents()
        time.sleep(0.05)
    time.sleep(1.0)
    t = time.monotonic()
    task.cancel()
    ended = wait_for(end, 60)
    RESULT["cancel_s"] = round(time.monotonic() - t, 2)
    check("cancel ends the task", ended and end.get("ok") is False, end)
    check("cancel: SetupCancelled", isinstance(end.get("error"), setup_engine.SetupCancelled), end)
    check("cancel: the half-made venv is removed", not venv.exists(), venv)
    check("cancel takes under 10 s", RESULT["cancel_s"] < 10, RESULT["cancel_s"])

    # 5. the real set-up, light engine from this checkout
    progress: list[float] = []
    t = time.monotonic()
    task, end = start(SetupEngineTask, str(venv), str(REPO))
    task.progressChanged.connect(progress.append)
    ended = wait_for(end, 900)
    RESULT["setup_s"] = round(time.monotonic() - t, 1)
    check("set-up task completes", ended and end.get("ok") is True, end)
    check("set-up reports progress up to 100", bool(progress) and max(progress) >= 100, progress[-5:])
    py = str(setup_engine.venv_python(venv))
    found, _report = connection.discover(refresh=True)
    check("discovery now finds the new engine", found == py, found)
    no_torch = subprocess.run(
        [py, "-c", "import importlib.util as u; print(u.find_spec('torch') is None)"],
        capture_output=True,
        text=True,
        cwd=tempfile.gettempdir(),
    )
    check("the light engine has no torch", no_torch.stdout.strip() == "True", no_torch.stdout + no_torch.stderr)
    client = connection.client()
    hello = client.start()
    check("worker hello from the new engine", str(hello.get("default_weights", "")).endswith(".onnx"), hello)
    out = tmp / "buildings.gpkg"
    result = client.request("extract", {"raster": str(SAMPLE), "output": str(out), "cache": False})
    RESULT["buildings"] = result.get("buildings")
    check("the new engine extracts buildings", (result.get("buildings") or 0) > 100 and out.exists(), result)
    connection.shutdown()
    shutil.rmtree(venv, ignore_errors=True)


if __name__ == "__main__":
    run_main(main)
