"""A screenshot of QGIS with the FastSAM-geo panel open and buildings extracted over the sample tile.

Run under Xvfb (a real X server; the documented command, from the repository root):

    xvfb-run -a -s "-screen 0 1600x1000x24" /usr/bin/python3 tests/qgis/scripts/screenshot.py docs/qgis_panel.png

FSG_WEIGHTS picks the weights (default: the engine's default model). The panel runs "everything"
on the sample tile, then a left click with the point tool marks one building (green marker) and
selects it (highlighted); the window is grabbed into the PNG.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

if os.environ.get("DISPLAY"):
    os.environ.setdefault("QT_QPA_PLATFORM", "xcb")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from common import (
    RESULT,
    check,
    click,
    geometries,
    load_plugin,
    make_iface,
    plugins_folder,
    raster_layer,
    run_main,
    start_qgis,
    truth_layer,
    wait,
)
from qgis.core import QgsFillSymbol, QgsProject, QgsRectangle
from qgis.gui import QgsLayerTreeView
from qgis.PyQt.QtCore import QCoreApplication, Qt
from qgis.PyQt.QtWidgets import QDockWidget

WEIGHTS = os.environ.get("FSG_WEIGHTS", "").strip() or None


def main() -> None:
    from qgis.core import QgsLayerTreeModel

    out = Path(sys.argv[1] if len(sys.argv) > 1 else "docs/qgis_panel.png").resolve()
    start_qgis()
    iface = make_iface(1600, 1000)
    main_window = iface.mainWindow()
    main_window.setWindowTitle("QGIS - FastSAM-geo")
    # a Layers panel on the left, as in QGIS
    model = QgsLayerTreeModel(QgsProject.instance().layerTreeRoot())
    view = QgsLayerTreeView()
    view.setModel(model)
    layers_dock = QDockWidget("Layers", main_window)
    layers_dock.setObjectName("Layers")
    layers_dock.setWidget(view)
    main_window.addDockWidget(Qt.DockWidgetArea.LeftDockWidgetArea, layers_dock)

    plugin = load_plugin(iface, plugins_folder(Path(tempfile.mkdtemp(prefix="fsg-shot-"))))
    canvas = iface.mapCanvas()
    layer = raster_layer()
    canvas.setDestinationCrs(layer.crs())
    main_window.show()
    plugin.panel_action.trigger()
    dock = plugin.dock
    main_window.resizeDocks([layers_dock, dock], [250, 450], Qt.Orientation.Horizontal)
    dock.layer_combo.setLayer(layer)
    dock.weights_widget.setFilePath(WEIGHTS or "")
    dock.device_combo.setCurrentText("cpu")
    finished: list[dict] = []
    dock.runFinished.connect(finished.append)

    dock.set_mode("everything")
    dock.run()
    check("everything run", wait(lambda: bool(finished), 300) and finished[-1].get("ok"), finished[-1:] or "timeout")
    result = finished[-1]
    buildings = result["layer"]
    RESULT["buildings"] = buildings.featureCount()

    # zoom on part of the tile and click one building with the point tool
    ext = layer.extent()
    view_rect = QgsRectangle(ext.xMinimum() + 96, ext.yMinimum() + 160, ext.xMinimum() + 416, ext.yMinimum() + 400)
    canvas.setExtent(view_rect)
    truth = [g for g in geometries(truth_layer(), layer.crs()) if view_rect.contains(g.boundingBox())]
    simple = [g for g in truth if len(g.asPolygon() or [[], []]) == 1 and g.contains(g.centroid())]
    simple.sort(key=lambda g: -g.area())
    target = simple[2]
    tool = dock.activate_point_tool()
    check("point tool", canvas.mapTool() is tool)
    click(canvas, target.centroid().asPoint())
    dock.run()
    check("point run", wait(lambda: len(finished) > 1, 120) and finished[-1].get("ok"), finished[-1:])
    picked = finished[-1]["layer"]
    picked.setName("building (point)")
    picked.renderer().setSymbol(
        QgsFillSymbol.createSimple(
            {
                "color": "0,200,255,90",
                "outline_color": "0,120,255,255",
                "outline_width": "0.9",
                "outline_width_unit": "MM",
            }
        )
    )
    view.expandAll()
    canvas.refresh()
    wait(lambda: False, 1.0)
    wait(lambda: not canvas.isDrawing(), 30)
    wait(lambda: False, 0.5)
    QCoreApplication.processEvents()
    image = main_window.grab()
    out.parent.mkdir(parents=True, exist_ok=True)
    check("screenshot saved", image.save(str(out), "PNG", 0), out)  # quality 0: the strongest compression
    RESULT["screenshot"] = str(out)
    RESULT["size"] = [image.width(), image.height()]


if __name__ == "__main__":
    run_main(main)
