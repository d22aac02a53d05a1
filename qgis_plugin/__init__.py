"""FastSAM-geo: building footprints from rasters with FastSAM, in QGIS.

The engine (``fastsam_geo``, with torch) runs in a worker process started with a Python the
plugin finds or that the user sets; nothing heavy is imported into QGIS's own Python.
"""

from __future__ import annotations

from typing import Any


def classFactory(iface: Any) -> Any:
    """Called by QGIS to create the plugin."""
    from .plugin import FastSAMGeoPlugin

    return FastSAMGeoPlugin(iface)
