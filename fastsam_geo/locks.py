"""One run at a time per output: an OS lock held for the run's whole duration.

Two runs writing the same output would interleave their ledgers and staging files (one
died in SQLite, the other was told an "interrupted run" left a ledger). So a run holds an
exclusive ``fcntl.flock`` on ``.<output name>.lock`` beside the output; a second run fails
at once with :class:`~fastsam_geo.errors.BusyError` naming the holder's pid. The kernel
drops the lock when its process dies (even ``kill -9``), so a stale lock file never blocks
a later run; the file is removed when the run ends.

The lock is re-entrant within a process (the CLI holds it over a multi-raster run, and
``extract_buildings`` takes it again for a single one).
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import os
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from fastsam_geo.errors import BusyError

F = TypeVar("F", bound=Callable[..., Any])

_held: dict[str, tuple[int, int]] = {}  # lock path -> (fd, depth)
_mutex = threading.Lock()


def lock_path(output: str | os.PathLike[str]) -> Path:
    """The lock file of a run writing ``output``.

    >>> lock_path("/data/b.gpkg").name
    '.b.gpkg.lock'
    """
    out = Path(output)
    return out.with_name(f".{out.name}.lock")


def _holder(path: Path) -> str:
    with contextlib.suppress(OSError, ValueError):
        pid = int(path.read_text().strip() or 0)
        if pid:
            return f" (pid {pid})"
    return ""


def _acquire(path: Path, output: str | os.PathLike[str]) -> int:
    """Lock ``path`` (created if needed); raise BusyError when another process holds it."""
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise BusyError(
                f"another fastsam-geo run is writing {output}{_holder(path)}; wait for it to finish, "
                "or stop it (a lock held by a dead process is released by the system)."
            ) from None
        except OSError:
            os.close(fd)
            raise
        try:  # the holder may have removed the file between our open and our lock: lock the new one
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if same:
            os.ftruncate(fd, 0)
            os.write(fd, str(os.getpid()).encode())
            return fd
        os.close(fd)


@contextlib.contextmanager
def output_lock(output: str | os.PathLike[str]) -> Iterator[Path]:
    """Hold the lock of ``output`` for the duration of the block.

    >>> import tempfile
    >>> out = Path(tempfile.mkdtemp()) / "b.gpkg"
    >>> with output_lock(out) as lock:
    ...     lock.exists()
    True
    >>> lock.exists()
    False
    """
    path = lock_path(Path(output).absolute())
    key = str(path)
    with _mutex:
        if key in _held:
            fd, depth = _held[key]
            _held[key] = (fd, depth + 1)
        else:
            _held[key] = (_acquire(path, output), 1)
    try:
        yield path
    finally:
        with _mutex:
            fd, depth = _held[key]
            if depth > 1:
                _held[key] = (fd, depth - 1)
            else:
                del _held[key]
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()  # while still locked: a waiting run then locks a fresh file
                os.close(fd)


def locks_job_outputs(func: F) -> F:
    """Decorate a function whose first argument is a sequence of jobs with an ``output``:
    each output is locked for the call (the output folders are checked first)."""

    @functools.wraps(func)
    def wrapper(jobs: Any, *args: Any, **kwargs: Any) -> Any:
        from fastsam_geo.output import check_output

        jobs = list(jobs)
        with contextlib.ExitStack() as stack:
            for job in jobs:
                check_output(job.output, overwrite=True)
                stack.enter_context(output_lock(job.output))
            return func(jobs, *args, **kwargs)

    return wrapper  # type: ignore[return-value]
