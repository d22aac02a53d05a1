"""The wire of ``fastsam-geo worker``: message types, JSON lines in and out.

The protocol itself is described in :mod:`fastsam_geo.worker`, which re-exports every name
here. Nothing here loads a model: :func:`line_writer` and :func:`protocol_stdout` keep stdout for
protocol lines only; the checks of a request's fields (:func:`~fastsam_geo.worker_params.extract_params`,
:func:`~fastsam_geo.worker_params.prompts_from_json`) are in :mod:`fastsam_geo.worker_params`.
"""

from __future__ import annotations

import json
import math
import os
import sys
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import IO, Any

from fastsam_geo.errors import FastSAMGeoError

__all__ = [
    "CACHE_ENV",
    "PROTOCOL",
    "ProtocolError",
    "default_cache_dir",
    "line_writer",
    "one_line",
    "protocol_stdout",
    "valid_id",
]

PROTOCOL = 1
"""Version of the JSON-lines protocol; bumped on incompatible changes."""

CACHE_ENV = "FASTSAM_GEO_CACHE"
"""Environment variable naming the folder of the on-disk mask cache."""

Message = dict[str, Any]
ProgressFn = Callable[[int, int], None]
CancelFn = Callable[[], bool]


class ProtocolError(FastSAMGeoError, ValueError):
    """A request is not valid JSON, or names an unknown command or parameter."""


def default_cache_dir() -> Path:
    """Where the worker keeps everything masks: ``$FASTSAM_GEO_CACHE``, else the user cache folder.

    >>> import os; old = os.environ.get("FASTSAM_GEO_CACHE")
    >>> os.environ["FASTSAM_GEO_CACHE"] = "/tmp/masks"; str(default_cache_dir())
    '/tmp/masks'
    >>> _ = os.environ.pop("FASTSAM_GEO_CACHE") if old is None else os.environ.update(FASTSAM_GEO_CACHE=old)
    """
    env = os.environ.get(CACHE_ENV, "").strip()
    if env:
        return Path(env).expanduser()
    if sys.platform == "win32":
        base = Path(os.environ.get("LOCALAPPDATA") or Path.home() / "AppData" / "Local")
    elif sys.platform == "darwin":
        base = Path.home() / "Library" / "Caches"
    else:
        base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "fastsam-geo" / "masks"


def one_line(exc: BaseException) -> str:
    """An exception as one line of text (what the plugin shows in its message bar).

    >>> one_line(ValueError("bad\\n  value"))
    'bad value'
    >>> one_line(KeyError("raster"))
    "KeyError: 'raster'"
    """
    text = " ".join(str(exc).split())
    if not text or isinstance(exc, KeyError):
        return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    return text


# ---------------------------------------------------------------------------- lines in and out
def valid_id(rid: object) -> bool:
    """Whether a request id can be written back in a reply: a string, an integer, a finite
    number or null (JSON has no NaN or infinity; a list or an object is no id).

    >>> valid_id(1), valid_id("a"), valid_id(None), valid_id(float("nan")), valid_id([1]), valid_id(True)
    (True, True, True, False, False, False)
    """
    if rid is None or isinstance(rid, str):
        return True
    if isinstance(rid, bool) or not isinstance(rid, (int, float)):
        return False
    return math.isfinite(rid)


def line_writer(stream: IO[str]) -> Callable[[Message], None]:
    """A thread-safe writer of one JSON object per line, flushed at once. A message that is not
    valid JSON (a NaN in a result) is replaced by an error reply to the same request, so the
    worker never dies on what it writes."""
    lock = threading.Lock()

    def write(msg: Message) -> None:
        try:
            text = json.dumps(msg, default=str, allow_nan=False, separators=(",", ":"))
        except ValueError as exc:
            rid = msg.get("id") if isinstance(msg, dict) and valid_id(msg.get("id")) else None
            reply = {
                "id": rid,
                "type": "error",
                "error": f"reply cannot be written as JSON ({exc})",
                "kind": "ProtocolError",
            }
            text = json.dumps(reply, default=str, allow_nan=False, separators=(",", ":"))
        with lock:
            stream.write(text + "\n")
            stream.flush()

    return write


def protocol_stdout() -> IO[str]:
    """Keep the real stdout for the protocol and send everything else written to stdout to stderr.

    File descriptor 1 is duplicated for the protocol, then pointed at stderr, so that prints of
    Python code and of C libraries (ultralytics, torch) cannot corrupt the JSON stream.
    """
    try:
        sys.stdout.flush()
        fd = os.dup(sys.stdout.fileno())
        os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
        proto = os.fdopen(fd, "w", encoding="utf-8", newline="\n")
    except (AttributeError, OSError, ValueError):  # no real file descriptors (embedded, tests)
        proto = sys.stdout
    sys.stdout = sys.stderr
    return proto


def _stdin_lines() -> Iterable[str]:
    stream = sys.stdin.buffer if hasattr(sys.stdin, "buffer") else sys.stdin
    while True:
        raw = stream.readline()
        if not raw:
            return
        yield raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
