"""The plugin's Qt-free half (``qgis_plugin/engine.py``), in the engine's venv without QGIS:
finding the engine's Python and the worker client (requests, errors, a dead worker, restart)."""

from __future__ import annotations

import importlib.util
import os
import stat
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def _load_engine():
    spec = importlib.util.spec_from_file_location("fsg_plugin_engine", REPO / "qgis_plugin" / "engine.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


engine = _load_engine()


def _script(path: Path, text: str) -> Path:
    path.write_text(text)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


def test_shebang_python(tmp_path: Path) -> None:
    assert (
        engine.shebang_python(_script(tmp_path / "a", "#!/opt/venv/bin/python3\nimport x\n")) == "/opt/venv/bin/python3"
    )
    # pip's trampoline for interpreter paths too long (or with spaces) for a shebang
    tramp = "#!/bin/sh\n'''exec' \"/very long/venv/bin/python\" \"$0\" \"$@\"\n' '''\nimport sys\n"
    assert engine.shebang_python(_script(tmp_path / "b", tramp)) == "/very long/venv/bin/python"
    env_py = engine.shebang_python(_script(tmp_path / "c", "#!/usr/bin/env python3\n"))
    assert env_py and Path(env_py).name.startswith("python3")
    assert engine.shebang_python(_script(tmp_path / "d", "no shebang\n")) is None
    assert engine.shebang_python(tmp_path / "missing") is None


def test_find_python_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    venv_python = REPO / ".venv" / "bin" / "python"
    if not venv_python.exists():
        pytest.skip("the project .venv is missing")
    outside = tmp_path / "plugins" / "fastsam_geo_plugin"
    outside.mkdir(parents=True)
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    monkeypatch.delenv("FASTSAM_GEO_HOME", raising=False)
    python, report = engine.find_python(None, outside, probe=False)
    assert python is None and [c.source for c in report] == [
        "plugin setting",
        "fastsam-geo on PATH",
        "$FASTSAM_GEO_HOME",
        "project next to the plugin",
    ]
    # $FASTSAM_GEO_HOME: a clone with its .venv
    monkeypatch.setenv("FASTSAM_GEO_HOME", str(REPO))
    python, _ = engine.find_python(None, outside, probe=False)
    assert python == str(venv_python)
    # fastsam-geo on PATH wins over $FASTSAM_GEO_HOME: its shebang's interpreter
    bindir = tmp_path / "bin"
    bindir.mkdir()
    _script(bindir / "fastsam-geo", f"#!{sys.executable}\nfrom fastsam_geo.cli import main\nmain()\n")
    monkeypatch.setenv("PATH", f"{bindir}:/usr/bin:/bin")
    python, report = engine.find_python(None, outside)
    assert python == sys.executable and report[1].ok, engine.describe_candidates(report)
    # the setting wins over everything; a setting that is not a Python with fastsam-geo is skipped
    python, report = engine.find_python("/bin/true", outside)
    assert not report[0].ok and python == sys.executable
    # the engine in use listed again (the setting names the plugin's own environment): in use, not a cross
    python, report = engine.find_python(sys.executable, outside, managed=sys.executable)
    assert python == sys.executable and report[0].in_use and report[1].ok and report[1].in_use
    assert "[in use]" in report[1].describe() and "not checked" not in report[1].describe()
    # a later, different one is not looked at: not checked, not "no"
    python, report = engine.find_python(sys.executable, outside, managed="/bin/true")
    assert not report[1].checked and "[not checked]" in report[1].describe()
    # a symlinked development install finds the checkout's .venv
    link = tmp_path / "dev" / "fastsam_geo_plugin"
    link.parent.mkdir()
    link.symlink_to(REPO / "qgis_plugin", target_is_directory=True)
    assert engine.repo_of_plugin(link) == REPO


def test_worker_client_requests_errors_death_and_restart(tmp_path: Path) -> None:
    logs: list[tuple[str, str]] = []
    client = engine.WorkerClient(
        sys.executable, cache_dir=str(tmp_path / "cache"), log=lambda m, lv: logs.append((m, lv))
    )
    try:
        hello = client.start()
        assert hello["protocol"] == engine.PROTOCOL and hello["pid"] == client.pid
        with pytest.raises(engine.WorkerError) as err:
            client.request("extract", {"raster": str(tmp_path / "none.tif"), "output": str(tmp_path / "o.gpkg")})
        assert err.value.kind == "RasterError"
        with pytest.raises(engine.WorkerError) as err:
            client.request("dance")
        assert err.value.kind == "ProtocolError"
        status = client.request("status")
        assert status["cache_dir"] == str(tmp_path / "cache")
        old = client.pid
        client.kill()
        client.proc.wait(10)
        hello = client.start()  # restarted
        assert client.pid != old and client.restarts == 1
        assert any("restarting" in m for m, _ in logs)
    finally:
        client.stop()
    assert client.proc is None


def test_worker_client_without_fastsam_geo_says_what_to_do(tmp_path: Path) -> None:
    fake = _script(tmp_path / "python", "#!/bin/sh\necho 'No module named fastsam_geo' >&2\nexit 1\n")
    client = engine.WorkerClient(str(fake), start_timeout=20)
    with pytest.raises(engine.WorkerNotFound) as err:
        client.start()
    assert "No module named fastsam_geo" in str(err.value) and "FASTSAM_GEO_HOME" in str(err.value)
    with pytest.raises(engine.WorkerNotFound):
        engine.WorkerClient(str(tmp_path / "nope")).start()
    assert os.path.basename(engine.venv_python(tmp_path)) in ("python", "python.exe")
