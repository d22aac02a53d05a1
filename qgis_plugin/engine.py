"""The connection to the fastsam-geo engine: find a Python that has it, and talk to its worker.

Nothing here imports Qt or QGIS, so it runs the same in the GUI thread, in a ``QgsTask`` and in a
Processing algorithm. QGIS's own Python usually lacks torch, so the engine runs in a worker
process (``<python> -m fastsam_geo worker``) that speaks JSON lines on stdin/stdout (see
``fastsam_geo/worker.py`` for the protocol).

Where the Python comes from (:func:`find_python`), first found wins:

1. the plugin setting (``fastsam_geo/python``), set in the settings dialog;
1b. the engine the plugin set up itself (``<QGIS profile>/fastsam_geo/venv``, see
   ``setup_engine.py``), when the caller passes it as ``managed``;
2. ``fastsam-geo`` on ``PATH``: the interpreter of its shebang (``python.exe`` beside it on Windows);
3. ``$FASTSAM_GEO_HOME``: a clone of the project (its ``.venv``) or a virtual environment;
4. the repository the plugin folder lives in (a development checkout, or a symlink to one):
   its ``.venv``.
"""

from __future__ import annotations

import collections
import contextlib
import itertools
import json
import os
import queue
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HOME_ENV = "FASTSAM_GEO_HOME"
PROTOCOL = 1
NOT_FOUND_HELP = (
    "No Python with fastsam-geo was found. Let the plugin set one up (Raster > FastSAM-geo > Settings > "
    "Set up engine: a virtual environment in your QGIS profile with the engine wheel that comes with the "
    "plugin, no torch), or install fastsam-geo in a Python 3.10+ environment (pip install <that wheel, "
    "or a clone of the project>; fastsam-geo is not on PyPI) and choose that environment's python in "
    "Settings, or set FASTSAM_GEO_HOME to a clone of the project where 'make install' ran."
)

LogFn = Callable[[str, str], None]
"""``log(message, level)`` with level "info", "warning" or "critical"."""


class WorkerError(Exception):
    """The worker answered a request with an error; ``kind`` is the engine's error class."""

    def __init__(self, message: str, kind: str = "WorkerError") -> None:
        super().__init__(message)
        self.kind = kind


class WorkerCancelled(WorkerError):
    """The job was cancelled."""


class WorkerDied(WorkerError):
    """The worker process stopped while a request was open (it is restarted on the next one)."""


class WorkerNotFound(WorkerError):
    """No Python with fastsam-geo is configured or could be found."""


# ---------------------------------------------------------------------------- finding a Python
@dataclass
class Candidate:
    """One place looked for a Python: where, what was found there, and whether it is usable."""

    source: str
    python: str | None
    ok: bool
    note: str
    checked: bool = True
    in_use: bool = False

    def describe(self) -> str:
        mark = "in use" if self.in_use else "found" if self.ok else "no" if self.checked else "not checked"
        where = f" {self.python}" if self.python else ""
        return f"[{mark}] {self.source}:{where} ({self.note})"


def venv_python(folder: str | os.PathLike[str]) -> Path:
    """The interpreter of the virtual environment ``folder`` (``bin/python`` or ``Scripts\\python.exe``)."""
    folder = Path(folder)
    if os.name == "nt":
        return folder / "Scripts" / "python.exe"
    return folder / "bin" / "python"


def shebang_python(script: str | os.PathLike[str]) -> str | None:
    """The interpreter that runs a console script: its shebang, pip's ``/bin/sh`` trampoline
    for long paths, ``/usr/bin/env python3``, or ``python.exe`` beside a Windows ``.exe``."""
    script = Path(script)
    if script.suffix.lower() == ".exe":
        for candidate in (script.parent / "python.exe", script.parent.parent / "python.exe"):
            if candidate.is_file():
                return str(candidate)
        return None
    try:
        with open(script, "rb") as f:
            head = f.read(4096).decode("utf-8", "replace")
    except OSError:
        return None
    if not head.startswith("#!"):
        return None
    first = head.splitlines()[0][2:].strip()
    if first in ("/bin/sh", "/usr/bin/env sh"):
        m = re.search(r"'''exec' \"?([^\"\n]+?)\"? \"\$0\"", head)  # pip's trampoline for long paths
        return m.group(1) if m else None
    try:
        parts = shlex.split(first)
    except ValueError:
        return None
    if not parts:
        return None
    if os.path.basename(parts[0]) == "env":
        args = [p for p in parts[1:] if not p.startswith("-")]
        return shutil.which(args[0]) if args else None
    return parts[0]


def repo_of_plugin(plugin_dir: str | os.PathLike[str]) -> Path | None:
    """The project checkout that holds the plugin folder (followed through a symlink), if any."""
    real = Path(os.path.realpath(plugin_dir))
    for parent in (real.parent, real.parent.parent):
        if (parent / "fastsam_geo" / "__init__.py").is_file() and (parent / "pyproject.toml").is_file():
            return parent
    return None


def probe_python(python: str, timeout: float = 60.0) -> tuple[bool, str]:
    """Whether ``python`` imports fastsam_geo; ``(True, version)`` or ``(False, reason)``."""
    if not python:
        return False, "not set"
    if not (os.path.isfile(python) and os.access(python, os.X_OK)):
        return False, "no such executable file"
    try:
        out = subprocess.run(
            [python, "-c", "import fastsam_geo, sys; print(fastsam_geo.__version__, sys.version.split()[0])"],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=worker_env(),
            cwd=neutral_cwd(),
            **_no_window(),
        )
    except (OSError, subprocess.SubprocessError) as exc:
        return False, f"cannot run it: {exc}"
    if out.returncode != 0:
        last = (out.stderr.strip().splitlines() or [f"exit code {out.returncode}"])[-1]
        return False, f"cannot import fastsam_geo ({last})"
    version, _, py = out.stdout.strip().partition(" ")
    if not version or not py:
        return False, f"did not report a fastsam-geo version (said {out.stdout.strip()[:80]!r})"
    return True, f"fastsam-geo {version}, Python {py}"


def python_candidates(
    setting: str | None, plugin_dir: str | os.PathLike[str], managed: str | os.PathLike[str] | None = None
) -> list[tuple[str, str | None, str]]:
    """Every place looked, in order: ``(source, python or None, note when None)``; ``managed`` is
    the python of the environment the plugin sets up itself (listed only when given)."""
    out: list[tuple[str, str | None, str]] = []
    out.append(("plugin setting", setting or None, "not set"))
    if managed is not None:
        exists = os.path.isfile(managed)
        out.append(("engine set up by the plugin", str(managed) if exists else None, f"{managed} not set up yet"))
    script = shutil.which("fastsam-geo")
    if script:
        py = shebang_python(script)
        out.append(("fastsam-geo on PATH", py, f"{script} has no usable shebang"))
    else:
        out.append(("fastsam-geo on PATH", None, "not on PATH"))
    home = os.environ.get(HOME_ENV, "").strip()
    if home:
        h = Path(home).expanduser()
        py = venv_python(h / ".venv") if venv_python(h / ".venv").exists() else venv_python(h)
        out.append((f"${HOME_ENV}", str(py), ""))
    else:
        out.append((f"${HOME_ENV}", None, "not set"))
    repo = repo_of_plugin(plugin_dir)
    if repo is not None:
        out.append(("project next to the plugin", str(venv_python(repo / ".venv")), ""))
    else:
        out.append(("project next to the plugin", None, f"{os.path.realpath(plugin_dir)} is not inside a checkout"))
    return out


def find_python(
    setting: str | None,
    plugin_dir: str | os.PathLike[str],
    probe: bool = True,
    managed: str | os.PathLike[str] | None = None,
) -> tuple[str | None, list[Candidate]]:
    """The first usable Python (or None) and what was found at every place looked.

    With ``probe`` each existing interpreter is asked to import fastsam_geo (stops at the first
    that does); without it, the first existing interpreter wins.
    """
    found: str | None = None
    report: list[Candidate] = []
    for source, python, note in python_candidates(setting, plugin_dir, managed):
        if python is None:
            report.append(Candidate(source, None, False, note))
            continue
        if found is not None:
            if os.path.realpath(python) == os.path.realpath(found):
                report.append(Candidate(source, python, True, "the interpreter in use (listed above)", False, True))
            else:
                report.append(Candidate(source, python, False, "not checked (an earlier one is used)", False))
            continue
        if probe:
            ok, why = probe_python(python)
        else:
            ok = os.path.isfile(python)
            why = "exists" if ok else "no such file"
        report.append(Candidate(source, python, ok, why, True, ok))
        if ok:
            found = python
    return found, report


# ---------------------------------------------------------------------------- the worker client
def worker_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of a worker: QGIS's own Python settings removed, output unbuffered."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONHOME", "PYTHONPATH", "PYTHONSTARTUP")}
    env.update({"PYTHONUNBUFFERED": "1", "PYTHONIOENCODING": "utf-8", "YOLO_VERBOSE": "False"})
    env.update(extra or {})
    return env


def neutral_cwd() -> str:
    """The working folder of engine processes: not QGIS's, so that a ``fastsam_geo`` folder there
    cannot shadow (or fake) the installed engine."""
    return tempfile.gettempdir()


def _no_window() -> dict[str, Any]:
    if os.name == "nt":  # no console window flashing up on Windows
        return {"creationflags": getattr(subprocess, "CREATE_NO_WINDOW", 0x08000000)}
    return {}


class WorkerClient:
    """A ``fastsam-geo worker`` process and the requests open on it (thread-safe).

    Args:
        python: the interpreter that has fastsam-geo.
        cache_dir: the worker's mask cache folder (None: its default).
        log: ``log(message, level)``; the worker's stderr lines arrive here as "info".
        start_timeout: seconds to wait for the worker's ``hello``.
        cancel_grace: seconds a cancelled job may take to stop before the worker is killed
            (and restarted on the next request), so a cancel never waits for long.

    A request (:meth:`request`) blocks the calling thread -- call it from a ``QgsTask`` or a
    Processing algorithm, not from the GUI thread -- and reports progress through a callback.
    When the worker dies, every open request raises :class:`WorkerDied` and the next request
    starts a new worker.
    """

    def __init__(
        self,
        python: str,
        cache_dir: str | None = None,
        log: LogFn | None = None,
        start_timeout: float = 120.0,
        cancel_grace: float = 30.0,
    ) -> None:
        self.python = python
        self.cache_dir = cache_dir
        self.log = log or (lambda msg, level: None)
        self.start_timeout = start_timeout
        self.cancel_grace = cancel_grace
        self.proc: subprocess.Popen[bytes] | None = None
        self.hello: dict[str, Any] | None = None
        self.stderr_tail: collections.deque[str] = collections.deque(maxlen=40)
        self.restarts = 0
        self._ids = itertools.count(1)
        self._waiters: dict[int, tuple[subprocess.Popen[bytes], queue.Queue[dict[str, Any]]]] = {}
        self._lock = threading.RLock()
        self._start_lock = threading.Lock()
        self._write_lock = threading.Lock()

    # -- process
    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.alive and self.proc is not None else None

    def start(self) -> dict[str, Any]:
        """Start the worker (if it is not running) and return its ``hello``."""
        with self._start_lock:
            if self.alive and self.hello is not None:
                return self.hello
            return self._start()

    def _start(self) -> dict[str, Any]:
        with self._lock:
            if self.alive:  # started but never answered hello: a stuck start; begin again
                self.proc.kill()  # type: ignore[union-attr]
            if self.proc is not None:
                self.restarts += 1
                self.log(f"restarting the fastsam-geo worker (previous exit code {self.proc.poll()})", "warning")
            if not self.python or not os.path.isfile(self.python):
                raise WorkerNotFound(f"Python interpreter {self.python!r} does not exist. {NOT_FOUND_HELP}", "NotFound")
            cmd = [self.python, "-m", "fastsam_geo", "worker"]
            if self.cache_dir:
                cmd += ["--cache-dir", str(self.cache_dir)]
            try:
                proc = subprocess.Popen(
                    cmd,
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    env=worker_env(),
                    cwd=neutral_cwd(),
                    **_no_window(),
                )
            except OSError as exc:
                raise WorkerNotFound(f"cannot start {self.python}: {exc}. {NOT_FOUND_HELP}", "NotFound") from exc
            self.proc = proc
            self.hello = None
            threading.Thread(target=self._read_stdout, args=(proc,), name="fastsam-geo-out", daemon=True).start()
            self._err_thread = threading.Thread(
                target=self._read_stderr, args=(proc,), name="fastsam-geo-err", daemon=True
            )
            self._err_thread.start()
            self.log(f"started fastsam-geo worker: {' '.join(cmd)} (pid {proc.pid})", "info")
        try:
            hello = self.request("hello", timeout=self.start_timeout, _starting=True)
        except WorkerDied as exc:
            # stdout closed first; give the stderr reader time to take the last lines (the reason)
            self._err_thread.join(timeout=5)
            tail = [t for t in self.stderr_tail if t.strip()]
            why = tail[-1] if tail else str(exc)
            raise WorkerNotFound(
                f"{self.python} cannot run the fastsam-geo worker ({why}). {NOT_FOUND_HELP}", "NotFound"
            ) from exc
        if hello.get("protocol") != PROTOCOL:
            self.stop()
            raise WorkerError(
                f"the fastsam-geo worker of {self.python} speaks protocol {hello.get('protocol')}, this plugin "
                f"{PROTOCOL}; install matching versions of the plugin and of fastsam-geo.",
                "ProtocolError",
            )
        self.hello = hello
        return hello

    def stop(self, timeout: float = 5.0) -> None:
        """Ask the worker to exit; kill it if it does not within ``timeout`` seconds."""
        with self._lock:
            proc, self.proc = self.proc, None
            self.hello = None
        if proc is None:
            return
        if proc.poll() is None:
            with contextlib.suppress(OSError):
                self._send(proc, {"id": next(self._ids), "cmd": "shutdown"})
        with contextlib.suppress(OSError):
            proc.stdin.close()  # type: ignore[union-attr]
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        self._fail_all(proc, "stopped")

    def kill(self) -> None:
        """Kill the worker at once (its open requests raise :class:`WorkerDied`)."""
        proc = self.proc
        if proc is not None and proc.poll() is None:
            proc.kill()

    # -- reader threads
    def _read_stdout(self, proc: subprocess.Popen[bytes]) -> None:
        assert proc.stdout is not None
        for raw in iter(proc.stdout.readline, b""):
            line = raw.decode("utf-8", "replace").strip()
            if not line:
                continue
            try:
                msg = json.loads(line)
            except ValueError:
                self.log(f"worker wrote a line that is not JSON: {line[:300]}", "warning")
                continue
            rid = msg.get("id") if isinstance(msg, dict) else None
            with self._lock:
                entry = self._waiters.get(rid) if isinstance(rid, int) else None
            q = entry[1] if entry is not None and entry[0] is proc else None
            if q is not None:
                q.put(msg)
            elif msg.get("type") == "error":
                self.log(f"worker error: {msg.get('error')}", "warning")
        proc.stdout.close()
        proc.fsg_reader_done = True  # type: ignore[attr-defined]
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
        self._fail_all(proc, "died")

    def _read_stderr(self, proc: subprocess.Popen[bytes]) -> None:
        assert proc.stderr is not None
        for raw in iter(proc.stderr.readline, b""):
            line = raw.decode("utf-8", "replace").rstrip()
            if line:
                self.stderr_tail.append(line)
                if proc is self.proc:  # a stopped worker's last lines are not logged (QGIS may be exiting)
                    self.log(f"worker: {line}", "info")
        proc.stderr.close()

    def _fail_all(self, proc: subprocess.Popen[bytes], why: str) -> None:
        with self._lock:
            waiters = [q for p, q in self._waiters.values() if p is proc]
        for q in waiters:
            q.put({"type": "_died", "why": why, "returncode": proc.poll()})

    def _send(self, proc: subprocess.Popen[bytes], msg: dict[str, Any]) -> None:
        data = (json.dumps(msg) + "\n").encode("utf-8")
        with self._write_lock:
            assert proc.stdin is not None
            proc.stdin.write(data)
            proc.stdin.flush()

    def _died_error(self, cmd: str, msg: dict[str, Any]) -> WorkerDied:
        tail = [t for t in self.stderr_tail if t.strip()]
        last = tail[-1] if tail else "no message"
        code = msg.get("returncode")
        return WorkerDied(
            f"the fastsam-geo worker stopped (exit code {code}) during '{cmd}'; last log line: {last}. "
            "It is restarted on the next run.",
            "WorkerDied",
        )

    # -- requests
    def request(
        self,
        cmd: str,
        params: dict[str, Any] | None = None,
        *,
        progress: Callable[[int, int], None] | None = None,
        cancel: Callable[[], bool] | None = None,
        timeout: float | None = None,
        _starting: bool = False,
    ) -> Any:
        """Send one request and wait for its result (starting the worker when needed).

        Raises:
            WorkerCancelled: ``cancel()`` became true (or the worker cancelled the job).
            WorkerDied: the worker process stopped meanwhile.
            WorkerError: the worker answered with an error (``kind`` = the engine's error class).
            TimeoutError: no answer within ``timeout`` seconds.
        """
        if not _starting:
            self.start()
        with self._lock:
            proc = self.proc
            if proc is None or proc.poll() is not None:
                raise WorkerDied(f"the fastsam-geo worker is not running ('{cmd}')", "WorkerDied")
            rid = next(self._ids)
            q: queue.Queue[dict[str, Any]] = queue.Queue()
            self._waiters[rid] = (proc, q)
        t0 = time.monotonic()
        cancel_sent: float | None = None
        try:
            try:
                self._send(proc, {"id": rid, "cmd": cmd, "params": params or {}})
            except OSError as exc:
                raise WorkerDied(f"cannot write to the fastsam-geo worker ({exc})", "WorkerDied") from exc
            while True:
                try:
                    msg = q.get(timeout=0.1)
                except queue.Empty:
                    msg = None
                if msg is None and getattr(proc, "fsg_reader_done", False) and q.empty():
                    msg = {"type": "_died", "why": "died", "returncode": proc.poll()}  # died before we listened
                now = time.monotonic()
                # Checked on every message too: a fast model sends progress more often than
                # every 0.1 s, and a cancel checked only in quiet moments would never be sent.
                if cancel is not None and cancel_sent is None and cancel():
                    cancel_sent = now
                    with contextlib.suppress(OSError):
                        self._send(proc, {"id": next(self._ids), "cmd": "cancel", "params": {"job": rid}})
                if msg is None:
                    if cancel_sent is not None and now - cancel_sent > self.cancel_grace:
                        self.log(
                            f"the worker did not stop '{cmd}' within {self.cancel_grace:.0f} s; killing it", "warning"
                        )
                        proc.kill()
                        raise WorkerCancelled("cancelled (the worker was stopped)", "Cancelled")
                    if timeout is not None and now - t0 > timeout:
                        if _starting:
                            proc.kill()
                        raise TimeoutError(f"the fastsam-geo worker did not answer '{cmd}' within {timeout:.0f} s")
                    continue
                kind = msg.get("type")
                if kind == "progress":
                    if progress is not None:
                        progress(int(msg.get("done", 0)), int(msg.get("total", 0)))
                elif kind == "result":
                    return msg.get("result")
                elif kind == "error":
                    err_kind = str(msg.get("kind") or "WorkerError")
                    text = str(msg.get("error") or "unknown error")
                    if err_kind == "Cancelled":
                        raise WorkerCancelled(text, err_kind)
                    raise WorkerError(text, err_kind)
                elif kind == "_died":
                    if cancel_sent is not None:
                        raise WorkerCancelled("cancelled (the worker was stopped)", "Cancelled")
                    raise self._died_error(cmd, msg)
        finally:
            with self._lock:
                self._waiters.pop(rid, None)


def default_plugin_dir() -> str:
    """This plugin's folder."""
    return os.path.dirname(os.path.abspath(__file__))


def describe_candidates(report: list[Candidate]) -> str:
    """The discovery report as text, one line per place looked."""
    return "\n".join(c.describe() for c in report)


__all__ = [
    "NOT_FOUND_HELP",
    "Candidate",
    "WorkerCancelled",
    "WorkerClient",
    "WorkerDied",
    "WorkerError",
    "WorkerNotFound",
    "find_python",
    "probe_python",
    "shebang_python",
]

if __name__ == "__main__":  # pragma: no cover - a manual check: python engine.py
    py, rep = find_python(None, default_plugin_dir())
    print(describe_candidates(rep), "\n->", py, file=sys.stderr)
