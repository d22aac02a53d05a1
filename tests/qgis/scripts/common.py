"""Helpers for the scripts that run inside real QGIS (``/usr/bin/python3``, offscreen or Xvfb).

Each script prints one JSON line ``RESULT {...}`` with what it measured and exits 0 when every
check passed; ``tests/qgis/test_qgis.py`` runs them and asserts on both.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
import traceback
import unittest.mock
from collections.abc import Callable
from pathlib import Path
from typing import Any

if os.environ.get("FSG_QGIS_KEEP_HOME") != "1":  # Qt/QGIS settings of the tests never touch the real home
    _home = tempfile.mkdtemp(prefix="fsg-qgis-home-")
    os.environ["HOME"] = _home
    os.environ["XDG_CONFIG_HOME"] = os.path.join(_home, ".config")
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("YOLO_OFFLINE", "1")
os.environ.setdefault("XDG_RUNTIME_DIR", tempfile.mkdtemp(prefix="xdg-"))
sys.modules.setdefault("mock", unittest.mock)  # qgis.testing.mocked imports the old 'mock' package

REPO = Path(__file__).resolve().parents[3]
SAMPLE = REPO / "sample_tiles" / "town_s7_1024.tif"
SAMPLE_TRUTH = REPO / "sample_tiles" / "town_s7_1024_buildings.gpkg"
PLUGIN_NAME = "fastsam_geo_plugin"
PROCESSING_PLUGINS = "/usr/share/qgis/python/plugins"

from qgis.core import (  # noqa: E402
    QgsApplication,
    QgsCoordinateReferenceSystem,
    QgsCoordinateTransform,
    QgsFeatureRequest,
    QgsGeometry,
    QgsMessageLog,
    QgsPointXY,
    QgsProject,
    QgsRasterLayer,
    QgsSpatialIndex,
    QgsVectorLayer,
)
from qgis.gui import QgsLayerTreeMapCanvasBridge, QgsMapMouseEvent, QgsMessageBar  # noqa: E402
from qgis.PyQt.QtCore import QCoreApplication, QEvent, QPoint, Qt  # noqa: E402
from qgis.PyQt.QtWidgets import QToolBar, QVBoxLayout, QWidget  # noqa: E402
from qgis.testing import start_app  # noqa: E402

CHECKS: list[tuple[str, bool, str]] = []
RESULT: dict[str, Any] = {}
MESSAGES: list[tuple[str, str, int]] = []


def check(name: str, ok: bool, detail: object = "") -> bool:
    """Record one check (printed at once; the script fails at the end if any failed)."""
    CHECKS.append((name, bool(ok), str(detail)))
    print(f"{'PASS' if ok else 'FAIL'} {name} {detail}", flush=True)
    return bool(ok)


def finish() -> None:
    """Print the RESULT line and exit 0 when every check passed, 1 otherwise."""
    failed = [c for c in CHECKS if not c[1]]
    RESULT["checks"] = len(CHECKS)
    RESULT["failed"] = [f"{n}: {d}" for n, _, d in failed]
    print("RESULT " + json.dumps(RESULT, default=str), flush=True)
    sys.stdout.flush()
    os._exit(1 if failed else 0)  # skip QGIS's exit handlers (some crash on teardown offscreen)


def run_main(main: Callable[[], None]) -> None:
    try:
        main()
    except Exception:
        traceback.print_exc()
        check("script ran to the end", False, traceback.format_exc().splitlines()[-1])
    finish()


def start_qgis(processing: bool = True) -> QgsApplication:
    """A QgsApplication (``qgis.testing.start_app``), with Processing initialised."""
    app = start_app(cleanup=False)
    QgsApplication.messageLog().messageReceived.connect(lambda msg, tag, level: MESSAGES.append((tag, msg, int(level))))
    if processing:
        if PROCESSING_PLUGINS not in sys.path:
            sys.path.append(PROCESSING_PLUGINS)
        from processing.core.Processing import Processing

        Processing.initialize()
    return app


def make_iface(width: int = 1280, height: int = 800) -> Any:
    """``qgis.testing.mocked.get_iface()`` (a QgisInterface mock with a real QgsMapCanvas) wired to a
    real main window: dock widgets, toolbar icons, plugin menus and a real message bar."""
    from qgis.testing.mocked import get_iface

    iface = get_iface()
    main = iface.mainWindow()
    canvas = iface.mapCanvas()
    central = QWidget(main)
    layout = QVBoxLayout(central)
    layout.setContentsMargins(0, 0, 0, 0)
    layout.setSpacing(0)
    bar = QgsMessageBar(central)
    layout.addWidget(bar)
    layout.addWidget(canvas)
    main.setCentralWidget(central)
    main.resize(width, height)
    iface.messageBar.return_value = bar
    iface.addDockWidget.side_effect = main.addDockWidget
    iface.removeDockWidget.side_effect = main.removeDockWidget
    toolbar = QToolBar("Plugins", main)
    main.addToolBar(toolbar)
    iface.plugin_toolbar = toolbar
    iface.addToolBarIcon.side_effect = toolbar.addAction
    iface.removeToolBarIcon.side_effect = toolbar.removeAction
    menus: dict[str, list[Any]] = {}
    iface.raster_menus = menus
    iface.addPluginToRasterMenu.side_effect = lambda name, action: menus.setdefault(name, []).append(action)
    iface.removePluginRasterMenu.side_effect = lambda name, action: menus.get(name, []).remove(action)
    iface.bridge = QgsLayerTreeMapCanvasBridge(QgsProject.instance().layerTreeRoot(), canvas)
    return iface


def plugins_folder(tmp: Path) -> Path:
    """A plugins folder holding the repository's plugin as a symlink (a development install)."""
    folder = tmp / "plugins"
    folder.mkdir(parents=True, exist_ok=True)
    link = folder / PLUGIN_NAME
    if not link.exists():
        link.symlink_to(REPO / "qgis_plugin", target_is_directory=True)
    return folder


def load_plugin(iface: Any, folder: Path, name: str = PLUGIN_NAME) -> Any:
    """Load and start the plugin the way QGIS does (qgis.utils.loadPlugin/startPlugin)."""
    import qgis.utils

    qgis.utils.iface = iface
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))
    qgis.utils.plugin_paths = [str(folder)]
    qgis.utils.updateAvailablePlugins()
    if not check("qgis.utils.loadPlugin", qgis.utils.loadPlugin(name)):
        raise RuntimeError("loadPlugin failed")
    if not check("qgis.utils.startPlugin", qgis.utils.startPlugin(name)):
        raise RuntimeError("startPlugin failed")
    return qgis.utils.plugins[name]


def wait(condition: Callable[[], bool], timeout: float, step: float = 0.02) -> bool:
    """Process events until ``condition()`` or ``timeout`` seconds."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        QCoreApplication.processEvents()
        if condition():
            return True
        time.sleep(step)
    QCoreApplication.processEvents()
    return condition()


def raster_layer(path: Path = SAMPLE) -> QgsRasterLayer:
    layer = QgsRasterLayer(str(path), path.stem, "gdal")
    assert layer.isValid(), path
    QgsProject.instance().addMapLayer(layer)
    return layer


def truth_layer(path: Path = SAMPLE_TRUTH) -> QgsVectorLayer:
    layer = QgsVectorLayer(f"{path}|layername=buildings", "truth", "ogr")
    assert layer.isValid(), path
    return layer


def geometries(layer: QgsVectorLayer, crs: QgsCoordinateReferenceSystem | None = None) -> list[QgsGeometry]:
    """The layer's geometries (transformed to ``crs`` if given)."""
    ct = None
    if crs is not None and crs != layer.crs():
        ct = QgsCoordinateTransform(layer.crs(), crs, QgsProject.instance().transformContext())
    out = []
    for f in layer.getFeatures(QgsFeatureRequest()):
        g = QgsGeometry(f.geometry())
        if ct is not None:
            g.transform(ct)
        out.append(g)
    return out


def iou(a: QgsGeometry, b: QgsGeometry) -> float:
    inter = a.intersection(b).area()
    union = a.area() + b.area() - inter
    return inter / union if union > 0 else 0.0


def f1_score(pred: list[QgsGeometry], truth: list[QgsGeometry], threshold: float = 0.5) -> dict[str, float]:
    """SpaceNet-style one-to-one matching at IoU >= threshold (greedy by IoU)."""
    index = QgsSpatialIndex()
    for i, g in enumerate(truth):
        index.addFeature(i, g.boundingBox())
    pairs = []
    for j, p in enumerate(pred):
        for i in index.intersects(p.boundingBox()):
            v = iou(p, truth[i])
            if v >= threshold:
                pairs.append((v, j, i))
    pairs.sort(reverse=True)
    used_p, used_t, ious = set(), set(), []
    for v, j, i in pairs:
        if j not in used_p and i not in used_t:
            used_p.add(j)
            used_t.add(i)
            ious.append(v)
    tp = len(ious)
    precision = tp / len(pred) if pred else 0.0
    recall = tp / len(truth) if truth else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"f1": f1, "precision": precision, "recall": recall, "tp": tp, "pred": len(pred), "truth": len(truth)}


def click(canvas: Any, point_canvas_crs: QgsPointXY, button: Any = Qt.MouseButton.LeftButton) -> QPoint:
    """Press and release ``button`` on the canvas at a map point (canvas CRS), through its map tool."""
    px = canvas.getCoordinateTransform().transform(point_canvas_crs)
    pos = QPoint(round(px.x()), round(px.y()))
    tool = canvas.mapTool()
    press = QgsMapMouseEvent(canvas, QEvent.Type.MouseButtonPress, pos, button, button, Qt.KeyboardModifier.NoModifier)
    tool.canvasPressEvent(press)
    release = QgsMapMouseEvent(
        canvas, QEvent.Type.MouseButtonRelease, pos, button, Qt.MouseButton.NoButton, Qt.KeyboardModifier.NoModifier
    )
    tool.canvasReleaseEvent(release)
    return pos


def drag(canvas: Any, a: QgsPointXY, b: QgsPointXY) -> None:
    """Press at ``a``, move and release at ``b`` (canvas CRS) with the left button."""
    m2p = canvas.getCoordinateTransform()
    pa, pb = m2p.transform(a), m2p.transform(b)
    qa, qb = QPoint(round(pa.x()), round(pa.y())), QPoint(round(pb.x()), round(pb.y()))
    left, none, nomod = Qt.MouseButton.LeftButton, Qt.MouseButton.NoButton, Qt.KeyboardModifier.NoModifier
    tool = canvas.mapTool()
    tool.canvasPressEvent(QgsMapMouseEvent(canvas, QEvent.Type.MouseButtonPress, qa, left, left, nomod))
    tool.canvasMoveEvent(QgsMapMouseEvent(canvas, QEvent.Type.MouseMove, qb, none, left, nomod))
    tool.canvasReleaseEvent(QgsMapMouseEvent(canvas, QEvent.Type.MouseButtonRelease, qb, left, none, nomod))


def plugin_messages() -> list[str]:
    return [m for tag, m, _ in MESSAGES if tag == "fastsam-geo"]


__all__ = [
    "REPO",
    "RESULT",
    "SAMPLE",
    "SAMPLE_TRUTH",
    "QgsMessageLog",
    "QgsPointXY",
    "check",
    "click",
    "drag",
    "f1_score",
    "finish",
    "geometries",
    "iou",
    "load_plugin",
    "make_iface",
    "plugins_folder",
    "raster_layer",
    "run_main",
    "start_qgis",
    "truth_layer",
    "wait",
]
