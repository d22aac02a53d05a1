"""The one worker shared by the panel and the Processing algorithm (so the model stays warm)."""

from __future__ import annotations

import atexit
import threading

from .engine import NOT_FOUND_HELP, Candidate, WorkerClient, WorkerNotFound, describe_candidates, find_python
from .utils import KEY_CACHE_DIR, KEY_PYTHON, PLUGIN_DIR, log, setting

_lock = threading.Lock()
_client: WorkerClient | None = None
_found: tuple[str | None, list[Candidate]] | None = None


def managed_python() -> str:
    """The python of the engine the plugin sets up itself, under the QGIS profile folder."""
    from qgis.core import QgsApplication

    from .setup_engine import managed_venv, venv_python

    return str(venv_python(managed_venv(QgsApplication.qgisSettingsDirPath())))


def discover(refresh: bool = False) -> tuple[str | None, list[Candidate]]:
    """The Python to run the worker with, and the discovery report (cached until ``refresh``)."""
    global _found
    with _lock:
        if _found is None or refresh:
            _found = find_python(setting(KEY_PYTHON, "", str) or None, PLUGIN_DIR, managed=managed_python())
            python, report = _found
            log(f"engine Python: {python or 'none found'}\n{describe_candidates(report)}", "info")
        return _found


def client() -> WorkerClient:
    """The shared worker client (created on first use; started by its first request).

    Raises:
        WorkerNotFound: no Python with fastsam-geo; the message says where it looked.
    """
    global _client
    python, report = discover()
    if python is None:
        python, report = discover(refresh=True)  # installed meanwhile?
    if python is None:
        raise WorkerNotFound(f"{NOT_FOUND_HELP} Looked at: " + "; ".join(c.describe() for c in report), "NotFound")
    cache_dir = setting(KEY_CACHE_DIR, "", str) or None
    with _lock:
        if _client is not None and (_client.python != python or _client.cache_dir != cache_dir):
            old, _client = _client, None
            threading.Thread(target=old.stop, daemon=True).start()
        if _client is None:
            _client = WorkerClient(python, cache_dir=cache_dir, log=log)
        return _client


def current() -> WorkerClient | None:
    """The shared client if one exists (never creates one)."""
    return _client


def reset() -> None:
    """Forget the discovered Python and stop the worker (after the settings changed)."""
    global _client, _found
    with _lock:
        old, _client, _found = _client, None, None
    if old is not None:
        old.stop()


def shutdown() -> None:
    """Stop the worker (plugin unload, QGIS exit)."""
    global _client
    with _lock:
        old, _client = _client, None
    if old is not None:
        old.stop()


atexit.register(shutdown)
