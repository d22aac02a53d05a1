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
