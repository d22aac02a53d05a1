"""fastsam-geo: building footprints from georeferenced imagery with FastSAM.

The public contract, importable from the package (loaded lazily, so that importing
``fastsam_geo.tiling`` alone stays light)::

    from fastsam_geo import extract_buildings, Tile, InstanceMasks, Segmenter, Prompts, PointPrompt
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "extract_buildings": "fastsam_geo.pipeline",
    "ExtractSummary": "fastsam_geo.pipeline",
    "BuildingFilter": "fastsam_geo.pipeline",
    "Tile": "fastsam_geo.tiling",
    "TileGrid": "fastsam_geo.tiling",
    "InstanceMasks": "fastsam_geo.masks",
    "Segmenter": "fastsam_geo.segment",
    "FastSAMSegmenter": "fastsam_geo.segment",
    "Prompts": "fastsam_geo.prompts",
    "PointPrompt": "fastsam_geo.prompts",
    "BoxPrompt": "fastsam_geo.prompts",
    "FastSAMGeoError": "fastsam_geo.errors",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'fastsam_geo' has no attribute {name!r}")
