"""fastsam-geo: building footprints from georeferenced imagery with FastSAM."""

from __future__ import annotations

__version__ = "0.1.0"
