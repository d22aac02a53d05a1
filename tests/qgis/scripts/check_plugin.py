"""Real QGIS, no model: the plugin loads and unloads cleanly, registers its Processing provider,
finds the engine's Python (or says clearly that it cannot), and its map tools turn canvas clicks
(in the raster's CRS and in EPSG:3857) into prompts in the raster's CRS.

Run: QT_QPA_PLATFORM=offscreen /usr/bin/python3 tests/qgis/scripts/check_plugin.py
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from common import (
    PLUGIN_NAME,
    REPO,
    RESULT,
    SAMPLE,
    check,
    click,
    drag,
    geometries,
    load_plugin,
    make_iface,
    plugins_folder,
    raster_layer,
    run_main,
    start_qgis,
    truth_layer,
)
from qgis.core import (
    QgsApplication,
    QgsCoordinateReferenceSystem,
    QgsCoordinateTransform,
    QgsGeometry,
    QgsPointXY,
    QgsProject,
)
from qgis.PyQt.QtCore import Qt


def main() -> None:
    import qgis.utils

    start_qgis()
    iface = make_iface()
    tmp = Path(tempfile.mkdtemp(prefix="fsg-qgis-plugin-"))
    folder = plugins_folder(tmp)
    canvas = iface.mapCanvas()
    main_window = iface.mainWindow()
    main_window.show()

    for round_ in (1, 2):  # load, use, unload -- twice: a reload must work as well
        plugin = load_plugin(iface, folder)
        meta = {
            k: qgis.utils.pluginMetadata(PLUGIN_NAME, k)
            for k in ("name", "qgisMinimumVersion", "hasProcessingProvider")
        }
        check(
            "metadata read by qgis.utils",
            meta["hasProcessingProvider"] == "yes" and meta["qgisMinimumVersion"] == "3.22",
            meta,
        )
        reg = QgsApplication.processingRegistry()
        check("provider registered", reg.providerById("fastsam_geo") is not None)
        alg = reg.algorithmById("fastsam_geo:extract_buildings")
        check("algorithm registered", alg is not None)
        names = {p.name() for p in alg.parameterDefinitions()} if alg else set()
        want = {"INPUT", "OUTPUT", "POINTS", "BOXES", "TEXT", "TILE_SIZE", "OVERLAP", "WEIGHTS", "DEVICE"}
        check("algorithm parameters", want <= names, sorted(names))
        check("toolbar icon added", plugin.panel_action in iface.plugin_toolbar.actions())
        check("raster menu entries", len(iface.raster_menus.get("&FastSAM-geo", [])) == 2)
        plugin.panel_action.trigger()
        dock = plugin.dock
        check("panel opens", dock is not None and dock.isVisible())
        check("panel docked in the main window", main_window.dockWidgetArea(dock) != Qt.DockWidgetArea.NoDockWidgetArea)

        if round_ == 1:
            prompts_checks(plugin, canvas)
            discovery_checks()

        qgis.utils.unloadPlugin(PLUGIN_NAME)
        check(f"unload #{round_}: provider removed", reg.providerById("fastsam_geo") is None)
        check(f"unload #{round_}: toolbar icon removed", not iface.plugin_toolbar.actions())
        check(f"unload #{round_}: menu entries removed", not iface.raster_menus.get("&FastSAM-geo"))
        check(f"unload #{round_}: map tool unset", canvas.mapTool() is None, canvas.mapTool())
        docks = [w for w in main_window.findChildren(type(dock)) if w.objectName() == "FastSAMGeoDock"]
        QgsApplication.processEvents()
        check(f"unload #{round_}: panel removed", all(not w.isVisible() for w in docks))
        leftover = [m for m in sys.modules if m == PLUGIN_NAME or m.startswith(PLUGIN_NAME + ".")]
        check(f"unload #{round_}: plugin modules unloaded", not leftover, leftover)
        check(f"unload #{round_}: not in active plugins", PLUGIN_NAME not in qgis.utils.active_plugins)
    RESULT["round_trips"] = 2


def prompts_checks(plugin, canvas) -> None:
    """Map tool clicks -> prompts in the raster CRS, with the canvas in the raster CRS and in 3857."""
    dock = plugin.dock
    layer = raster_layer(SAMPLE)
    truth = truth_layer()
    utm = layer.crs()
    # a truth building somewhere inside the tile, and its centroid (a point inside it)
    target = sorted(geometries(truth), key=lambda g: -g.area())[3]
    inside = target.pointOnSurface().asPoint()
    dock.layer_combo.setLayer(layer)

    canvas.setDestinationCrs(utm)
    canvas.setExtent(layer.extent())
    canvas.refresh()
    tool = dock.activate_point_tool()
    check("point tool active", canvas.mapTool() is tool)
    click(canvas, inside)
    click(canvas, QgsPointXY(inside.x() + 30, inside.y()), Qt.MouseButton.RightButton)
    pr = dock.prompts_for(layer)
    (x, y, label), (_, _, label_bg) = pr["points"]
    err = ((x - inside.x()) ** 2 + (y - inside.y()) ** 2) ** 0.5
    res = canvas.mapUnitsPerPixel()
    check(
        "left click -> building point in the raster CRS",
        label == 1 and err <= res,
        f"error {err:.3f} m, pixel {res:.3f} m",
    )
    check("right click -> background point", label_bg == 0)
    check("rubber bands drawn", dock.fg_band.numberOfVertices() == 1 and dock.bg_band.numberOfVertices() == 1)
    dock.clear_prompts()

    # the canvas in Web Mercator over the UTM raster
    merc = QgsCoordinateReferenceSystem("EPSG:3857")
    canvas.setDestinationCrs(merc)
    ct = QgsCoordinateTransform(utm, merc, QgsProject.instance().transformContext())
    canvas.setExtent(ct.transformBoundingBox(layer.extent()))
    canvas.refresh()
    p_merc = ct.transform(inside)
    click(canvas, p_merc)
    pr = dock.prompts_for(layer)
    x, y, label = pr["points"][0]
    err = ((x - inside.x()) ** 2 + (y - inside.y()) ** 2) ** 0.5
    res_utm = canvas.mapUnitsPerPixel() * 0.75  # a Mercator metre is ~0.7 ground metres at 42 deg N
    check(
        "EPSG:3857 canvas click -> the same point in EPSG:32633",
        err <= max(res_utm, 0.5) and target.contains(QgsGeometry.fromPointXY(QgsPointXY(x, y))),
        f"error {err:.3f} m; clicked {p_merc.x():.1f},{p_merc.y():.1f} (3857) -> {x:.2f},{y:.2f} (32633)",
    )
    RESULT["click_3857_error_m"] = round(err, 3)
    dock.clear_prompts()

    tool = dock.activate_box_tool()
    check("box tool active", canvas.mapTool() is tool)
    bb = target.boundingBox()
    a = ct.transform(QgsPointXY(bb.xMinimum() - 1, bb.yMinimum() - 1))
    b = ct.transform(QgsPointXY(bb.xMaximum() + 1, bb.yMaximum() + 1))
    drag(canvas, a, b)
    pr = dock.prompts_for(layer)
    box = pr["boxes"][0]
    ok = box[0] <= bb.xMinimum() and box[1] <= bb.yMinimum() and box[2] >= bb.xMaximum() and box[3] >= bb.yMaximum()
    big = (box[2] - box[0]) < bb.width() + 6 and (box[3] - box[1]) < bb.height() + 6
    check("box drawn on a 3857 canvas -> box around the building in 32633", ok and big, [round(v, 2) for v in box])
    dock.clear_prompts()
    dock.set_mode("points")
    try:
        dock.prompts_for(layer)
        check("no point -> clear message", False)
    except ValueError as exc:
        check("no point -> clear message", "left click" in str(exc), exc)


def discovery_checks() -> None:
    """Where the engine's Python comes from, and what happens when there is none."""
    from fastsam_geo_plugin import connection, engine
    from fastsam_geo_plugin.settings_dialog import SettingsDialog

    python, report = connection.discover(refresh=True)
    venv = str(REPO / ".venv" / "bin" / "python")
    check(
        "discovery finds the project's .venv next to the (symlinked) plugin",
        python == venv,
        engine.describe_candidates(report),
    )
    RESULT["discovered_python"] = python
    dlg = SettingsDialog()
    text = dlg.report_label.text()
    check("settings dialog shows what was found", "project next to the plugin" in text and venv in text)
    check(
        "Engine source has a wheel picker and a folder picker",
        dlg.source_file_button.isEnabled() and dlg.source_dir_button.isEnabled(),
    )
    check(
        "Engine source says what an empty field installs",
        "package index" in dlg.source_edit.placeholderText(),  # a symlinked plugin carries no wheel
        dlg.source_edit.placeholderText(),
    )
    # the engine in use, listed a second time (the setting names the plugin's own environment):
    # marked in use, with a tick, never a cross
    dlg.python_widget.setFilePath(venv)
    real_managed = connection.managed_python
    connection.managed_python = lambda: venv
    try:
        dlg.detect()
    finally:
        connection.managed_python = real_managed
    text = dlg.report_label.text()
    row = [r for r in text.split("<li>") if "engine set up by the plugin" in r]
    check(
        "the engine in use listed twice: a tick and 'in use', not a cross",
        len(row) == 1 and "&#10004;" in row[0] and "in use" in row[0] and "not checked" not in row[0],
        row,
    )
    # a failed set-up: its error replaces the "Setting up the engine..." line
    from fastsam_geo_plugin.setup_engine import SetupError

    dlg.report_label.setText("<p>Setting up the engine in /x (see the task bar)…</p>")
    failed = type("FailedTask", (), {"python": None, "error": SetupError("pip install failed (exit code 1): x")})()
    dlg._setup_done(failed, False)
    text = dlg.report_label.text()
    check(
        "a failed set-up: the error alone, no 'Setting up' line above it",
        "Setting up" not in text and "could not be set up: pip install failed" in text,
        text,
    )

    # nothing anywhere: a plugin folder outside any checkout, nothing on PATH, no setting
    old_path, old_home = os.environ.get("PATH", ""), os.environ.pop("FASTSAM_GEO_HOME", None)
    os.environ["PATH"] = "/usr/bin:/bin"
    try:
        none, report = engine.find_python(None, tempfile.mkdtemp())
    finally:
        os.environ["PATH"] = old_path
        if old_home is not None:
            os.environ["FASTSAM_GEO_HOME"] = old_home
    check(
        "nothing found -> None and every place reported",
        none is None and len(report) == 4,
        engine.describe_candidates(report),
    )
    ok, why = engine.probe_python("/usr/bin/python3")
    check("a Python without fastsam-geo is refused with the reason", not ok and "fastsam_geo" in why, why)
    client = engine.WorkerClient("/usr/bin/python3", start_timeout=30)
    try:
        client.start()
        check("worker without fastsam-geo -> WorkerNotFound", False)
    except engine.WorkerNotFound as exc:
        check("worker without fastsam-geo -> WorkerNotFound with help", "No Python with fastsam-geo" in str(exc), exc)
    finally:
        client.stop()
    # the python setting wins over discovery
    from fastsam_geo_plugin.utils import KEY_PYTHON, set_setting

    set_setting(KEY_PYTHON, "/usr/bin/python3")
    python, report = connection.discover(refresh=True)
    check("a bad python setting is reported and skipped", python == venv and not report[0].ok, report[0].describe())
    set_setting(KEY_PYTHON, venv)
    python, report = connection.discover(refresh=True)
    check("the python setting is used first", python == venv and report[0].ok, report[0].describe())
    set_setting(KEY_PYTHON, "")
    connection.discover(refresh=True)


if __name__ == "__main__":
    run_main(main)
