"""The plugin object: toolbar and menu actions, the dock panel, the Processing provider."""

from __future__ import annotations

from typing import Any

from qgis.core import QgsApplication

try:  # Qt6: QAction lives in QtGui
    from qgis.PyQt.QtGui import QAction
except ImportError:  # Qt5
    from qgis.PyQt.QtWidgets import QAction

from . import connection
from .compat import RIGHT_DOCK
from .provider import FastSAMGeoProvider
from .utils import icon, log

MENU = "&FastSAM-geo"


class FastSAMGeoPlugin:
    """Created by ``classFactory``; QGIS calls ``initGui``/``initProcessing`` and ``unload``."""

    def __init__(self, iface: Any) -> None:
        self.iface = iface
        self.provider: FastSAMGeoProvider | None = None
        self.dock: Any = None
        self.actions: list[QAction] = []
        self.toolbar: Any = None

    # -- Processing (also called alone by qgis_process)
    def initProcessing(self) -> None:
        if self.provider is None:
            self.provider = FastSAMGeoProvider()
            QgsApplication.processingRegistry().addProvider(self.provider)

    # -- GUI
    def initGui(self) -> None:
        self.initProcessing()
        main = self.iface.mainWindow()
        self.panel_action = QAction(icon(), "FastSAM-geo panel", main)
        self.panel_action.setObjectName("fastsamGeoPanelAction")
        self.panel_action.setCheckable(True)
        self.panel_action.setToolTip("Extract buildings with FastSAM (panel)")
        self.panel_action.toggled.connect(self.show_panel)
        self.settings_action = QAction(icon(), "Settings…", main)
        self.settings_action.setObjectName("fastsamGeoSettingsAction")
        self.settings_action.triggered.connect(self.open_settings)
        self.actions = [self.panel_action, self.settings_action]
        self.iface.addToolBarIcon(self.panel_action)
        for action in self.actions:
            self.iface.addPluginToRasterMenu(MENU, action)
        log("plugin loaded", "info")

    def ensure_dock(self) -> Any:
        """The panel (created on first use)."""
        if self.dock is None:
            from .dock import FastSAMDock

            self.dock = FastSAMDock(self.iface, self.iface.mainWindow())
            self.iface.addDockWidget(RIGHT_DOCK, self.dock)
            self.dock.visibilityChanged.connect(self._dock_visibility)
        return self.dock

    def show_panel(self, on: bool = True) -> None:
        if on:
            self.ensure_dock().show()
            self.dock.raise_()
        elif self.dock is not None:
            self.dock.hide()

    def _dock_visibility(self, visible: bool) -> None:
        if self.panel_action.isChecked() != visible:
            self.panel_action.blockSignals(True)
            self.panel_action.setChecked(visible)
            self.panel_action.blockSignals(False)

    def open_settings(self) -> None:
        from .settings_dialog import SettingsDialog

        SettingsDialog(self.iface.mainWindow()).exec()

    def unload(self) -> None:
        """Remove everything initGui/initProcessing added and stop the worker."""
        if self.dock is not None:
            self.dock.cleanup()
            self.iface.removeDockWidget(self.dock)
            self.dock.setParent(None)
            self.dock.deleteLater()
            self.dock = None
        for action in self.actions:
            self.iface.removePluginRasterMenu(MENU, action)
            self.iface.removeToolBarIcon(action)
            action.deleteLater()
        self.actions = []
        if self.provider is not None:
            QgsApplication.processingRegistry().removeProvider(self.provider)
            self.provider = None
        connection.shutdown()
        log("plugin unloaded", "info")
