"""Map tools for prompts: points (left click = building, right click = background) and boxes.

The tools only report map points in the canvas CRS; the panel stores each prompt with the CRS
it was clicked in and transforms it to the raster's CRS when it runs.
"""

from __future__ import annotations

from qgis.core import QgsPointXY, QgsRectangle
from qgis.gui import QgsMapCanvas, QgsMapMouseEvent, QgsMapTool, QgsRubberBand
from qgis.PyQt.QtCore import Qt, pyqtSignal
from qgis.PyQt.QtGui import QColor, QCursor

from .compat import LEFT_BUTTON, POLYGON_GEOMETRY, RIGHT_BUTTON


class PointPromptTool(QgsMapTool):
    """Left click: a building (label 1); right click: background (label 0)."""

    pointClicked = pyqtSignal(QgsPointXY, int)

    def __init__(self, canvas: QgsMapCanvas) -> None:
        super().__init__(canvas)
        self.setCursor(QCursor(Qt.CursorShape.CrossCursor))

    def canvasReleaseEvent(self, event: QgsMapMouseEvent) -> None:
        button = event.button()
        if button == LEFT_BUTTON:
            label = 1
        elif button == RIGHT_BUTTON:
            label = 0
        else:
            return
        self.pointClicked.emit(QgsPointXY(event.mapPoint()), label)


class BoxPromptTool(QgsMapTool):
    """Press, drag and release to draw a box; a rubber band follows the mouse."""

    boxDrawn = pyqtSignal(QgsRectangle)

    def __init__(self, canvas: QgsMapCanvas) -> None:
        super().__init__(canvas)
        self.setCursor(QCursor(Qt.CursorShape.CrossCursor))
        self.start: QgsPointXY | None = None
        self.band = QgsRubberBand(canvas, POLYGON_GEOMETRY)
        self.band.setColor(QColor(255, 200, 0, 60))
        self.band.setStrokeColor(QColor(255, 160, 0))
        self.band.setWidth(2)

    def _rect(self, end: QgsPointXY) -> QgsRectangle:
        assert self.start is not None
        r = QgsRectangle(self.start, end)
        r.normalize()
        return r

    def canvasPressEvent(self, event: QgsMapMouseEvent) -> None:
        if event.button() == LEFT_BUTTON:
            self.start = QgsPointXY(event.mapPoint())
            self.band.reset(POLYGON_GEOMETRY)

    def canvasMoveEvent(self, event: QgsMapMouseEvent) -> None:
        if self.start is None:
            return
        r = self._rect(QgsPointXY(event.mapPoint()))
        self.band.reset(POLYGON_GEOMETRY)
        for x, y in ((r.xMinimum(), r.yMinimum()), (r.xMaximum(), r.yMinimum()), (r.xMaximum(), r.yMaximum())):
            self.band.addPoint(QgsPointXY(x, y), False)
        self.band.addPoint(QgsPointXY(r.xMinimum(), r.yMaximum()), True)

    def canvasReleaseEvent(self, event: QgsMapMouseEvent) -> None:
        if self.start is None or event.button() != LEFT_BUTTON:
            return
        r = self._rect(QgsPointXY(event.mapPoint()))
        self.start = None
        self.band.reset(POLYGON_GEOMETRY)
        if r.width() > 0 and r.height() > 0:
            self.boxDrawn.emit(r)

    def deactivate(self) -> None:
        self.start = None
        self.band.reset(POLYGON_GEOMETRY)
        super().deactivate()

    def remove_band(self) -> None:
        """Take the rubber band off the canvas (plugin unload)."""
        self.band.reset(POLYGON_GEOMETRY)
        scene = self.band.scene()
        if scene is not None:
            scene.removeItem(self.band)
