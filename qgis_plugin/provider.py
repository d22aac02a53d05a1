"""Processing provider ``fastsam_geo`` and its algorithm ``fastsam_geo:extract_buildings``.

A thin wrapper over the engine's ``extract_buildings`` (run in the shared worker): usable from the
toolbox, the Graphical Modeler, ``processing.run`` and ``qgis_process``. Progress goes through
``feedback.setProgress`` (one step per tile) and cancel through ``feedback.isCanceled``.
"""

from __future__ import annotations

import os
import tempfile
from typing import Any

from qgis.core import (
    QgsCoordinateTransform,
    QgsFeatureRequest,
    QgsProcessingAlgorithm,
    QgsProcessingContext,
    QgsProcessingException,
    QgsProcessingFeedback,
    QgsProcessingOutputNumber,
    QgsProcessingParameterBoolean,
    QgsProcessingParameterEnum,
    QgsProcessingParameterFeatureSource,
    QgsProcessingParameterFile,
    QgsProcessingParameterNumber,
    QgsProcessingParameterRasterLayer,
    QgsProcessingParameterString,
    QgsProcessingParameterVectorDestination,
    QgsProcessingProvider,
    QgsProviderRegistry,
    QgsVectorFileWriter,
    QgsVectorLayer,
)
from qgis.PyQt.QtGui import QIcon

from . import connection
from .compat import (
    FILE_BEHAVIOR_FILE,
    NUMBER_DOUBLE,
    NUMBER_INTEGER,
    PARAM_ADVANCED,
    SOURCE_POINT,
    SOURCE_POLYGON,
)
from .engine import WorkerCancelled, WorkerError
from .utils import DEFAULT_TTA, KEY_BATCH_SIZE, TTA_VIEWS, crs_name, crs_to_assign, icon, setting

ENGINE_FORMATS = (".gpkg", ".geojson", ".fgb")


class FastSAMGeoProvider(QgsProcessingProvider):
    """The ``fastsam_geo`` Processing provider."""

    def id(self) -> str:
        return "fastsam_geo"

    def name(self) -> str:
        return "FastSAM-geo"

    def longName(self) -> str:
        return "FastSAM-geo building extraction"

    def icon(self) -> QIcon:
        return icon()

    def loadAlgorithms(self) -> None:
        self.addAlgorithm(ExtractBuildingsAlgorithm())


def _label_field(fields: Any) -> int:
    for i in range(fields.count()):
        if fields.at(i).name().lower() == "label":
            return i
    return -1


def _label(value: Any) -> int:
    if value is None or (hasattr(value, "isNull") and value.isNull()):
        return 1
    text = str(value).strip().lower()
    if text in ("0", "0.0", "bg", "background", "false", "no", "negative"):
        return 0
    return 1


class ExtractBuildingsAlgorithm(QgsProcessingAlgorithm):
    """Building footprints from a raster with FastSAM (everything, points, boxes or text)."""

    INPUT = "INPUT"
    OUTPUT = "OUTPUT"
    POINTS = "POINTS"
    BOXES = "BOXES"
    TEXT = "TEXT"
    TILE_SIZE = "TILE_SIZE"
    OVERLAP = "OVERLAP"
    WEIGHTS = "WEIGHTS"
    DEVICE = "DEVICE"
    CONF = "CONF"
    IOU = "IOU"
    TTA = "TTA"
    TTA_VIEWS = TTA_VIEWS
    BUILDING_FILTER = "BUILDING_FILTER"
    REGULARIZE = "REGULARIZE"
    BUILDINGS = "BUILDINGS"

    def name(self) -> str:
        return "extract_buildings"

    def displayName(self) -> str:
        return "Extract buildings (FastSAM)"

    def group(self) -> str:
        return "Building extraction"

    def groupId(self) -> str:
        return "building_extraction"

    def icon(self) -> QIcon:
        return icon()

    def tags(self) -> list[str]:
        return ["fastsam", "sam", "segment", "building", "footprint", "extraction", "ai"]

    def shortHelpString(self) -> str:
        return (
            "Extracts building footprints from a georeferenced raster with FastSAM, tile by tile, joining "
            "buildings cut at tile seams.\n\n"
            "Without prompts every object is segmented and a building filter keeps the building-like ones. "
            "POINTS (a point layer; field 'label': 1 = building, 0 = background) select the building under each "
            "point; BOXES (a polygon layer) select the best object in each polygon's bounding box; TEXT scores "
            "the objects with CLIP. Prompts may be in any CRS: they are transformed to the raster's CRS.\n\n"
            "A raster file without a CRS is read in the layer's CRS (set it with Layer > Set CRS).\n\n"
            "The engine runs in a separate Python (Raster > FastSAM-geo > Settings). WEIGHTS (empty: the engine's "
            "default model) is a FastSAM/YOLO-seg .onnx file, which every engine runs, or a .pt file, which runs "
            "its ONNX export when one lies beside it (same name, .onnx) and else needs the engine with torch "
            "(Settings: tick 'with torch', then Set up engine). .pt files are pickles: use only weights you trust."
        )

    def createInstance(self) -> ExtractBuildingsAlgorithm:
        return ExtractBuildingsAlgorithm()

    def initAlgorithm(self, config: dict[str, Any] | None = None) -> None:
        self.addParameter(QgsProcessingParameterRasterLayer(self.INPUT, "Raster (GeoTIFF, COG, VRT)"))
        self.addParameter(
            QgsProcessingParameterFeatureSource(
                self.POINTS, "Point prompts (field 'label': 1 building, 0 background)", [SOURCE_POINT], optional=True
            )
        )
        self.addParameter(
            QgsProcessingParameterFeatureSource(
                self.BOXES, "Box prompts (polygons; their bounding boxes)", [SOURCE_POLYGON], optional=True
            )
        )
        self.addParameter(QgsProcessingParameterString(self.TEXT, "Text prompt (CLIP)", optional=True))
        self.addParameter(
            QgsProcessingParameterNumber(self.TILE_SIZE, "Tile size (pixels)", NUMBER_INTEGER, 1024, False, 128, 8192)
        )
        self.addParameter(
            QgsProcessingParameterNumber(self.OVERLAP, "Tile overlap (pixels)", NUMBER_INTEGER, 128, False, 0, 4096)
        )
        self.addParameter(
            QgsProcessingParameterFile(
                self.WEIGHTS,
                "Model weights (.onnx, or .pt with the torch engine; empty: the default model)",
                FILE_BEHAVIOR_FILE,
                "",
                None,
                True,
                "Model weights (*.onnx *.pt);;ONNX (*.onnx);;PyTorch (*.pt)",
            )
        )
        self.addParameter(QgsProcessingParameterString(self.DEVICE, "Device (auto, cpu, cuda, cuda:0, mps)", "auto"))
        advanced = [
            QgsProcessingParameterNumber(
                self.CONF, "Minimum mask confidence (empty: the model's own)", NUMBER_DOUBLE, None, True, 0.0, 1.0
            ),
            QgsProcessingParameterNumber(self.IOU, "NMS IoU threshold", NUMBER_DOUBLE, 0.7, False, 0.0, 1.0),
            QgsProcessingParameterEnum(
                self.TTA,
                "Views of each tile fused (TTA: flips and quarter turns; 12 adds four coarser views for "
                "large roofs; N times the inference)",
                [str(n) if n > 1 else "1 (off, fastest)" for n in TTA_VIEWS],
                False,
                TTA_VIEWS.index(DEFAULT_TTA),
            ),
            QgsProcessingParameterBoolean(self.BUILDING_FILTER, "Building filter (everything/text mode)", True),
            QgsProcessingParameterBoolean(self.REGULARIZE, "Regularize outlines (right angles)", False),
        ]
        for p in advanced:
            p.setFlags(p.flags() | PARAM_ADVANCED)
            self.addParameter(p)
        self.addParameter(QgsProcessingParameterVectorDestination(self.OUTPUT, "Buildings", SOURCE_POLYGON))
        self.addOutput(QgsProcessingOutputNumber(self.BUILDINGS, "Number of buildings"))

    # ------------------------------------------------------------------ prompts
    def _conf(self, parameters: dict[str, Any], context: QgsProcessingContext) -> float | None:
        """The CONF parameter, or None when it is not set (the engine then uses the model's own)."""
        value = parameters.get(self.CONF)
        if value is None or (isinstance(value, str) and not value.strip()):
            return None
        return self.parameterAsDouble(parameters, self.CONF, context)

    def _prompts(
        self, parameters: dict[str, Any], context: QgsProcessingContext, dst_crs: Any, feedback: QgsProcessingFeedback
    ) -> dict[str, Any] | None:
        text = (self.parameterAsString(parameters, self.TEXT, context) or "").strip()
        if text:
            return {"text": text}
        points: list[list[float]] = []
        boxes: list[list[float]] = []
        tc = context.transformContext()
        source = self.parameterAsSource(parameters, self.POINTS, context)
        if source is not None:
            ct = QgsCoordinateTransform(source.sourceCrs(), dst_crs, tc)
            idx = _label_field(source.fields())
            if idx < 0:
                feedback.pushInfo("The point layer has no 'label' field: every point is a building (label 1).")
            for f in source.getFeatures(QgsFeatureRequest()):
                geom = f.geometry()
                if geom.isNull():
                    continue
                geom.transform(ct)
                label = _label(f.attribute(idx)) if idx >= 0 else 1
                for v in geom.vertices():
                    points.append([v.x(), v.y(), label])
        source = self.parameterAsSource(parameters, self.BOXES, context)
        if source is not None:
            ct = QgsCoordinateTransform(source.sourceCrs(), dst_crs, tc)
            for f in source.getFeatures(QgsFeatureRequest()):
                geom = f.geometry()
                if geom.isNull():
                    continue
                geom.transform(ct)
                r = geom.boundingBox()
                if r.width() > 0 and r.height() > 0:
                    boxes.append([r.xMinimum(), r.yMinimum(), r.xMaximum(), r.yMaximum()])
        if not points and not boxes:
            return None
        return {"points": points, "boxes": boxes, "crs": None}

    # ------------------------------------------------------------------ run
    def processAlgorithm(
        self, parameters: dict[str, Any], context: QgsProcessingContext, feedback: QgsProcessingFeedback
    ) -> dict[str, Any]:
        layer = self.parameterAsRasterLayer(parameters, self.INPUT, context)
        if layer is None:
            raise QgsProcessingException(self.invalidRasterError(parameters, self.INPUT))
        if layer.providerType() != "gdal":
            raise QgsProcessingException(f"{layer.name()} is not a GDAL raster file (provider {layer.providerType()}).")
        raster = str(QgsProviderRegistry.instance().decodeUri("gdal", layer.source()).get("path") or layer.source())
        try:
            assign_crs = crs_to_assign(layer, raster)
        except ValueError as exc:
            raise QgsProcessingException(str(exc)) from None
        if assign_crs:
            feedback.pushInfo(f"{raster} has no CRS in its file: the layer's, {crs_name(layer.crs())}, is used.")
        prompts = self._prompts(parameters, context, layer.crs(), feedback)
        output = self.parameterAsOutputLayer(parameters, self.OUTPUT, context)
        ext = os.path.splitext(output)[1].lower()
        temp_dir = None
        engine_output = output
        if ext not in ENGINE_FORMATS:
            temp_dir = tempfile.mkdtemp(prefix="fastsam-geo-processing-")
            engine_output = os.path.join(temp_dir, "buildings.gpkg")
        params = {
            "raster": raster,
            "output": engine_output,
            "overwrite": True,
            "weights": self.parameterAsFile(parameters, self.WEIGHTS, context) or None,
            "device": (self.parameterAsString(parameters, self.DEVICE, context) or "auto").strip(),
            "batch_size": setting(KEY_BATCH_SIZE, 1, int),
            "tile_size": self.parameterAsInt(parameters, self.TILE_SIZE, context),
            "overlap": self.parameterAsInt(parameters, self.OVERLAP, context),
            "conf": self._conf(parameters, context),
            "iou": self.parameterAsDouble(parameters, self.IOU, context),
            "prompts": prompts,
            "building_filter": self.parameterAsBoolean(parameters, self.BUILDING_FILTER, context),
            "regularize": self.parameterAsBoolean(parameters, self.REGULARIZE, context),
            **({"assign_crs": assign_crs} if assign_crs else {}),
        }
        params["tta"] = self.TTA_VIEWS[self.parameterAsEnum(parameters, self.TTA, context)]
        mode = "everything" if prompts is None else ("text" if "text" in prompts else "points/boxes")
        feedback.pushInfo(f"Extracting buildings from {raster} ({mode}); the engine runs in a worker process.")
        try:
            client = connection.client()
            hello = client.start()
            feedback.pushInfo(f"Engine: fastsam-geo {hello.get('version')} on {client.python} (pid {hello.get('pid')})")
            result = client.request(
                "extract",
                params,
                progress=lambda done, total: feedback.setProgress(100.0 * done / max(total, 1)),
                cancel=feedback.isCanceled,
            )
        except WorkerCancelled:
            feedback.reportError("Cancelled; nothing was written.")
            return {}
        except (WorkerError, TimeoutError) as exc:
            raise QgsProcessingException(str(exc)) from exc
        if temp_dir is not None:
            self._convert(result, output, context, feedback)
        cache = result.get("cache") or {}
        feedback.pushInfo(
            f"{result.get('buildings', 0)} buildings from {result.get('tiles_processed', 0)} tiles in "
            f"{result.get('seconds', 0):.1f} s ({cache.get('hits', 0)} tiles from the mask cache); "
            f"weights {result.get('weights')} (sha256 {str(result.get('weights_sha256'))[:12]}…)"
        )
        if temp_dir is not None:
            import shutil

            shutil.rmtree(temp_dir, ignore_errors=True)
        return {self.OUTPUT: output, self.BUILDINGS: int(result.get("buildings", 0))}

    def _convert(
        self, result: dict[str, Any], output: str, context: QgsProcessingContext, feedback: QgsProcessingFeedback
    ) -> None:
        """Copy the engine's GeoPackage to an output format it does not write (shp, ...)."""
        src = QgsVectorLayer(f"{result['output']}|layername={result.get('layer') or 'buildings'}", "buildings", "ogr")
        options = QgsVectorFileWriter.SaveVectorOptions()
        options.driverName = QgsVectorFileWriter.driverForExtension(os.path.splitext(output)[1])
        err, message, _, _ = QgsVectorFileWriter.writeAsVectorFormatV3(src, output, context.transformContext(), options)
        if err != QgsVectorFileWriter.WriterError.NoError:
            raise QgsProcessingException(f"cannot write {output}: {message}")
