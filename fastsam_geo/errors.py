"""One root error for fastsam-geo; each subclass also inherits the builtin it stands for.

Messages follow one rule: say *what* is wrong, *where* (the file, the window, the
argument), and *how to fix it*, on one line, so that the CLI can print them as they
are and the QGIS plugin can show them in its message bar.
"""

from __future__ import annotations


class FastSAMGeoError(Exception):
    """Root of every error raised on purpose by fastsam-geo."""


class RasterError(FastSAMGeoError, ValueError):
    """A raster cannot be used: unreadable, no CRS, rotated transform, empty..."""


class TilingError(FastSAMGeoError, ValueError):
    """Tile size, overlap or window arguments are inconsistent."""


class PromptError(FastSAMGeoError, ValueError):
    """A prompt is malformed or lies outside the raster."""


class WeightsError(FastSAMGeoError, FileNotFoundError):
    """Model weights cannot be found or loaded."""


class OutputError(FastSAMGeoError, OSError):
    """The output cannot be written (exists without overwrite, folder not writable...)."""


class EvaluationError(FastSAMGeoError, ValueError):
    """Footprint layers cannot be scored: missing file, unreadable, no CRS..."""


class DependencyError(FastSAMGeoError, ImportError):
    """An optional dependency is missing; the message names the pip extra to install."""


class Cancelled(FastSAMGeoError):
    """The run was cancelled through its cancel callback (Ctrl-C, QGIS task cancel)."""


class OptionError(FastSAMGeoError, ValueError):
    """An option value is out of range or inconsistent (e.g. --min-area above --max-area)."""


class BusyError(FastSAMGeoError, OSError):
    """Another fastsam-geo run holds the output (its lock file is locked)."""


_DISK_FULL = ("disk is full", "no space left", "database or disk is full", "quota exceeded")


def describe_os_error(exc: BaseException, where: object = None) -> str | None:
    """One line for an operating-system error a user can act on (full disk, read-only
    file system, permission denied), or None for anything else (a bug: keep its traceback).

    >>> import errno
    >>> describe_os_error(OSError(errno.ENOSPC, "No space left on device"), "/data/b.gpkg")
    '/data/b.gpkg: no space left on the device; free some space or write the output elsewhere.'
    >>> describe_os_error(ValueError("x")) is None
    True
    """
    import errno
    import sqlite3

    where = where if where is not None else getattr(exc, "filename", None)
    prefix = f"{where}: " if where else ""
    code = getattr(exc, "errno", None)
    text = str(exc).lower()
    if code in (errno.ENOSPC, errno.EDQUOT) or any(k in text for k in _DISK_FULL):
        return f"{prefix}no space left on the device; free some space or write the output elsewhere."
    if code == errno.EROFS or "read-only file system" in text or "readonly database" in text:
        return f"{prefix}the file system is read-only; write the output to another folder."
    if code in (errno.EACCES, errno.EPERM) or "permission denied" in text:
        return f"{prefix}permission denied; choose a folder you can write to."
    if isinstance(exc, sqlite3.Error) and ("disk i/o error" in text or "unable to open" in text):
        return f"{prefix}cannot write ({exc}); check the disk and the folder's permissions."
    return None
