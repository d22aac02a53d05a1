"""QGIS (and its GDAL) open what fastsam_geo.vectorio writes, without a warning or error.

The files are written by the test (in the engine's venv) and listed in a JSON file: for each,
the path, the layer, the expected feature count, CRS (authid, or "" for a custom WKT CRS),
field names and extent.

Run: QT_QPA_PLATFORM=offscreen /usr/bin/python3 tests/qgis/scripts/check_vectorio.py files.json
"""

from __future__ import annotations

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from common import MESSAGES, RESULT, check, run_main, start_qgis
from qgis.core import QgsVectorLayer


def main() -> None:
    from osgeo import gdal

    start_qgis(processing=False)
    errors: list[tuple[int, int, str]] = []
    gdal.PushErrorHandler(lambda cls, no, msg: errors.append((int(cls), int(no), str(msg))))
    with open(sys.argv[1], encoding="utf-8") as f:
        files = json.load(f)
    for spec in files:
        path, layer = spec["path"], spec["layer"]
        uri = f"{path}|layername={layer}" if path.endswith(".gpkg") else path
        lyr = QgsVectorLayer(uri, layer, "ogr")
        name = os.path.basename(path)
        check(f"{name}: valid", lyr.isValid())
        feats = list(lyr.getFeatures())
        check(f"{name}: features", len(feats) == lyr.featureCount() == spec["count"], (len(feats), lyr.featureCount()))
        check(f"{name}: crs", lyr.crs().isValid() and lyr.crs().authid() == spec["authid"], lyr.crs().authid())
        fields = [f.name() for f in lyr.fields() if f.name() != "fid"]
        check(f"{name}: fields", fields == spec["fields"], fields)
        e = lyr.extent()
        got = [e.xMinimum(), e.yMinimum(), e.xMaximum(), e.yMaximum()]
        check(f"{name}: extent", all(abs(a - b) < 1e-6 for a, b in zip(got, spec["extent"], strict=True)), got)
        ds = gdal.OpenEx(path, gdal.OF_VECTOR)
        check(f"{name}: one layer in GDAL", ds is not None and ds.GetLayerCount() == spec["layers"])
        ds = None
    RESULT["gdal"] = gdal.__version__
    RESULT["gdal_errors"] = errors
    RESULT["qgis_warnings"] = [m for m in MESSAGES if m[2] >= 1]
    check("no GDAL warning or error", not errors, errors)
    check("no QGIS warning", not RESULT["qgis_warnings"], RESULT["qgis_warnings"])


if __name__ == "__main__":
    run_main(main)
