"""fastsam_geo:extract_buildings on raster layers whose file is not the whole story (processing.run).

- a layer whose CRS was set in QGIS (Layer > Set CRS, ``layer.setCrs``) over the file's own: the
  engine reads the raster in the layer's CRS, so a point prompt in that CRS selects its building and
  the output is in the layer's CRS;
- a raster read through ``/vsizip/`` keeps its prefix (the engine opens the file inside the zip).

Prints ``RESULT {...}``; exits 0 when every check passed.
"""

from __future__ import annotations

import shutil
import tempfile
import zipfile
from pathlib import Path

from common import (
    SAMPLE,
    SAMPLE_TRUTH,
    check,
    load_plugin,
    make_iface,
    plugins_folder,
    raster_layer,
    run_main,
    start_qgis,
)
from qgis.core import (
    QgsCoordinateReferenceSystem,
    QgsFeature,
    QgsGeometry,
    QgsProcessingException,
    QgsRasterLayer,
    QgsVectorLayer,
)


def point_layer(crs: str, x: float, y: float) -> QgsVectorLayer:
    """A memory point layer with one building point (label 1)."""
    layer = QgsVectorLayer(f"Point?crs={crs}&field=label:integer", "points", "memory")
    f = QgsFeature(layer.fields())
    f.setGeometry(QgsGeometry.fromWkt(f"Point ({x} {y})"))
    f.setAttribute("label", 1)
    layer.dataProvider().addFeatures([f])
    return layer


def run(params: dict[str, object], name: str) -> QgsVectorLayer | None:
    """processing.run the algorithm; its output layer, or None (the error is a failed check)."""
    import processing

    try:
        processing.run("fastsam_geo:extract_buildings", {"DEVICE": "cpu", "TTA": 0, **params})
    except QgsProcessingException as exc:
        check(f"{name}: runs", False, exc)
        return None
    return QgsVectorLayer(f"{params['OUTPUT']}|layername=buildings", name, "ogr")


def main() -> None:
    start_qgis()
    tmp = Path(tempfile.mkdtemp(prefix="fsg-qgis-layers-"))
    load_plugin(make_iface(), plugins_folder(tmp))
    truth = QgsVectorLayer(str(SAMPLE_TRUTH), "truth", "ogr")
    target = max(truth.getFeatures(), key=lambda f: f.geometry().area()).geometry().pointOnSurface().asPoint()
    # the layer's CRS set over the file's (EPSG:32633 -> EPSG:32634: same numbers, another place)
    shutil.copyfile(SAMPLE, tmp / "override.tif")
    layer = raster_layer(tmp / "override.tif")
    layer.setCrs(QgsCoordinateReferenceSystem("EPSG:32634"))
    points = point_layer("EPSG:32634", target.x(), target.y())
    out = run({"INPUT": layer, "POINTS": points, "OUTPUT": str(tmp / "override.gpkg")}, "layer CRS")
    if out is not None:
        check(
            "layer CRS set over the file's: the output is in the layer's CRS, one building under the point",
            out.crs().authid() == "EPSG:32634" and out.featureCount() == 1,
            f"{out.crs().authid()}, {out.featureCount()} features",
        )
    # a raster inside a zip, through /vsizip/
    with zipfile.ZipFile(tmp / "sample.zip", "w") as z:
        z.write(SAMPLE, "inner.tif")
    zipped = QgsRasterLayer(f"/vsizip/{tmp / 'sample.zip'}/inner.tif", "zipped", "gdal")
    check("the /vsizip/ layer is valid", zipped.isValid(), zipped.source())
    points = point_layer("EPSG:32633", target.x(), target.y())
    out = run({"INPUT": zipped, "POINTS": points, "OUTPUT": str(tmp / "zipped.gpkg")}, "/vsizip/")
    if out is not None:
        check("/vsizip/ raster: one building under the point", out.featureCount() == 1, out.featureCount())


if __name__ == "__main__":
    run_main(main)
