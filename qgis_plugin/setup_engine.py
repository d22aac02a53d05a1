"""Set up an engine for the plugin by itself: a virtual environment under the QGIS profile.

Nothing here imports Qt or QGIS (the ``QgsTask`` around it is :class:`tasks.SetupEngineTask`).
Steps: find a Python 3.10+ that can make a virtual environment (QGIS's own Python may lack
``venv``/``ensurepip``), ``python -m venv <profile>/fastsam_geo/venv``, then ``pip install``
fastsam-geo into it: the light engine (ONNX Runtime, no torch) by default, ``[torch]`` on
request. What is installed: the source the user picks (a wheel, an sdist or a project folder),
else the engine wheel the plugin zip carries (``engine/fastsam_geo-<version>-py3-none-any.whl``,
with the default ONNX model inside) or a newer fastsam-geo from the package index when there is
one; its dependencies come from the package index. Output lines go to a log callback, a cancel
stops pip at once and removes the half-made environment, and the usual failures come back as one
sentence naming the cause pip gave: no network, a package missing from the index, no suitable Python.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

PACKAGE = "fastsam-geo"
MIN_PYTHON = (3, 10)
WHEEL_FOLDER = "engine"
"""Where the plugin zip carries the engine wheel, inside the plugin folder (``make plugin-zip``)."""
NETWORK_HINTS = (
    "Failed to establish a new connection",
    "Temporary failure in name resolution",
    "Name or service not known",
    "Network is unreachable",
    "No route to host",
    "Connection refused",
    "Connection reset",
    "Read timed out",
    "ConnectTimeoutError",
    "ProxyError",
    "SSLError",
    "Max retries exceeded",
)
"""Lines of pip's output that mean the package index could not be reached."""
MISSING_RE = re.compile(r"No matching distribution found for ([^\s;]+)")


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


def wheel_version(path: str | os.PathLike[str]) -> tuple[int, ...]:
    """The version of a fastsam-geo wheel from its file name, as numbers to sort by.

    >>> wheel_version("fastsam_geo-0.10.2-py3-none-any.whl") > wheel_version("fastsam_geo-0.9.0-py3-none-any.whl")
    True
    """
    version = Path(path).name.split("-")[1]
    return tuple(int(p) if p.isdigit() else 0 for p in re.split(r"[.+]", version))


def bundled_wheel(plugin_dir: str | os.PathLike[str] | None = None) -> Path | None:
    """The engine wheel the plugin zip carries (``<plugin>/engine/fastsam_geo-*.whl``; the newest if
    several), or None (a plugin copied from a checkout carries none)."""
    folder = Path(plugin_dir or os.path.dirname(os.path.abspath(__file__))) / WHEEL_FOLDER
    wheels = sorted(folder.glob("fastsam_geo-*.whl"), key=wheel_version)
    return wheels[-1] if wheels else None


def pip_install_args(source: str | None, torch: bool, bundled: str | os.PathLike[str] | None = None) -> list[str]:
    """What ``pip install`` gets: the source the user picked; else the bundled wheel, or a newer
    fastsam-geo from the index (``--find-links`` offers the wheel beside the index, and pip takes
    the newest); else fastsam-geo from the index. ``[torch]`` on request.

    >>> pip_install_args(None, False)
    ['fastsam-geo']
    >>> pip_install_args("/src/fastsam-geo", True)
    ['/src/fastsam-geo[torch]']
    >>> pip_install_args(None, True, "/p/engine/fastsam_geo-0.1.0-py3-none-any.whl")
    ['--find-links', '/p/engine', 'fastsam-geo[torch]>=0.1.0']
    """
    extra = "[torch]" if torch else ""
    source = (source or "").strip()
    if source:
        return [source + extra]
    if bundled is not None:
        bundled = Path(bundled)
        version = ".".join(str(v) for v in wheel_version(bundled))
        return ["--find-links", str(bundled.parent), f"{PACKAGE}{extra}>={version}"]
    return [PACKAGE + extra]


def requirement(source: str | None, torch: bool) -> str:
    """What pip installs without a bundled wheel: the index's fastsam-geo, or a local wheel / sdist /
    folder, with ``[torch]`` on request.

    >>> requirement(None, False), requirement(None, True), requirement("/src/fastsam-geo", True)
    ('fastsam-geo', 'fastsam-geo[torch]', '/src/fastsam-geo[torch]')
    """
    return pip_install_args(source, torch)[-1]


def pip_failure(
    lines: Sequence[str], returncode: int, index_error: Callable[[str], str | None] = lambda _name: None
) -> str:
    """The cause of a failed ``pip install``, in one sentence, from pip's own output.

    A package the index does not have is not a network failure, but pip says "No matching
    distribution found" for both: connection errors in its output (pip prints them when it
    retries), or ``index_error(name)`` (why the index cannot be reached, None when it can: see
    :func:`index_error`), tell them apart.

    >>> print(pip_failure(["ERROR: No matching distribution found for fastsam-geo"], 1))  # doctest: +ELLIPSIS
    fastsam-geo is not on the package index pip uses (pip: "No matching distribution found for fastsam-geo"; ...
    >>> pip_failure(["WARNING: Retrying ... Failed to establish a new connection: [Errno 111]",
    ...              "ERROR: No matching distribution found for numpy"], 1).startswith("pip could not reach")
    True
    """
    text = "\n".join(lines)
    errors = [line.strip() for line in lines if line.strip().startswith("ERROR:")]
    network = [line.strip() for line in lines if any(h in line for h in NETWORK_HINTS)]
    missing = MISSING_RE.findall(text)
    if not network and missing:
        unreachable = index_error(missing[-1])
        network = [unreachable] if unreachable else []
    if network:
        return (
            f"pip could not reach the package index (no network, or a proxy or firewall in the way): "
            f"{network[-1][:300]}. Connect to the internet (pip's settings: pip config list), or pick a "
            "local wheel or project folder as the Engine source in Settings."
        )
    if missing:
        name = missing[-1]
        if name.lower().replace("_", "-").startswith(PACKAGE):
            fix = (
                "fastsam-geo is not published there: leave Engine source empty to install the wheel that comes "
                "with the plugin, or pick a fastsam-geo wheel or project folder."
            )
        else:
            fix = f"install {name} into the engine's environment by hand, or point pip at an index that has it."
        return (
            f'{name} is not on the package index pip uses (pip: "No matching distribution found for {name}"; '
            f"the index was reached, so this is not a network failure): {fix}"
        )
    last = errors[-1] if errors else (lines[-1].strip() if lines else "")
    return f"pip install failed (exit code {returncode}): {last}"


def index_urls(py: str) -> list[str]:
    """The package index URLs pip of ``py`` uses (its configuration, ``$PIP_INDEX_URL``; PyPI by default)."""
    url = os.environ.get("PIP_INDEX_URL", "").strip()
    if not url:
        try:
            out = subprocess.run(
                [py, "-m", "pip", "config", "get", "global.index-url"], capture_output=True, text=True, timeout=60
            )
            url = out.stdout.strip() if out.returncode == 0 else ""
        except (OSError, subprocess.SubprocessError):
            url = ""
    return [url or "https://pypi.org/simple"]


def index_error(py: str) -> Callable[[str], str | None]:
    """``check(name)``: why the main package index of ``py``'s pip cannot be reached for ``name``
    (a connection error), or None when it answers (even "404: no such project")."""
    import urllib.error
    import urllib.request

    def check(name: str) -> str | None:
        for url in index_urls(py):
            if not url.startswith(("http://", "https://")):
                continue
            page = f"{url.rstrip('/')}/{name}/"
            try:
                urllib.request.urlopen(page, timeout=15).close()
            except urllib.error.HTTPError:
                continue  # the index answered
            except (urllib.error.URLError, OSError) as exc:
                return f"{page}: {getattr(exc, 'reason', exc)}"
        return None

    return check


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
        if cmd[1:4] == ["-m", "pip", "install"]:
            raise SetupError(pip_failure(lines, proc.returncode, index_error(cmd[0])))
        raise SetupError(f"{' '.join(cmd[:4])} failed (exit code {proc.returncode}): {lines[-1] if lines else ''}")
    return lines


def installed_from(lines: Sequence[str]) -> str:
    """Where pip took fastsam-geo from, from its output ("" when it does not say).

    >>> installed_from(["Processing /p/engine/fastsam_geo-0.1.0-py3-none-any.whl", "Collecting numpy"])
    '/p/engine/fastsam_geo-0.1.0-py3-none-any.whl'
    """
    pattern = re.compile(r"(?:Processing|Downloading|Using cached|Obtaining)\s+(\S*fastsam[_-]geo\S*)")
    for line in lines:
        m = pattern.search(line)
        if m:
            return m.group(1)
    return ""


def setup_engine(
    venv_dir: str | os.PathLike[str],
    *,
    source: str | None = None,
    torch: bool = False,
    bundled: str | os.PathLike[str] | None = None,
    base_python: str | None = None,
    log: Callable[[str], None] = print,
    progress: Callable[[float], None] = lambda _p: None,
    cancelled: Callable[[], bool] = lambda: False,
) -> str:
    """Create ``venv_dir`` and install fastsam-geo into it (:func:`pip_install_args`: ``source``,
    else the ``bundled`` wheel or a newer one from the index); the new environment's python.

    Raises:
        SetupError: no suitable Python, pip failed (the cause named: no network, a missing package).
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
        args = pip_install_args(source, torch, bundled)
        pip_lines = _run([py, "-m", "pip", "install", "--progress-bar", "off", *args], log, cancelled)
        progress(95.0)
        check = _run([py, "-c", "import fastsam_geo; print(fastsam_geo.__version__)"], log, cancelled)
        origin = installed_from(pip_lines)
        where = f" from {origin}" if origin else ""
        log(f"fastsam-geo {check[-1] if check else '?'} installed in {venv_dir}{where}")
        progress(100.0)
        return py
    except SetupError:
        if fresh:
            shutil.rmtree(venv_dir, ignore_errors=True)
        raise
