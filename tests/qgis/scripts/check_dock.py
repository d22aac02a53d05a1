"""The panel tells the truth (real QGIS, the real engine, clicks through the point map tool):

1. a building click and a click that selects nothing: the result has the one building, and the
   message bar says which click found nothing, where, in which CRS;
2. a GeoPackage written twice: the second run replaces the first run's layer (one layer of that
   file in the project, with the file's features now), and says so;
3. a cancelled run into a GeoPackage leaves nothing beside it (no ``.OUT.resume.sqlite``);
4. a raster without a CRS: the run is refused with a hint that fits its coordinates; a click
   outside it names the CRS (never "in )"); after *Layer > Set CRS* the run works in that CRS.

Usage: ``/usr/bin/python3 tests/qgis/scripts/check_dock.py NOCRS.tif`` (QT_QPA_PLATFORM=offscreen;
NOCRS.tif: the sample tile without its CRS). Environment: FASTSAM_GEO_CACHE (mask cache folder).
"""

from __future__ import annotations

import os
import re
import shutil
import sqlite3
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from common import (
    RESULT,
    SAMPLE,
    check,
    click,
    load_plugin,
    make_iface,
    plugins_folder,
    raster_layer,
    run_main,
    start_qgis,
    wait,
)
from qgis.core import QgsCoordinateReferenceSystem, QgsPointXY, QgsProject, QgsProviderRegistry

BUILDING = QgsPointXY(500450.5, 4649660.5)  # on a building of the sample tile
NOTHING = QgsPointXY(500410.5, 4649620.5)  # on no object the model segments
OUTSIDE = QgsPointXY(499000.0, 4649000.0)  # off the raster


def bar_text(iface: Any) -> str:
    item = iface.messageBar().currentItem()
    return item.text() if item is not None else ""


def file_layers(path: Path) -> list[Any]:
    target = os.path.realpath(path)
    out = []
    for lyr in QgsProject.instance().mapLayers().values():
        if lyr.providerType() == "ogr":
            src = QgsProviderRegistry.instance().decodeUri("ogr", lyr.source()).get("path") or ""
            if src and os.path.realpath(src) == target:
                out.append(lyr)
    return out


def rows(path: Path) -> int:
    con = sqlite3.connect(path)
    try:
        return con.execute("SELECT count(*) FROM buildings").fetchone()[0]
    finally:
        con.close()


def main() -> None:
    nocrs_path = Path(sys.argv[1])
    start_qgis(processing=False)
    iface = make_iface()
    tmp = Path(tempfile.mkdtemp(prefix="fsg-qgis-dock-"))
    plugin = load_plugin(iface, plugins_folder(tmp))
    iface.mainWindow().show()
    canvas = iface.mapCanvas()
    layer = raster_layer()
    utm = QgsCoordinateReferenceSystem("EPSG:32633")
    canvas.setDestinationCrs(utm)
    canvas.setExtent(layer.extent())
    canvas.refresh()
    plugin.panel_action.trigger()
    dock = plugin.dock
    dock.layer_combo.setLayer(layer)
    dock.device_combo.setCurrentText("cpu")
    finished: list[dict] = []
    dock.runFinished.connect(finished.append)

    def panel_run(label: str, timeout: float = 300.0) -> dict:
        n0 = len(finished)
        task = dock.run()
        if not check(f"{label}: task started", task is not None, bar_text(iface)):
            return {}
        ok = wait(lambda: len(finished) > n0, timeout)
        check(f"{label}: finished", ok)
        return finished[-1] if ok else {}

    # 1. one click on a building, one on nothing
    dock.output_combo.setCurrentIndex(dock.output_combo.findData("memory"))
    dock.activate_point_tool()
    click(canvas, BUILDING)
    click(canvas, NOTHING)
    info = panel_run("two clicks")
    text = bar_text(iface)
    RESULT["nothing_message"] = text
    check("two clicks: one building", info.get("ok") and info["layer"].featureCount() == 1, info.get("error"))
    check("two clicks: the click on nothing is the one reported", info.get("missed") == [1], info.get("missed"))
    check(
        "two clicks: the message says which click found nothing, where, in which CRS",
        re.search(r"click 2 of 2 at \(500410\.\d\d, 4649620\.\d\d\) in EPSG:32633", text) is not None
        and "selected nothing" in text,
        text,
    )

    # 2. a GeoPackage written twice: the old layer is replaced, not left beside the new one
    gpkg = tmp / "panel.gpkg"
    dock.output_combo.setCurrentIndex(dock.output_combo.findData("gpkg"))
    dock.output_widget.setFilePath(str(gpkg))
    dock.clear_prompts()
    click(canvas, BUILDING)
    first = panel_run("gpkg, first run (a click)")
    first_name = first["layer"].name() if first.get("layer") else None
    check("gpkg first run: one building in the file's layer", first.get("ok") and rows(gpkg) == 1, first.get("error"))
    dock.clear_prompts()
    dock.set_mode("everything")
    second = panel_run("gpkg, second run (everything)")
    layers = file_layers(gpkg)
    n_file = rows(gpkg)
    RESULT["overwrite"] = {"file": n_file, "layers": [(lyr.name(), lyr.featureCount()) for lyr in layers]}
    check(
        "gpkg overwritten: one layer of that file in the project, showing the file's features",
        second.get("ok") and len(layers) == 1 and n_file > 100 and layers[0].featureCount() == n_file,
        RESULT["overwrite"],
    )
    check("gpkg overwritten: the first run's layer was the one replaced", second.get("replaced") == [first_name])
    text = bar_text(iface)
    check("gpkg overwritten: the message says so", "overwritten" in text and "replaced" in text, text)

    # 3. a cancelled run into a GeoPackage leaves nothing beside it
    cold = tmp / "cold.tif"
    shutil.copyfile(SAMPLE, cold)
    dock.layer_combo.setLayer(raster_layer(cold))
    out = tmp / "cancelled" / "c.gpkg"
    out.parent.mkdir()
    dock.output_widget.setFilePath(str(out))
    dock.tile_spin.setValue(256)
    dock.overlap_spin.setValue(32)
    n0 = len(finished)
    task = dock.run()
    started = wait(lambda: task.tiles[0] >= 2, 300)
    dock.cancel()
    done = wait(lambda: len(finished) > n0, 60)
    left = sorted(p.name for p in out.parent.iterdir())
    RESULT["left_after_cancel"] = left
    check("cancel: the run was cancelled part-way", started and done and finished[-1].get("kind") == "Cancelled")
    check("cancel: nothing left beside the output (no resume ledger)", left == [], left)
    dock.tile_spin.setValue(1024)
    dock.overlap_spin.setValue(128)

    # 4. a raster without a CRS
    nocrs = raster_layer(nocrs_path)
    nocrs.setCrs(QgsCoordinateReferenceSystem())  # as QGIS leaves it: unknown CRS
    dock.layer_combo.setLayer(nocrs)
    dock.output_combo.setCurrentIndex(dock.output_combo.findData("memory"))
    dock.set_mode("everything")
    refused = dock.run()
    text = bar_text(iface)
    RESULT["no_crs_message"] = text
    check(
        "no CRS: refused with a hint that fits its coordinates",
        refused is None and "has no CRS" in text and "metres" in text and "Layer > Set CRS" in text,
        text,
    )
    nocrs.setCrs(utm)  # Layer > Set CRS
    dock.clear_prompts()
    dock.activate_point_tool()
    click(canvas, OUTSIDE)
    refused = dock.run()
    text = bar_text(iface)
    RESULT["outside_message"] = text
    check(
        "a click outside: the message names the CRS",
        refused is None
        and re.search(r"\((49899\d|49900\d)\.\d\d, 46490\d\d\.\d\d in EPSG:32633\) lies outside nocrs", text)
        and "in )" not in text,
        text,
    )
    dock.clear_prompts()
    click(canvas, BUILDING)
    t0 = time.monotonic()
    info = panel_run("no CRS, after Layer > Set CRS")
    RESULT["assigned_crs_s"] = round(time.monotonic() - t0, 1)
    lyr = info.get("layer")
    check(
        "no CRS, after Layer > Set CRS: the click gives its building, in that CRS",
        info.get("ok") and lyr.featureCount() == 1 and lyr.crs().authid() == "EPSG:32633",
        info.get("error") or (lyr.featureCount(), lyr.crs().authid()),
    )


if __name__ == "__main__":
    run_main(main)
