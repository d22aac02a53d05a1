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
