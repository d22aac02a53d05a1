"""``fastsam-geo worker``: the engine as a JSON-lines server on stdin/stdout (for the QGIS plugin).

QGIS runs its own Python, without torch; the plugin starts this worker with a Python that has
fastsam-geo installed and talks to it one JSON object per line. The worker keeps the model and
the per-tile "everything" masks warm between requests, so a second click on the same area
answers from the mask cache instead of running the network again.

Protocol (version :data:`PROTOCOL`), one JSON object per line each way::

    -> {"id": 1, "cmd": "hello"}
    <- {"id": 1, "type": "result", "result": {"protocol": 1, "version": "0.1.0", "pid": 4242, ...}}
    -> {"id": 2, "cmd": "extract", "params": {"raster": "a.tif", "output": "b.gpkg",
        "prompts": {"points": [[500010.0, 4999990.0, 1]]}}}
    <- {"id": 2, "type": "progress", "done": 1, "total": 1}
    <- {"id": 2, "type": "result", "result": {"buildings": 1, "output": "b.gpkg", ...}}
    -> {"id": 3, "cmd": "cancel", "params": {"job": 2}}
    <- {"id": 3, "type": "result", "result": {"cancelled": false}}
    -> {"id": 4, "cmd": "shutdown"}
    <- {"id": 4, "type": "result", "result": {"bye": true}}

Errors are ``{"id": n, "type": "error", "error": "one line", "kind": "RasterError"}``; ``kind`` is
the engine's error class (:mod:`fastsam_geo.errors`), ``"Cancelled"`` for a cancelled job,
``"ProtocolError"`` for a malformed request (a field of another JSON type than it takes is named,
with what was given and what is expected: ``params.overwrite: expected true or false, got
"false"``), ``"OptionError"`` for a value ``extract`` refuses too. Commands:

``hello``
    Who the worker is (protocol, version, pid, Python, default weights); answered at once.
``status``
    Loaded models, mask cache counters, queued and running jobs.
``extract``
    :func:`fastsam_geo.pipeline.extract_buildings` with the parameters of :func:`extract_params`;
    jobs run one at a time in a job thread, in the order received, and report ``progress``
    after each tile.
``warmup``
    Load a model (same ``weights``/``device``/``conf``/``iou`` parameters as ``extract``) ahead of
    the first click.
``cancel``
    Stop job ``params.job`` (default: every queued and running job); the job answers with a
    ``Cancelled`` error and writes nothing (the worker has no resume: send the job again).
``shutdown``
    Cancel everything and exit. End of input (the plugin went away) does the same.

An ``extract`` without ``output`` writes into the worker's temporary folder; that folder is
removed when the worker exits, so a client keeps such an output by copying it before then.

Only protocol lines go to stdout: everything else that writes to stdout in this process (Python
``print``, ultralytics, C libraries) is sent to stderr, and logging goes to stderr.

This module holds the server (:class:`WorkerServer`, its job thread and reading loop) and the
``worker`` command; the wire (messages, JSON lines) is in :mod:`fastsam_geo.worker_protocol`,
the checks of a request's fields in :mod:`fastsam_geo.worker_params` and the engine (models,
mask cache) in :mod:`fastsam_geo.worker_engine`, whose names are re-exported here.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import queue
import sys
import threading
import traceback
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click

from fastsam_geo import __version__
from fastsam_geo.errors import Cancelled, FastSAMGeoError
from fastsam_geo.worker_engine import (  # noqa: F401  (moved there in issue 22, re-exported)
    Engine,
    LazySegmenter,
    SegmenterFactory,
    _fastsam_factory,
    _Recorded,
    cancelled_message,
)
from fastsam_geo.worker_params import (  # noqa: F401  (moved there, re-exported)
    _EXTRACT_KEYS,
    cancel_job,
    extract_params,
    prompts_from_json,
)
from fastsam_geo.worker_protocol import (  # noqa: F401  (moved there in issue 22, re-exported)
    CACHE_ENV,
    PROTOCOL,
    CancelFn,
    Message,
    ProgressFn,
    ProtocolError,
    _stdin_lines,
    default_cache_dir,
    line_writer,
    one_line,
    protocol_stdout,
    valid_id,
)

log = logging.getLogger("fastsam_geo.worker")


# ---------------------------------------------------------------------------- the server
@dataclass
class Job:
    """One queued or running request of the job thread."""

    id: Any
    cmd: str
    params: dict[str, Any]
    cancel: threading.Event = field(default_factory=threading.Event)


class WorkerServer:
    """Reads requests, answers them; long commands run one at a time in a job thread.

    Args:
        write: called with each reply (a dict); must be thread-safe (see :func:`line_writer`).
        engine: the engine (default: a new :class:`Engine`).

    The reading loop (:meth:`serve`) never blocks on a job, so a ``cancel`` is seen while a
    job runs: it sets the job's event, which the pipeline's cancel callback checks per tile.
    """

    def __init__(self, write: Callable[[Message], None], engine: Engine | None = None) -> None:
        self.write = write
        self.engine = engine or Engine()
        self.jobs: queue.Queue[Job | None] = queue.Queue()
        self.pending: dict[Any, Job] = {}
        self.current: Job | None = None
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._job_loop, name="fastsam-geo-jobs", daemon=True)
        self._thread.start()

    # -- replies
    def reply(self, rid: Any, result: Any) -> None:
        self.write({"id": rid, "type": "result", "result": result})

    def error(self, rid: Any, exc: BaseException) -> None:
        kind = type(exc).__name__
        self.write({"id": rid, "type": "error", "error": one_line(exc), "kind": kind})

    # -- the job thread
    def _job_loop(self) -> None:
        while True:
            job = self.jobs.get()
            if job is None:
                return
            with self._lock:
                self.current = job
            try:
                if job.cancel.is_set():
                    raise Cancelled("cancelled before it started; nothing was written.")
                if job.cmd == "extract":

                    def progress(done: int, total: int, rid: Any = job.id) -> None:
                        self.write({"id": rid, "type": "progress", "done": int(done), "total": int(total)})

                    result = self.engine.extract(job.id, job.params, progress, job.cancel.is_set)
                else:  # warmup
                    result = self.engine.warmup(job.params)
                self.reply(job.id, result)
            except Exception as exc:
                if not isinstance(exc, FastSAMGeoError):
                    log.error("job %s (%s) failed:\n%s", job.id, job.cmd, traceback.format_exc())
                self.error(job.id, exc)
            finally:
                with self._lock:
                    self.current = None
                    self.pending.pop(job.id, None)

    # -- the reading loop
    def handle(self, msg: Any) -> bool:
        """Answer one request; False when the server should stop (``shutdown``)."""
        rid = msg.get("id") if isinstance(msg, dict) else None
        try:
            if not valid_id(rid):
                bad, rid = rid, None  # answered with id null: the request's id cannot be written back
                raise ProtocolError(
                    f"request id {str(bad)[:50]} is not a string, a whole or finite number, or null; use e.g. 1"
                )
            if not isinstance(msg, dict) or not isinstance(msg.get("cmd"), str):
                raise ProtocolError(f"a request is an object with a 'cmd' string, got {str(msg)[:200]}")
            cmd = msg["cmd"]
            params = {} if msg.get("params") is None else msg["params"]
            if not isinstance(params, dict):
                raise ProtocolError(f"params must be an object, got {type(params).__name__}")
            if cmd == "hello":
                self.reply(rid, self.hello())
            elif cmd == "status":
                with self._lock:
                    running = None if self.current is None else self.current.id
                    queued = [j for j in self.pending if j != running]
                self.reply(rid, {**self.engine.status(), "running": running, "queued": queued})
            elif cmd in ("extract", "warmup"):
                if cmd == "extract":
                    extract_params(params)  # malformed requests fail now, not in the queue
                job = Job(rid, cmd, params)
                with self._lock:
                    if rid in self.pending:
                        raise ProtocolError(f"request id {rid!r} is already in use by a queued or running job")
                    self.pending[rid] = job
                self.jobs.put(job)
            elif cmd == "cancel":
                self.reply(rid, {"cancelled": self.cancel(cancel_job(params))})
            elif cmd == "shutdown":
                self.cancel(None)
                self.reply(rid, {"bye": True})
                return False
            else:
                raise ProtocolError(f"unknown command {cmd!r}; known: hello, status, extract, warmup, cancel, shutdown")
        except Exception as exc:
            self.error(rid, exc)
        return True

    def cancel(self, job_id: Any = None) -> bool:
        """Cancel job ``job_id`` (None: every job); True when something was cancelled."""
        with self._lock:
            if job_id is None:
                jobs = list(self.pending.values())
            else:
                jobs = [self.pending[job_id]] if job_id in self.pending else []
        for job in jobs:
            job.cancel.set()
        return bool(jobs)

    def hello(self) -> dict[str, Any]:
        """Who this worker is (answered without loading torch)."""
        try:
            from fastsam_geo.weights import resolve_weights

            default_weights, weights_error = str(resolve_weights(None)), None
        except FastSAMGeoError as exc:
            default_weights, weights_error = None, one_line(exc)
        return {
            "protocol": PROTOCOL,
            "version": __version__,
            "pid": os.getpid(),
            "python": sys.executable,
            "python_version": platform.python_version(),
            "platform": platform.platform(),
            "default_weights": default_weights,
            "weights_error": weights_error,
            "cache_dir": str(self.engine.cache_dir),
        }

    def serve(self, lines: Iterable[str]) -> int:
        """Answer each line of ``lines`` until ``shutdown`` or their end; returns the exit code."""
        for line in lines:
            line = line.strip()
            if not line:
                continue
            try:
                msg = json.loads(line)
            except ValueError as exc:
                self.error(None, ProtocolError(f"not JSON ({exc}): {line[:200]}"))
                continue
            if not self.handle(msg):
                break
        else:
            self.cancel(None)  # end of input: the client is gone
        self.close()
        return 0

    def close(self, timeout: float = 10.0) -> None:
        """Stop the job thread (after its current job notices the cancel), then the engine."""
        self.jobs.put(None)
        self._thread.join(timeout)
        self.engine.close()


@click.command(short_help="Serve the engine as JSON lines on stdin/stdout (for the QGIS plugin).")
@click.option(
    "--cache-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help=f"Folder of the everything-mask cache (default: ${CACHE_ENV} or the user cache folder).",
)
def worker_command(cache_dir: Path | None) -> None:
    """Run the engine as a long-lived worker that reads JSON requests, one per line, on stdin and
    writes JSON replies (progress, results, errors) on stdout. Logs go to stderr. Used by the
    QGIS plugin; see the module documentation of fastsam_geo.worker for the protocol.

    \b
    Example:
      echo '{"id": 1, "cmd": "hello"}' | fastsam-geo worker
    """
    os.environ.setdefault("YOLO_VERBOSE", "False")
    write = line_writer(protocol_stdout())
    server = WorkerServer(write, Engine(cache_dir))
    log.info("fastsam-geo worker %s ready (pid %d, protocol %d)", __version__, os.getpid(), PROTOCOL)
    code = server.serve(_stdin_lines())
    sys.exit(code)


__all__ = [
    "PROTOCOL",
    "Engine",
    "Job",
    "ProtocolError",
    "WorkerServer",
    "default_cache_dir",
    "extract_params",
    "line_writer",
    "prompts_from_json",
    "worker_command",
]
