"""Set up an engine for the plugin by itself: a virtual environment under the QGIS profile.

Nothing here imports Qt or QGIS (the ``QgsTask`` around it is :class:`tasks.SetupEngineTask`).
Steps: find a Python 3.10+ that can make a virtual environment (QGIS's own Python may lack
``venv``/``ensurepip``), ``python -m venv <profile>/fastsam_geo/venv``, then ``pip install``
fastsam-geo into it: the light engine (ONNX Runtime, no torch) by default, ``[torch]`` on
request, from PyPI or from a local wheel / sdist / project folder. Output lines go to a log
callback, a cancel stops pip at once and removes the half-made environment, and the usual
failures (no network, no suitable Python) come back as one clear sentence.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

PACKAGE = "fastsam-geo"
MIN_PYTHON = (3, 10)
NO_NETWORK_HINTS = (
    "Failed to establish a new connection",
    "Temporary failure in name resolution",
    "Network is unreachable",
    "No matching distribution found",
    "Could not find a version that satisfies",
    "ConnectionError",
    "Read timed out",
)


class SetupError(Exception):
    """The engine could not be set up; the message says why and what to do."""


class SetupCancelled(SetupError):
    """The user cancelled the set-up."""


def managed_venv(profile_dir: str | os.PathLike[str]) -> Path:
    """The plugin's own engine environment: ``<QGIS profile>/fastsam_geo/venv``.

    >>> managed_venv("/home/u/.local/share/QGIS/QGIS3/profiles/default").as_posix()
    '/home/u/.local/share/QGIS/QGIS3/profiles/default/fastsam_geo/venv'
    """
    return Path(profile_dir) / "fastsam_geo" / "venv"


def venv_python(folder: str | os.PathLike[str]) -> Path:
    """The interpreter of the virtual environment ``folder``."""
    folder = Path(folder)
    return folder / "Scripts" / "python.exe" if os.name == "nt" else folder / "bin" / "python"


def requirement(source: str | None, torch: bool) -> str:
    """What pip installs: the PyPI name, or a local wheel / sdist / folder, with ``[torch]`` on request.

    >>> requirement(None, False), requirement(None, True), requirement("/src/fastsam-geo", True)
    ('fastsam-geo', 'fastsam-geo[torch]', '/src/fastsam-geo[torch]')
    """
    base = (source or "").strip() or PACKAGE
    return f"{base}[torch]" if torch else base


def python_candidates() -> list[str]:
    """Interpreters to try for ``python -m venv``, best first (QGIS's own, then ``PATH``'s)."""
    names = [sys.executable, getattr(sys, "_base_executable", "")]
    if os.name == "nt":
        names += [os.path.join(sys.exec_prefix, "python.exe"), os.path.join(sys.exec_prefix, "python3.exe")]
    for name in ("python3", "python3.13", "python3.12", "python3.11", "python3.10", "python"):
        found = shutil.which(name)
        if found:
            names.append(found)
    seen: list[str] = []
    for n in names:
        if n and os.path.isfile(n) and n not in seen:
            seen.append(n)
    return seen


CHECK_CODE = "import sys, venv, ensurepip; print('%d.%d' % sys.version_info[:2])"


def find_base_python(candidates: Sequence[str] | None = None) -> tuple[str | None, list[str]]:
    """The first Python 3.10+ that has ``venv`` and ``ensurepip``, and a note for each one tried."""
    notes = []
    for py in python_candidates() if candidates is None else candidates:
        try:
            out = subprocess.run([py, "-c", CHECK_CODE], capture_output=True, text=True, timeout=60, env=_env())
        except (OSError, subprocess.SubprocessError) as exc:
            notes.append(f"{py}: cannot run ({exc})")
            continue
        if out.returncode != 0:
            last = (out.stderr.strip().splitlines() or ["?"])[-1]
            notes.append(f"{py}: no venv/ensurepip ({last})")
            continue
        major, minor = (int(v) for v in out.stdout.strip().split("."))
        if (major, minor) < MIN_PYTHON:
            notes.append(f"{py}: Python {major}.{minor} is older than 3.10")
            continue
        notes.append(f"{py}: Python {major}.{minor}, usable")
        return py, notes
    return None, notes


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONHOME", "PYTHONPATH", "PYTHONSTARTUP")}
    env.update({"PYTHONUNBUFFERED": "1", "PIP_DISABLE_PIP_VERSION_CHECK": "1", "PYTHONIOENCODING": "utf-8"})
    return env


def _run(cmd: list[str], log: Callable[[str], None], cancelled: Callable[[], bool]) -> list[str]:
    """Run ``cmd``, streaming its output to ``log``; killed as soon as ``cancelled()`` is true."""
    log("$ " + " ".join(cmd))
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=_env(), cwd=os.path.expanduser("~")
    )
    lines: list[str] = []
    stop = threading.Event()

    def watch() -> None:
        while not stop.wait(0.2):
            if cancelled():
                proc.kill()
                return

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    assert proc.stdout is not None
    for line in proc.stdout:
        lines.append(line.rstrip())
        log(line.rstrip())
    proc.wait()
    stop.set()
    watcher.join()
    if cancelled():
        raise SetupCancelled("cancelled")
    if proc.returncode != 0:
        text = "\n".join(lines[-40:])
        if any(h in text for h in NO_NETWORK_HINTS):
            raise SetupError(
                "pip could not download fastsam-geo or its dependencies (no network, or PyPI not reachable): "
                "connect to the internet, or set a local wheel, sdist or project folder as the source in Settings."
            )
        raise SetupError(f"{' '.join(cmd[:4])} failed (exit code {proc.returncode}): {lines[-1] if lines else ''}")
    return lines


def setup_engine(
    venv_dir: str | os.PathLike[str],
    *,
    source: str | None = None,
    torch: bool = False,
    base_python: str | None = None,
    log: Callable[[str], None] = print,
    progress: Callable[[float], None] = lambda _p: None,
    cancelled: Callable[[], bool] = lambda: False,
) -> str:
    """Create ``venv_dir`` and install fastsam-geo into it; the new environment's python.

    Raises:
        SetupError: no suitable Python, pip failed (the no-network case named as such).
        SetupCancelled: ``cancelled()`` became true (the half-made environment is removed).
    """
    venv_dir = Path(venv_dir)
    if source and not source.startswith(("http://", "https://")) and not Path(source).exists():
        raise SetupError(f"the engine source {source} does not exist; give a wheel, an sdist or a project folder")
    python = base_python
    if python is None:
        python, notes = find_base_python()
        for n in notes:
            log(n)
        if python is None:
            raise SetupError(
                "no Python 3.10+ with venv and ensurepip was found (tried: " + "; ".join(notes) + "); install "
                "Python 3.10+ (on Debian/Ubuntu: apt install python3-venv) and try again."
            )
    fresh = not venv_python(venv_dir).exists()
    try:
        progress(5.0)
        if fresh:
            venv_dir.parent.mkdir(parents=True, exist_ok=True)
            _run([python, "-m", "venv", str(venv_dir)], log, cancelled)
        progress(20.0)
        py = str(venv_python(venv_dir))
        _run([py, "-m", "pip", "install", "--progress-bar", "off", requirement(source, torch)], log, cancelled)
        progress(95.0)
        check = _run([py, "-c", "import fastsam_geo; print(fastsam_geo.__version__)"], log, cancelled)
        log(f"fastsam-geo {check[-1] if check else '?'} installed in {venv_dir}")
        progress(100.0)
        return py
    except SetupError:
        if fresh:
            shutil.rmtree(venv_dir, ignore_errors=True)
        raise
