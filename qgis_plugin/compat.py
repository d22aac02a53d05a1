"""Qt5/Qt6 and QGIS 3.22 -> 4 compatibility: enum values by their newest name first.

QGIS moved many enums to ``Qgis.*`` (3.30-3.36) and Qt6 builds only accept scoped enum access.
:func:`enum` returns the first of several dotted names that exists, so one plugin runs on
QGIS 3.22 (Qt5) and on Qt6 builds.
"""

from __future__ import annotations

from typing import Any

from qgis import core, gui
from qgis.PyQt import QtCore, QtGui, QtWidgets

_ROOTS: dict[str, Any] = {}
for _module in (core, gui, QtCore, QtGui, QtWidgets):
    for _name in dir(_module):
        if _name.startswith(("Q", "Qgs", "Qgis")):
            _ROOTS.setdefault(_name, getattr(_module, _name))


def enum(*names: str) -> Any:
    """The value of the first dotted name that resolves, e.g.
    ``enum("Qgis.GeometryType.Point", "QgsWkbTypes.GeometryType.PointGeometry")``."""
    for name in names:
        head, *rest = name.split(".")
        obj = _ROOTS.get(head)
        try:
            for part in rest:
                obj = getattr(obj, part)
        except AttributeError:
            continue
        if obj is not None:
            return obj
    raise AttributeError(f"none of {', '.join(names)} exists in this QGIS/Qt")


# ---------------------------------------------------------------- values used by the plugin
POINT_GEOMETRY = enum("Qgis.GeometryType.Point", "QgsWkbTypes.GeometryType.PointGeometry")
POLYGON_GEOMETRY = enum("Qgis.GeometryType.Polygon", "QgsWkbTypes.GeometryType.PolygonGeometry")
SOURCE_POINT = enum("Qgis.ProcessingSourceType.VectorPoint", "QgsProcessing.SourceType.TypeVectorPoint")
SOURCE_POLYGON = enum("Qgis.ProcessingSourceType.VectorPolygon", "QgsProcessing.SourceType.TypeVectorPolygon")
NUMBER_INTEGER = enum("Qgis.ProcessingNumberParameterType.Integer", "QgsProcessingParameterNumber.Type.Integer")
NUMBER_DOUBLE = enum("Qgis.ProcessingNumberParameterType.Double", "QgsProcessingParameterNumber.Type.Double")
FILE_BEHAVIOR_FILE = enum("Qgis.ProcessingFileParameterBehavior.File", "QgsProcessingParameterFile.Behavior.File")
PARAM_ADVANCED = enum("Qgis.ProcessingParameterFlag.Advanced", "QgsProcessingParameterDefinition.Flag.FlagAdvanced")
RASTER_LAYER_FILTER = enum("Qgis.LayerFilter.RasterLayer", "QgsMapLayerProxyModel.Filter.RasterLayer")
POINT_LAYER_FILTER = enum("Qgis.LayerFilter.PointLayer", "QgsMapLayerProxyModel.Filter.PointLayer")
TASK_CAN_CANCEL = enum("QgsTask.Flag.CanCancel")
ICON_CIRCLE = enum("Qgis.RubberBandIconType.Circle", "QgsRubberBand.IconType.ICON_CIRCLE")
SAVE_FILE = enum("QgsFileWidget.StorageMode.SaveFile")
GET_FILE = enum("QgsFileWidget.StorageMode.GetFile")

INFO = enum("Qgis.MessageLevel.Info")
WARNING = enum("Qgis.MessageLevel.Warning")
CRITICAL = enum("Qgis.MessageLevel.Critical")
SUCCESS = enum("Qgis.MessageLevel.Success")

LEFT_BUTTON = QtCore.Qt.MouseButton.LeftButton
RIGHT_BUTTON = QtCore.Qt.MouseButton.RightButton
RIGHT_DOCK = QtCore.Qt.DockWidgetArea.RightDockWidgetArea
LEFT_DOCK = QtCore.Qt.DockWidgetArea.LeftDockWidgetArea
