"""Small shared pieces: the log tag, settings keys, the icon, logging to the QGIS log panel."""

from __future__ import annotations

import os
from typing import Any

from qgis.core import QgsMessageLog, QgsSettings
from qgis.PyQt.QtGui import QIcon

from .compat import CRITICAL, INFO, SUCCESS, WARNING

TAG = "fastsam-geo"
"""Tag of the plugin's messages in the QGIS log panel."""

PLUGIN_DIR = os.path.dirname(os.path.abspath(__file__))
SETTINGS_PREFIX = "fastsam_geo/"

KEY_PYTHON = "python"
KEY_CACHE_DIR = "cache_dir"
KEY_BATCH_SIZE = "batch_size"

TTA_VIEWS = (1, 2, 4, 8, 12)
"""The view counts of the engine's ``--tta`` (fastsam_geo.tta.TTA_CHOICES), in the panel's and
Processing's order."""
DEFAULT_TTA = 12
"""The engine's default (fastsam_geo.tta.DEFAULT_TTA): the 8 flips and four of them coarser."""

LEVELS = {"info": INFO, "warning": WARNING, "critical": CRITICAL, "success": SUCCESS}


def log(message: str, level: str = "info") -> None:
    """Write ``message`` to the QGIS log panel under the tag "fastsam-geo" (any thread)."""
    QgsMessageLog.logMessage(message, TAG, LEVELS.get(level, INFO))


def icon(name: str = "icon.svg") -> QIcon:
    """An icon of the plugin folder."""
    return QIcon(os.path.join(PLUGIN_DIR, name))


def setting(key: str, default: Any = None, type_: type | None = None) -> Any:
    """A plugin setting (``fastsam_geo/<key>`` in the user profile)."""
    s = QgsSettings()
    value = s.value(SETTINGS_PREFIX + key, default)
    if value is None or type_ is None:
        return value
    try:
        if type_ is bool:
            return value if isinstance(value, bool) else str(value).lower() in ("1", "true", "yes")
        return type_(value)
    except (TypeError, ValueError):
        return default


def set_setting(key: str, value: Any) -> None:
    """Store a plugin setting."""
    QgsSettings().setValue(SETTINGS_PREFIX + key, value)


def crs_name(crs: Any) -> str:
    """How a QgsCoordinateReferenceSystem is named in messages (never empty)."""
    if crs is None or not crs.isValid():
        return "no CRS"
    return crs.authid() or crs.description() or "a custom CRS"


def file_has_crs(path: str) -> bool | None:
    """Whether the raster file itself has a CRS (GDAL's answer; None when GDAL cannot tell)."""
    try:
        from osgeo import gdal
    except ImportError:
        return None
    ds = gdal.Open(path)
    if ds is None:
        return None
    try:
        return bool(ds.GetProjectionRef())
    finally:
        ds = None


def suggest_crs(extent: Any) -> str:
    """A CRS that fits a CRS-less raster's coordinates, in words (as the engine's hint).

    Bounds inside [-180, 180] x [-90, 90] look like degrees (EPSG:4326); others like metres of a
    projected CRS that the numbers alone cannot name.
    """
    xs = (abs(extent.xMinimum()), abs(extent.xMaximum()))
    ys = (abs(extent.yMinimum()), abs(extent.yMaximum()))
    if max(xs) <= 180.0 and max(ys) <= 90.0:
        return "its coordinates look like degrees: EPSG:4326 (WGS 84)"
    return "its coordinates look like metres of a projected CRS, e.g. its UTM zone (EPSG:326xx): check which"


def crs_to_assign(layer: Any, path: str) -> str | None:
    """The CRS the engine must assign to ``layer``'s raster file (None: the file has its own).

    A raster file without a CRS gets the layer's (set with *Layer > Set CRS*).

    Raises:
        ValueError: neither the file nor the layer has a CRS; the message says what to set.
    """
    if file_has_crs(path) is not False:
        return None
    crs = layer.crs()
    if crs.isValid():
        return crs.authid() or crs.toWkt()
    raise ValueError(
        f"{layer.name()} has no CRS ({suggest_crs(layer.extent())}); set it with Layer > Set CRS "
        "(or right-click the layer > Layer CRS > Set Layer CRS), then run again."
    )
