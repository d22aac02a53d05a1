"""Real QGIS with the real engine (worker process, FastSAM model): Processing and the panel.

- ``processing.run("fastsam_geo:extract_buildings")`` on the sample tile (everything mode) gives
  the truth buildings (building F1), with per-tile progress; with a POINTS layer in EPSG:3857 it
  gives the one building under the foreground point;
- the panel: a left click through the point map tool (QgsMapMouseEvent press/release on the
  canvas) gives the building under the point, from the mask cache; the same with the canvas in
  EPSG:3857 over the EPSG:32633 raster; a box drawn on the map gives the building in it;
- cancel stops a many-tile run at once and adds no layer; a killed worker is reported in the
  message bar and restarted by the next run; unloading the plugin stops the worker.

Environment: FSG_WEIGHTS (weights file; empty: the engine's default model), FASTSAM_GEO_CACHE
(mask cache folder), FSG_MIN_F1 (least building F1 of everything mode, default 0.8),
FSG_MIN_IOU (least IoU of a prompted building, default 0.5).

Run: QT_QPA_PLATFORM=offscreen /usr/bin/python3 tests/qgis/scripts/check_engine.py
"""

from __future__ import annotations

import os
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from common import (
    PLUGIN_NAME,
    RESULT,
    SAMPLE,
    check,
    click,
    drag,
    f1_score,
    geometries,
    iou,
    load_plugin,
    make_iface,
    plugin_messages,
    plugins_folder,
    raster_layer,
    run_main,
    start_qgis,
    truth_layer,
    wait,
)
from qgis.core import (
    QgsCoordinateReferenceSystem,
    QgsCoordinateTransform,
    QgsFeature,
    QgsGeometry,
    QgsPointXY,
    QgsProcessingException,
    QgsProcessingFeedback,
    QgsProject,
    QgsRasterLayer,
    QgsVectorLayer,
)

WEIGHTS = os.environ.get("FSG_WEIGHTS", "").strip() or None
MIN_F1 = float(os.environ.get("FSG_MIN_F1", "0.8"))
MIN_IOU = float(os.environ.get("FSG_MIN_IOU", "0.5"))


class RecordingFeedback(QgsProcessingFeedback):
    def __init__(self) -> None:
        super().__init__()
        self.values: list[float] = []
        self.errors: list[str] = []
        self.progressChanged.connect(self.values.append)

    def reportError(self, error: str, fatalError: bool = False) -> None:
        self.errors.append(error)
        super().reportError(error, fatalError)


class CancelAtFirstProgress(RecordingFeedback):
    def __init__(self) -> None:
        super().__init__()
        self.progressChanged.connect(lambda _: self.cancel())


def pid_alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    try:  # a zombie is dead too
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] != "Z"
    except OSError:
        return False


def recorded(gpkg: Path | str, key: str) -> str | None:
    """A setting the engine recorded in a GeoPackage's metadata (None: not found)."""
    import re
    import sqlite3

    con = sqlite3.connect(str(gpkg))
    try:
        xml = " ".join(r[0] for r in con.execute("SELECT metadata FROM gpkg_metadata"))
    finally:
        con.close()
    m = re.search(rf'<MDI key="{key}">([^<]*)</MDI>', xml)
    return m.group(1) if m else None


def recorded_conf(gpkg: Path | str) -> float | None:
    """The confidence threshold the engine recorded in a GeoPackage's metadata (None: not found)."""
    value = recorded(gpkg, "conf")
    return float(value) if value else None


def best_match(layer: QgsVectorLayer, target: QgsGeometry, crs: QgsCoordinateReferenceSystem) -> tuple[int, float]:
    geoms = geometries(layer, crs)
    return len(geoms), max((iou(g, target) for g in geoms), default=0.0)


def main() -> None:
    start_qgis()
    import processing

    iface = make_iface()
    tmp = Path(tempfile.mkdtemp(prefix="fsg-qgis-engine-"))
    plugin = load_plugin(iface, plugins_folder(tmp))
    iface.mainWindow().show()
    canvas = iface.mapCanvas()
    layer = raster_layer()
    utm = layer.crs()
    merc = QgsCoordinateReferenceSystem("EPSG:3857")
    to_merc = QgsCoordinateTransform(utm, merc, QgsProject.instance().transformContext())
    truth = geometries(truth_layer(), utm)
    # well-separated, mid-sized buildings away from the tile edge as click targets
    ext = layer.extent()
    interior = [
        g
        for g in truth
        if 60 < g.area() < 600
        and ext.xMinimum() + 40 < g.centroid().asPoint().x() < ext.xMaximum() - 40
        and ext.yMinimum() + 40 < g.centroid().asPoint().y() < ext.yMaximum() - 40
    ]
    interior.sort(key=lambda g: -g.area())
    targets = interior[:4]
    check("click targets", len(targets) == 4, len(targets))

    # ---------------------------------------------------------------- Processing, everything mode
    out = tmp / "processing.gpkg"
    fb = RecordingFeedback()
    t0 = time.monotonic()
    params = {"INPUT": layer, "OUTPUT": str(out), "DEVICE": "cpu", "TILE_SIZE": 1024, "OVERLAP": 128}
    if WEIGHTS:
        params["WEIGHTS"] = WEIGHTS
    res = processing.run("fastsam_geo:extract_buildings", params, feedback=fb)
    RESULT["processing_everything_s"] = round(time.monotonic() - t0, 2)
    pred = QgsVectorLayer(f"{res['OUTPUT']}|layername=buildings", "pred", "ogr")
    scores = f1_score(geometries(pred, utm), truth)
    RESULT["processing_everything"] = {k: round(v, 3) if isinstance(v, float) else v for k, v in scores.items()}
    check(f"processing.run everything: building F1 >= {MIN_F1}", scores["f1"] >= MIN_F1, scores)
    check("processing.run reports BUILDINGS", res.get("BUILDINGS") == pred.featureCount(), res)
    RESULT["processing_conf"] = recorded_conf(res["OUTPUT"])  # no CONF given: the model's own
    default_tta = recorded(res["OUTPUT"], "tta")
    check("processing.run fuses 12 views by default", default_tta == "12", default_tta)
    check("processing progress via feedback", fb.values and max(fb.values) == 100.0, fb.values)
    plain = QgsVectorLayer(str(out), "plain", "ogr")
    check(
        "the output path alone opens the buildings layer",
        plain.featureCount() == pred.featureCount(),
        f"{plain.featureCount()} vs {pred.featureCount()}",
    )

    # ---------------------------------------------------------------- Processing, 2 views fused (TTA)
    out_tta = tmp / "processing_tta.gpkg"
    params = {"INPUT": layer, "OUTPUT": str(out_tta), "DEVICE": "cpu", "TTA": 1}
    if WEIGHTS:
        params["WEIGHTS"] = WEIGHTS
    processing.run("fastsam_geo:extract_buildings", params)
    tta_scores = f1_score(geometries(QgsVectorLayer(f"{out_tta}|layername=buildings", "tta", "ogr"), utm), truth)
    RESULT["processing_tta"] = {"tta": recorded(out_tta, "tta"), "f1": round(tta_scores["f1"], 3)}
    check("processing.run TTA=2 views: recorded", recorded(out_tta, "tta") == "2", RESULT["processing_tta"])
    check(f"processing.run TTA=2 views: building F1 >= {MIN_F1}", tta_scores["f1"] >= MIN_F1, tta_scores)

    # ---------------------------------------------------------------- Processing, a format the engine does not write
    shp = tmp / "buildings.shp"
    params = {"INPUT": layer, "OUTPUT": str(shp), "DEVICE": "cpu"}
    if WEIGHTS:
        params["WEIGHTS"] = WEIGHTS
    processing.run("fastsam_geo:extract_buildings", params)
    shp_layer = QgsVectorLayer(str(shp), "shp", "ogr")
    check(
        "processing.run to a Shapefile",
        shp_layer.isValid() and shp_layer.featureCount() == pred.featureCount(),
        shp_layer.featureCount(),
    )

    # ---------------------------------------------------------------- Processing, point prompts in 3857
    target = targets[0]
    pts = QgsVectorLayer("Point?crs=EPSG:3857&field=label:integer", "clicks", "memory")
    fg = QgsFeature(pts.fields())
    fg.setGeometry(QgsGeometry.fromPointXY(to_merc.transform(target.pointOnSurface().asPoint())))
    fg.setAttribute("label", 1)
    pts.dataProvider().addFeatures([fg])
    out2 = tmp / "processing_points.gpkg"
    t0 = time.monotonic()
    params = {"INPUT": layer, "OUTPUT": str(out2), "POINTS": pts, "DEVICE": "cpu"}
    if WEIGHTS:
        params["WEIGHTS"] = WEIGHTS
    processing.run("fastsam_geo:extract_buildings", params)
    RESULT["processing_points_s"] = round(time.monotonic() - t0, 2)
    n, best = best_match(QgsVectorLayer(f"{out2}|layername=buildings", "p", "ogr"), target, utm)
    RESULT["processing_point_iou"] = round(best, 3)
    check(
        f"processing.run with a 3857 point layer: one polygon, IoU > {MIN_IOU}",
        n == 1 and best > MIN_IOU,
        f"{n} polygons, IoU {best:.3f}",
    )

    # ---------------------------------------------------------------- Processing cancel (feedback)
    fb = CancelAtFirstProgress()
    t0 = time.monotonic()
    params = {
        "INPUT": cold_copy(tmp, "cancel_processing"),
        "OUTPUT": str(tmp / "cancelled.shp"),  # through a temporary GeoPackage, removed on cancel too
        "DEVICE": "cpu",
        "TILE_SIZE": 256,
        "OVERLAP": 32,
    }
    if WEIGHTS:
        params["WEIGHTS"] = WEIGHTS
    try:
        res: object = processing.run("fastsam_geo:extract_buildings", params, feedback=fb)
    except QgsProcessingException as exc:  # a cancelled run fails (qgis_process exits non-zero)
        res = exc
    secs = time.monotonic() - t0
    RESULT["processing_cancel_s"] = round(secs, 2)
    left = sorted(p.name for p in Path(tempfile.gettempdir()).glob("fastsam-geo-processing-*"))
    check(
        "processing cancel via feedback: stops with an error, writes nothing, leaves no temporary folder",
        fb.isCanceled()
        and isinstance(res, QgsProcessingException)
        and any("Cancelled" in e for e in [str(res), *fb.errors])
        and not (tmp / "cancelled.shp").exists()
        and max(fb.values) < 100
        and not left,
        f"{res}, errors {fb.errors[-2:]}, progress {fb.values[-3:]}, {secs:.1f} s, left {left}",
    )

    # ---------------------------------------------------------------- a Graphical Modeler model
    model_checks(layer, tmp, pred.featureCount())

    # ---------------------------------------------------------------- the panel
    plugin.panel_action.trigger()
    dock = plugin.dock
    dock.layer_combo.setLayer(layer)
    dock.weights_widget.setFilePath(WEIGHTS or "")
    dock.device_combo.setCurrentText("cpu")
    dock.tile_spin.setValue(1024)
    dock.overlap_spin.setValue(128)
    finished: list[dict] = []
    dock.runFinished.connect(finished.append)

    def panel_run(label: str, timeout: float = 120.0) -> dict:
        n0 = len(finished)
        task = dock.run()
        if not check(f"{label}: task started", task is not None):
            return {}
        ok = wait(lambda: len(finished) > n0, timeout)
        check(f"{label}: finished within {timeout:.0f} s", ok)
        return finished[-1] if ok else {}

    def click_run(label: str, target: QgsGeometry, crs: QgsCoordinateReferenceSystem) -> None:
        ct = QgsCoordinateTransform(utm, crs, QgsProject.instance().transformContext())
        canvas.setDestinationCrs(crs)
        canvas.setExtent(ct.transformBoundingBox(layer.extent()))
        canvas.refresh()
        dock.clear_prompts()
        dock.output_combo.setCurrentIndex(dock.output_combo.findData("memory"))
        tool = dock.activate_point_tool()
        check(f"{label}: point tool is the canvas map tool", canvas.mapTool() is tool)
        click(canvas, ct.transform(target.pointOnSurface().asPoint()))
        t0 = time.monotonic()
        info = panel_run(label)
        secs = time.monotonic() - t0
        lyr = info.get("layer")
        if not check(f"{label}: a result layer", info.get("ok") and lyr is not None, info.get("error")):
            return
        n, best = best_match(lyr, target, utm)
        RESULT[f"{label}_iou"] = round(best, 3)
        RESULT[f"{label}_s"] = round(secs, 2)
        RESULT[f"{label}_cache"] = info["result"].get("cache")
        check(
            f"{label}: one polygon, the clicked building (IoU > {MIN_IOU})",
            n == 1 and best > MIN_IOU,
            f"{n} polygons, IoU {best:.3f}",
        )
        check(
            f"{label}: memory layer in the project",
            lyr.providerType() == "memory" and QgsProject.instance().mapLayer(lyr.id()) is not None,
        )
        check(
            f"{label}: engine attributes kept",
            {"score", "tile_ids", "prompt"} <= set(lyr.fields().names()),
            lyr.fields().names(),
        )

    click_run("panel_click_utm", targets[1], utm)
    cache = RESULT.get("panel_click_utm_cache") or {}
    check(
        "panel click answered from the mask cache (no inference)",
        cache.get("hits", 0) >= 1 and cache.get("model_tiles") == 0,
        cache,
    )
    click_run("panel_click_3857", targets[2], merc)

    # "Run after each click": two quick clicks -> one live layer with both buildings
    dock.clear_prompts()
    dock.live_check.setChecked(True)
    dock.activate_point_tool()
    n_layers = len(QgsProject.instance().mapLayers())
    n0 = len(finished)
    ct = QgsCoordinateTransform(utm, canvas.mapSettings().destinationCrs(), QgsProject.instance().transformContext())
    click(canvas, ct.transform(targets[0].pointOnSurface().asPoint()))
    click(canvas, ct.transform(targets[1].pointOnSurface().asPoint()))  # while the first run is busy
    wait(lambda: len(finished) >= n0 + 2 and not dock.busy, 120)
    live = [lyr for lyr in QgsProject.instance().mapLayers().values() if "(live" in lyr.name()]
    n_live = live[0].featureCount() if len(live) == 1 else None
    check(
        "live mode: one live layer, replaced, with both clicked buildings",
        len(live) == 1 and n_live == 2 and len(QgsProject.instance().mapLayers()) == n_layers + 1,
        f"{len(live)} live layer(s), {n_live} features, {len(finished) - n0} runs",
    )
    dock.live_check.setChecked(False)

    # a box drawn on the 3857 canvas
    dock.clear_prompts()
    dock.activate_box_tool()
    bb = targets[3].boundingBox()
    drag(
        canvas,
        to_merc.transform(QgsPointXY(bb.xMinimum() - 1.5, bb.yMinimum() - 1.5)),
        to_merc.transform(QgsPointXY(bb.xMaximum() + 1.5, bb.yMaximum() + 1.5)),
    )
    info = panel_run("panel_box_3857")
    if check("panel box: a result layer", info.get("ok"), info.get("error")):
        n, best = best_match(info["layer"], targets[3], utm)
        RESULT["panel_box_iou"] = round(best, 3)
        check(
            f"panel box: the building in the box (IoU > {MIN_IOU})", n == 1 and best > MIN_IOU, f"{n}, IoU {best:.3f}"
        )

    # a GeoPackage output
    dock.clear_prompts()
    dock.set_mode("everything")
    gpkg = tmp / "panel.gpkg"
    dock.output_combo.setCurrentIndex(dock.output_combo.findData("gpkg"))
    dock.output_widget.setFilePath(str(gpkg))
    check("panel confidence defaults to the model's", dock.conf_value() is None, dock.conf_spin.text())
    info = panel_run("panel_everything_gpkg")
    RESULT["panel_conf"] = recorded_conf(gpkg) if gpkg.exists() else None
    check("panel views default to 12", dock.tta_value() == 12 and recorded(gpkg, "tta") == "12", dock.tta_value())
    lyr = info.get("layer")
    check(
        "panel everything -> GeoPackage layer",
        info.get("ok")
        and lyr is not None
        and gpkg.exists()
        and lyr.providerType() == "ogr"
        and lyr.featureCount() == pred.featureCount(),
        f"{lyr.featureCount() if lyr else None} vs {pred.featureCount()}",
    )
    if lyr is not None:
        sym = lyr.renderer().symbol()
        check("default style: semi-transparent fill", sym.color().alpha() < 255, sym.color().name())

    # ---------------------------------------------------------------- cancel
    dock.layer_combo.setLayer(cold_copy(tmp, "cancel_panel"))
    dock.output_combo.setCurrentIndex(dock.output_combo.findData("memory"))
    dock.tile_spin.setValue(256)
    dock.overlap_spin.setValue(32)
    n_layers = len(QgsProject.instance().mapLayers())
    n0 = len(finished)
    task = dock.run()
    started = wait(lambda: task.tiles[0] >= 1, 120)
    check("cancel: the many-tile run reports per-tile progress", started and task.tiles[1] >= 16, task.tiles)
    pid = task.worker_pid
    t_cancel = time.monotonic()
    dock.cancel()
    done = wait(lambda: len(finished) > n0, 60)
    secs = time.monotonic() - t_cancel
    RESULT["cancel_s"] = round(secs, 2)
    info = finished[-1] if done else {}
    check("cancel: the run stops", done and info.get("kind") == "Cancelled", info.get("error"))
    check("cancel: within 15 s", secs < 15, f"{secs:.1f} s")
    check("cancel: no layer added", len(QgsProject.instance().mapLayers()) == n_layers)
    check("cancel: the worker lives on", pid_alive(pid))
    check(
        "cancel: progress bar reset and run button enabled", dock.progress.value() == 0 and dock.run_button.isEnabled()
    )

    # ---------------------------------------------------------------- a dead worker
    dock.layer_combo.setLayer(cold_copy(tmp, "killed_worker"))
    n0 = len(finished)
    task = dock.run()
    wait(lambda: task.worker_pid is not None, 60)
    pid = task.worker_pid
    time.sleep(0.3)
    os.kill(pid, signal.SIGKILL)
    done = wait(lambda: len(finished) > n0, 60)
    info = finished[-1] if done else {}
    check("killed worker: reported, QGIS goes on", done and info.get("kind") == "WorkerDied", info)
    bar = iface.messageBar()
    item = bar.currentItem()
    bar_text = item.text() if item is not None else ""
    check("killed worker: message in the message bar", "worker stopped" in bar_text, bar_text)
    check("killed worker: message in the log panel", any("worker stopped" in m for m in plugin_messages()))
    dock.tile_spin.setValue(1024)
    dock.overlap_spin.setValue(128)
    click_run("after_restart", targets[1], utm)
    from fastsam_geo_plugin import connection

    client = connection.current()
    new_pid = client.pid if client else None
    check(
        "killed worker: restarted by the next run",
        new_pid is not None and new_pid != pid and client.restarts >= 1,
        f"old {pid}, new {new_pid}",
    )

    # ---------------------------------------------------------------- unload stops the worker
    import qgis.utils

    qgis.utils.unloadPlugin(PLUGIN_NAME)
    check("unload stops the worker", wait(lambda: not pid_alive(new_pid), 15), new_pid)


def cold_copy(tmp: Path, name: str) -> QgsRasterLayer:
    """The sample tile under a new name: not in the mask cache (its keys hold the file), so a
    run over it takes long enough to be cancelled or killed part-way."""
    path = tmp / f"{name}.tif"
    shutil.copyfile(SAMPLE, path)
    return raster_layer(path)


def model_checks(layer, tmp: Path, n_buildings: int) -> None:
    """A model (as built in the Graphical Modeler): raster -> extract_buildings -> native:centroids."""
    import processing
    from qgis.core import (
        QgsApplication,
        QgsProcessingModelAlgorithm,
        QgsProcessingModelChildAlgorithm,
        QgsProcessingModelChildParameterSource,
        QgsProcessingModelOutput,
        QgsProcessingModelParameter,
        QgsProcessingParameterRasterLayer,
    )

    model = QgsProcessingModelAlgorithm("buildings_and_centroids", "fastsam-geo tests")
    model.addModelParameter(
        QgsProcessingParameterRasterLayer("raster", "Raster"), QgsProcessingModelParameter("raster")
    )
    extract = QgsProcessingModelChildAlgorithm("fastsam_geo:extract_buildings")
    extract.setChildId("extract")
    extract.addParameterSources("INPUT", [QgsProcessingModelChildParameterSource.fromModelParameter("raster")])
    extract.addParameterSources("DEVICE", [QgsProcessingModelChildParameterSource.fromStaticValue("cpu")])
    if WEIGHTS:
        extract.addParameterSources("WEIGHTS", [QgsProcessingModelChildParameterSource.fromStaticValue(WEIGHTS)])
    alg = QgsApplication.processingRegistry().algorithmById("fastsam_geo:extract_buildings")
    for d in alg.parameterDefinitions():  # what the modeler's dialog fills in: the defaults
        if d.name() not in extract.parameterSources() and d.defaultValue() is not None and not d.isDestination():
            extract.addParameterSources(
                d.name(), [QgsProcessingModelChildParameterSource.fromStaticValue(d.defaultValue())]
            )
    out = QgsProcessingModelOutput("buildings", "Buildings")
    out.setChildId("extract")
    out.setChildOutputName("OUTPUT")
    extract.setModelOutputs({"buildings": out})
    model.addChildAlgorithm(extract)
    centroids = QgsProcessingModelChildAlgorithm("native:centroids")
    centroids.setChildId("centroids")
    centroids.addParameterSources(
        "INPUT", [QgsProcessingModelChildParameterSource.fromChildOutput("extract", "OUTPUT")]
    )
    centroids.addParameterSources("ALL_PARTS", [QgsProcessingModelChildParameterSource.fromStaticValue(False)])
    cout = QgsProcessingModelOutput("centroids", "Centroids")
    cout.setChildId("centroids")
    cout.setChildOutputName("OUTPUT")
    centroids.setModelOutputs({"centroids": cout})
    model.addChildAlgorithm(centroids)
    ok, errors = model.validate()
    check("model validates", ok, errors)
    res = processing.run(
        model,
        {"raster": layer, "extract:buildings": str(tmp / "model.gpkg"), "centroids:centroids": str(tmp / "cent.gpkg")},
    )
    cent = QgsVectorLayer(res["centroids:centroids"], "c", "ogr")
    RESULT["model_centroids"] = cent.featureCount()
    check(
        "model: extract_buildings -> centroids, one per building",
        cent.featureCount() == n_buildings,
        f"{cent.featureCount()} vs {n_buildings}",
    )


if __name__ == "__main__":
    run_main(main)
