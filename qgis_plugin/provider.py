"""Processing provider ``fastsam_geo`` and its algorithm ``fastsam_geo:extract_buildings``.

A thin wrapper over the engine's ``extract_buildings`` (run in the shared worker): usable from the
toolbox, the Graphical Modeler, ``processing.run`` and ``qgis_process``. Progress goes through
``feedback.setProgress`` (one step per tile) and cancel through ``feedback.isCanceled``.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from typing import Any

from qgis.core import (
    QgsCoordinateTransform,
    QgsCsException,
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
    QgsRasterLayer,
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


DEVICES = ("auto", "cpu", "cuda", "mps")
"""The devices the CLI's ``--device`` takes (besides ``cuda:N``)."""


def _abs_path(path: str) -> str:
    """``path`` made absolute against the current folder (as QGIS's own algorithms read and write
    it), not the worker's; GDAL virtual paths and provider URIs are left as they are."""
    if not path or os.path.isabs(path) or path.startswith("/vsi") or re.match(r"^[A-Za-z][\w+.-]+:", path):
        return path
    return os.path.abspath(path)


def _layer_path(layer: Any) -> str | None:
    """The absolute file of a vector layer (None: not a file)."""
    path = QgsProviderRegistry.instance().decodeUri(layer.providerType(), layer.source()).get("path")
    return _abs_path(str(path)) if path else None


def _raster_path(layer: Any) -> str:
    """The GDAL path of a raster layer for the engine: absolute, with its /vsi prefix and suffix kept."""
    parts = QgsProviderRegistry.instance().decodeUri("gdal", layer.source())
    path = str(parts.get("path") or layer.source())
    prefix, suffix = str(parts.get("vsiPrefix") or ""), str(parts.get("vsiSuffix") or "")
    if prefix and not path.startswith("/vsi"):
        return f"{prefix}{_abs_path(path)}{suffix}"
    return _abs_path(path)


def _layer_crs_to_assign(layer: Any, raster: str, feedback: QgsProcessingFeedback) -> str | None:
    """The CRS the engine must assign to the raster file: the layer's when the file has none or when
    it was set on the layer (Layer > Set CRS) over the file's own; None when they agree."""
    try:
        assign_crs = crs_to_assign(layer, raster)
    except ValueError as exc:
        raise QgsProcessingException(str(exc)) from None
    if assign_crs:
        feedback.pushInfo(f"{raster} has no CRS in its file: the layer's, {crs_name(layer.crs())}, is used.")
        return assign_crs
    own = QgsRasterLayer(raster, "file", "gdal").crs()
    crs = layer.crs()
    if own.isValid() and crs.isValid() and own != crs:
        feedback.pushInfo(f"The layer's CRS, {crs_name(crs)}, is used over the one in {raster}, {crs_name(own)}.")
        return crs.authid() or crs.toWkt()
    return None


def _same_file(a: str, b: str) -> bool:
    """Whether paths ``a`` and ``b`` name the same file (existing or not)."""
    try:
        if os.path.exists(a) and os.path.exists(b):
            return os.path.samefile(a, b)
    except OSError:
        pass
    return os.path.realpath(a) == os.path.realpath(b)


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
        """The prompts for the engine (None: everything mode).

        Raises:
            QgsProcessingException: a POINTS or BOXES layer is given but yields no usable prompt, a
                box is empty, or a prompt cannot be transformed to the raster's CRS.
        """
        text = (self.parameterAsString(parameters, self.TEXT, context) or "").strip()
        if text:
            return {"text": text}
        points = self._point_prompts(parameters, context, dst_crs, feedback)
        boxes = self._box_prompts(parameters, context, dst_crs)
        if points is None and boxes is None:
            return None
        return {"points": points or [], "boxes": boxes or [], "crs": None}

    def _layer_label(self, parameters: dict[str, Any], name: str, context: QgsProcessingContext) -> str:
        """How a prompt layer is named in messages (its file, else its name)."""
        layer = self.parameterAsVectorLayer(parameters, name, context)
        if layer is not None:
            path = _layer_path(layer)
            return f"{name} ({path or layer.name()})"
        return f"{name} ({parameters.get(name)})"

    def _transformed(self, geom: Any, ct: Any, what: str) -> Any:
        """``geom`` transformed by ``ct``; a QgsProcessingException naming ``what`` when it cannot be."""
        try:
            geom.transform(ct)
        except QgsCsException as exc:
            raise QgsProcessingException(
                f"{what} cannot be transformed to the raster's CRS ({exc}): check the layer's CRS and coordinates."
            ) from None
        return geom

    def _point_prompts(
        self, parameters: dict[str, Any], context: QgsProcessingContext, dst_crs: Any, feedback: QgsProcessingFeedback
    ) -> list[list[float]] | None:
        """The POINTS layer's points in ``dst_crs`` (None: no layer given)."""
        source = self.parameterAsSource(parameters, self.POINTS, context)
        if source is None:
            return None
        label_of = self._layer_label(parameters, self.POINTS, context)
        ct = QgsCoordinateTransform(source.sourceCrs(), dst_crs, context.transformContext())
        idx = _label_field(source.fields())
        if idx < 0:
            feedback.pushInfo("The point layer has no 'label' field: every point is a building (label 1).")
        points: list[list[float]] = []
        for f in source.getFeatures(QgsFeatureRequest()):
            geom = f.geometry()
            if geom.isNull() or geom.isEmpty():
                continue
            where = f"{label_of}: point {geom.asWkt(6)} (feature {f.id()})"
            geom = self._transformed(geom, ct, where)
            label = _label(f.attribute(idx)) if idx >= 0 else 1
            for v in geom.vertices():
                points.append([v.x(), v.y(), label])
        if not points:
            raise QgsProcessingException(f"{label_of} has no features with a geometry: no point prompt to use.")
        return points

    def _box_prompts(
        self, parameters: dict[str, Any], context: QgsProcessingContext, dst_crs: Any
    ) -> list[list[float]] | None:
        """The bounding boxes of the BOXES layer's polygons in ``dst_crs`` (None: no layer given)."""
        source = self.parameterAsSource(parameters, self.BOXES, context)
        if source is None:
            return None
        label_of = self._layer_label(parameters, self.BOXES, context)
        ct = QgsCoordinateTransform(source.sourceCrs(), dst_crs, context.transformContext())
        boxes: list[list[float]] = []
        for f in source.getFeatures(QgsFeatureRequest()):
            geom = f.geometry()
            if geom.isNull() or geom.isEmpty():
                continue
            where = f"{label_of}: box of feature {f.id()}"
            r = self._transformed(geom, ct, where).boundingBox()
            if not (r.width() > 0 and r.height() > 0):
                corners = " ".join(f"{c:.10g}" for c in (r.xMinimum(), r.yMinimum(), r.xMaximum(), r.yMaximum()))
                raise QgsProcessingException(f"{where} is empty ({corners}): draw a box with a width and height.")
            boxes.append([r.xMinimum(), r.yMinimum(), r.xMaximum(), r.yMaximum()])
        if not boxes:
            raise QgsProcessingException(f"{label_of} has no features with a geometry: no box prompt to use.")
        return boxes

    # ------------------------------------------------------------------ run
    def _device(self, parameters: dict[str, Any], context: QgsProcessingContext) -> str:
        """The DEVICE parameter, checked as the CLI checks ``--device``."""
        device = (self.parameterAsString(parameters, self.DEVICE, context) or "auto").strip()
        base, _, num = device.lower().partition(":")
        if device.lower() in DEVICES or (base == "cuda" and num.isdigit()):
            return device
        raise QgsProcessingException(f"DEVICE {device!r}: use auto, cpu, cuda, cuda:N (e.g. cuda:0) or mps.")

    def _check_output(
        self, parameters: dict[str, Any], context: QgsProcessingContext, output: str, inputs: list[str | None]
    ) -> None:
        """Refuse an OUTPUT in a missing folder, or one that is also an input (raster, prompts, weights)."""
        folder = os.path.dirname(output)
        if folder and not os.path.isdir(folder):
            raise QgsProcessingException(f"OUTPUT {output}: the folder {folder} does not exist.")
        named = {self.INPUT: inputs[0], self.WEIGHTS: inputs[1]}
        for name in (self.POINTS, self.BOXES):
            layer = self.parameterAsVectorLayer(parameters, name, context) if parameters.get(name) else None
            named[name] = _layer_path(layer) if layer is not None else None
        for name, path in named.items():
            if path and _same_file(path, output):
                raise QgsProcessingException(
                    f"OUTPUT {output} is also an input ({name}): choose another output file, it would be overwritten."
                )

    def processAlgorithm(
        self, parameters: dict[str, Any], context: QgsProcessingContext, feedback: QgsProcessingFeedback
    ) -> dict[str, Any]:
        layer = self.parameterAsRasterLayer(parameters, self.INPUT, context)
        if layer is None:
            raise QgsProcessingException(self.invalidRasterError(parameters, self.INPUT))
        if layer.providerType() != "gdal":
            raise QgsProcessingException(f"{layer.name()} is not a GDAL raster file (provider {layer.providerType()}).")
        raster = _raster_path(layer)
        assign_crs = _layer_crs_to_assign(layer, raster, feedback)
        device = self._device(parameters, context)
        weights = self.parameterAsFile(parameters, self.WEIGHTS, context) or None
        weights = _abs_path(weights) if weights else None
        prompts = self._prompts(parameters, context, layer.crs(), feedback)
        output = _abs_path(self.parameterAsOutputLayer(parameters, self.OUTPUT, context))
        self._check_output(parameters, context, output, [raster, weights])
        params = {
            "raster": raster,
            "output": output,
            "overwrite": True,
            "weights": weights,
            "device": device,
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
        result = self._extract(params, output, context, feedback)
        cache = result.get("cache") or {}
        feedback.pushInfo(
            f"{result.get('buildings', 0)} buildings from {result.get('tiles_processed', 0)} tiles in "
            f"{result.get('seconds', 0):.1f} s ({cache.get('hits', 0)} tiles from the mask cache); "
            f"weights {result.get('weights')} (sha256 {str(result.get('weights_sha256'))[:12]}…)"
        )
        return {self.OUTPUT: output, self.BUILDINGS: int(result.get("buildings", 0))}

    def _extract(
        self, params: dict[str, Any], output: str, context: QgsProcessingContext, feedback: QgsProcessingFeedback
    ) -> dict[str, Any]:
        """Run the engine's extract in the worker (through a temporary GeoPackage for the formats the
        engine does not write, removed whatever happens); the worker's result."""
        temp_dir = None
        if os.path.splitext(output)[1].lower() not in ENGINE_FORMATS:
            temp_dir = tempfile.mkdtemp(prefix="fastsam-geo-processing-")
            params = {**params, "output": os.path.join(temp_dir, "buildings.gpkg")}
        try:
            try:
                client = connection.client()
                hello = client.start()
                feedback.pushInfo(
                    f"Engine: fastsam-geo {hello.get('version')} on {client.python} (pid {hello.get('pid')})"
                )
                result = client.request(
                    "extract",
                    params,
                    progress=lambda done, total: feedback.setProgress(100.0 * done / max(total, 1)),
                    cancel=feedback.isCanceled,
                )
            except WorkerCancelled:
                raise QgsProcessingException("Cancelled; nothing was written.") from None
            except (WorkerError, TimeoutError) as exc:
                raise QgsProcessingException(str(exc)) from exc
            if temp_dir is not None:
                self._convert(result, output, context, feedback)
            return result
        finally:
            if temp_dir is not None:
                shutil.rmtree(temp_dir, ignore_errors=True)

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
