"""The FastSAM-geo panel: raster, model, tiling, prompts (map tools), thresholds, output, run."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from typing import Any

from qgis.core import (
    QgsApplication,
    QgsCoordinateReferenceSystem,
    QgsCoordinateTransform,
    QgsCsException,
    QgsGeometry,
    QgsPointXY,
    QgsProject,
    QgsProviderRegistry,
    QgsRasterLayer,
    QgsRectangle,
)
from qgis.gui import QgsDockWidget, QgsFileWidget, QgsMapCanvas, QgsMapLayerComboBox, QgsRubberBand
from qgis.PyQt.QtCore import Qt, pyqtSignal
from qgis.PyQt.QtGui import QColor
from qgis.PyQt.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QFrame,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QProgressBar,
    QPushButton,
    QScrollArea,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from .compat import ICON_CIRCLE, POINT_GEOMETRY, POLYGON_GEOMETRY, RASTER_LAYER_FILTER, SAVE_FILE
from .engine import WorkerCancelled, WorkerDied, WorkerError, WorkerNotFound
from .maptools import BoxPromptTool, PointPromptTool
from .tasks import ExtractTask, load_result
from .utils import (
    DEFAULT_TTA,
    KEY_BATCH_SIZE,
    LEVELS,
    TAG,
    TTA_VIEWS,
    crs_name,
    crs_to_assign,
    icon,
    log,
    set_setting,
    setting,
)

MODES = (
    ("everything", "Everything", "Every object; the building filter keeps the building-like ones"),
    ("points", "Points", "Left click: a building; right click: background"),
    ("boxes", "Box", "Drag a box around a building"),
    ("text", "Text (CLIP)", "Objects whose CLIP score for the text passes the threshold"),
)


class PromptError(ValueError):
    """The prompts cannot be used (none given, outside the raster, not transformable)."""


class FastSAMDock(QgsDockWidget):
    """The panel. ``runFinished`` carries ``{"ok", "layer", "result", "error", "kind"}`` after each run."""

    runFinished = pyqtSignal(dict)

    def __init__(self, iface: Any, parent: QWidget | None = None) -> None:
        super().__init__("FastSAM-geo", parent)
        self.setObjectName("FastSAMGeoDock")
        self.iface = iface
        self.canvas: QgsMapCanvas = iface.mapCanvas()
        self.task: ExtractTask | None = None
        self.closed = False
        self.points: list[tuple[QgsPointXY, int, QgsCoordinateReferenceSystem]] = []
        self.boxes: list[tuple[QgsRectangle, QgsCoordinateReferenceSystem]] = []
        self.last_task: ExtractTask | None = None
        self.live_pending = False
        self.live_layer_id: str | None = None
        self._build()
        self._make_tools()
        self._restore()
        self.canvas.destinationCrsChanged.connect(self.redraw_prompts)

    # ------------------------------------------------------------------ widgets
    def _build(self) -> None:
        """The panel: one group box per part (data and model, prompt, thresholds, output), the run
        buttons, progress and status, in a scroll area."""
        body = QWidget(self)
        outer = QVBoxLayout(body)
        outer.addWidget(self._build_data_box(body))
        outer.addWidget(self._build_prompt_box(body))
        outer.addWidget(self._build_thresholds_box(body))
        outer.addWidget(self._build_output_box(body))
        self._build_run_rows(body, outer)

        scroll = QScrollArea(self)
        scroll.setWidgetResizable(True)
        scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        scroll.setFrameShape(QFrame.Shape.NoFrame)
        scroll.setWidget(body)
        self.setWidget(scroll)
        self._mode_changed()
        self._output_changed()

    def _build_data_box(self, body: QWidget) -> QGroupBox:
        """Data and model: raster layer, weights, device, tile size and overlap."""
        data = QGroupBox("Data and model", body)
        form = QFormLayout(data)
        self.layer_combo = QgsMapLayerComboBox(data)
        self.layer_combo.setFilters(RASTER_LAYER_FILTER)
        form.addRow("Raster", self.layer_combo)
        self.weights_widget = QgsFileWidget(data)
        self.weights_widget.setFilter("Model weights (*.onnx *.pt);;ONNX (*.onnx);;PyTorch (*.pt)")
        self.weights_widget.setToolTip(
            "FastSAM/YOLO-seg weights; empty: the engine's default model. .onnx runs on every engine; a .pt runs "
            "its ONNX export when one lies beside it (same name, .onnx, made by fastsam-geo export), else it needs "
            "the engine with torch (Settings > tick 'with torch' > Set up engine). .pt files are pickles that can "
            "run code when loaded: use only weights you trust."
        )
        self.weights_widget.lineEdit().setPlaceholderText("the engine's default model")
        form.addRow("Weights", self.weights_widget)
        self.device_combo = QComboBox(data)
        self.device_combo.setEditable(True)
        self.device_combo.addItems(["auto", "cpu", "cuda", "cuda:0", "mps"])
        form.addRow("Device", self.device_combo)
        tiles = QHBoxLayout()
        self.tile_spin = QSpinBox(data)
        self.tile_spin.setRange(128, 8192)
        self.tile_spin.setSingleStep(128)
        self.tile_spin.setValue(1024)
        self.tile_spin.setSuffix(" px")
        self.overlap_spin = QSpinBox(data)
        self.overlap_spin.setRange(0, 2048)
        self.overlap_spin.setSingleStep(32)
        self.overlap_spin.setValue(128)
        self.overlap_spin.setSuffix(" px")
        tiles.addWidget(self.tile_spin)
        tiles.addWidget(QLabel("overlap", data))
        tiles.addWidget(self.overlap_spin)
        form.addRow("Tile size", tiles)
        return data

    def _build_prompt_box(self, body: QWidget) -> QGroupBox:
        """Prompt: mode, map picking, live runs, text and its threshold, the building filter."""
        prompts = QGroupBox("Prompt", body)
        pform = QFormLayout(prompts)
        self.mode_combo = QComboBox(prompts)
        for i, (key, label, tip) in enumerate(MODES):
            self.mode_combo.addItem(label, key)
            self.mode_combo.setItemData(i, tip, Qt.ItemDataRole.ToolTipRole)
        self.mode_combo.currentIndexChanged.connect(self._mode_changed)
        pform.addRow("Mode", self.mode_combo)
        row = QHBoxLayout()
        self.pick_button = QPushButton("Pick on map", prompts)
        self.pick_button.setCheckable(True)
        self.pick_button.setToolTip("Points: left click a building, right click background. Box: drag a box.")
        self.pick_button.toggled.connect(self._pick_toggled)
        self.clear_button = QPushButton("Clear", prompts)
        self.clear_button.clicked.connect(self.clear_prompts)
        row.addWidget(self.pick_button)
        row.addWidget(self.clear_button)
        pform.addRow(row)
        self.prompt_label = QLabel("", prompts)
        pform.addRow(self.prompt_label)
        self.live_check = QCheckBox("Run after each click", prompts)
        self.live_check.setToolTip(
            "Points and boxes: run at once after each click into one live layer, replaced each time "
            "(fast: the tile's masks come from the cache after the first run)"
        )
        pform.addRow(self.live_check)
        self.text_edit = QLineEdit(prompts)
        self.text_edit.setPlaceholderText("e.g. building")
        pform.addRow("Text", self.text_edit)
        self.text_threshold_spin = QDoubleSpinBox(prompts)
        self.text_threshold_spin.setRange(0.0, 1.0)
        self.text_threshold_spin.setDecimals(3)
        self.text_threshold_spin.setSingleStep(0.01)
        self.text_threshold_spin.setValue(0.22)
        pform.addRow("Text threshold", self.text_threshold_spin)
        self._build_building_filter(prompts, pform)
        return prompts

    def _build_building_filter(self, prompts: QGroupBox, pform: QFormLayout) -> None:
        """The building filter's rows of the prompt box: on/off and the area range."""
        self.filter_check = QCheckBox("Building filter", prompts)
        self.filter_check.setToolTip("Everything and text modes: keep only building-like objects (area, shape)")
        self.filter_check.setChecked(True)
        pform.addRow(self.filter_check)
        area = QHBoxLayout()
        self.min_area_spin = QDoubleSpinBox(prompts)
        self.min_area_spin.setRange(0.0, 9999.0)
        self.min_area_spin.setDecimals(1)
        self.min_area_spin.setValue(8.0)
        self.min_area_spin.setSuffix(" m²")
        self.max_area_spin = QDoubleSpinBox(prompts)
        self.max_area_spin.setRange(1.0, 999999.0)
        self.max_area_spin.setDecimals(0)
        self.max_area_spin.setValue(20000.0)
        self.max_area_spin.setSuffix(" m²")
        area.addWidget(self.min_area_spin)
        area.addWidget(QLabel("to", prompts))
        area.addWidget(self.max_area_spin)
        pform.addRow("Building area", area)

    def _build_thresholds_box(self, body: QWidget) -> QGroupBox:
        """Thresholds and shape: confidence, NMS IoU, simplification, regularisation."""
        thresholds = QGroupBox("Thresholds and shape", body)
        tform = QFormLayout(thresholds)
        self.conf_spin = QDoubleSpinBox(thresholds)
        self.conf_spin.setRange(0.0, 1.0)
        self.conf_spin.setSingleStep(0.05)
        # the lowest value means "not set": the model's own calibrated threshold (fastsam-geo info)
        self.conf_spin.setSpecialValueText("model's")
        self.conf_spin.setToolTip('Minimum mask confidence; "model\'s" uses the threshold stored with the model')
        self.conf_spin.setValue(0.0)
        tform.addRow("Confidence", self.conf_spin)
        self.iou_spin = QDoubleSpinBox(thresholds)
        self.iou_spin.setRange(0.0, 1.0)
        self.iou_spin.setSingleStep(0.05)
        self.iou_spin.setValue(0.7)
        tform.addRow("NMS IoU", self.iou_spin)
        self.tta_combo = QComboBox(thresholds)
        self.tta_combo.addItems([str(n) if n > 1 else "1 (off, fastest)" for n in TTA_VIEWS])
        self.tta_combo.setCurrentIndex(TTA_VIEWS.index(DEFAULT_TTA))
        self.tta_combo.setToolTip(
            "Views of each tile whose buildings are fused (flips and quarter turns): more buildings found "
            "and fewer neighbours merged, at N times the inference time; 12 adds four views 1.6 times "
            "coarser, which find large roofs"
        )
        tform.addRow("Views (TTA)", self.tta_combo)
        self.simplify_spin = QDoubleSpinBox(thresholds)
        self.simplify_spin.setRange(0.0, 20.0)
        self.simplify_spin.setValue(1.0)
        self.simplify_spin.setSuffix(" px")
        tform.addRow("Simplify", self.simplify_spin)
        self.regularize_check = QCheckBox("Regularize outlines", thresholds)
        self.regularize_check.setToolTip("Square the outlines (right angles); bad fits are refused")
        tform.addRow(self.regularize_check)
        return thresholds

    def _build_output_box(self, body: QWidget) -> QGroupBox:
        """Output: a temporary layer or a GeoPackage file."""
        output = QGroupBox("Output", body)
        oform = QFormLayout(output)
        self.output_combo = QComboBox(output)
        self.output_combo.addItem("Temporary layer", "memory")
        self.output_combo.addItem("GeoPackage file", "gpkg")
        self.output_combo.currentIndexChanged.connect(self._output_changed)
        oform.addRow("Write to", self.output_combo)
        self.output_widget = QgsFileWidget(output)
        self.output_widget.setStorageMode(SAVE_FILE)
        self.output_widget.setFilter("GeoPackage (*.gpkg)")
        oform.addRow("File", self.output_widget)
        return output

    def _build_run_rows(self, body: QWidget, outer: QVBoxLayout) -> None:
        """Run, Cancel and Settings buttons, the progress bar and the status line, below the boxes."""
        run_row = QHBoxLayout()
        self.run_button = QPushButton(icon(), "Run", body)
        self.run_button.clicked.connect(self.run)
        self.cancel_button = QPushButton("Cancel", body)
        self.cancel_button.setEnabled(False)
        self.cancel_button.clicked.connect(self.cancel)
        self.settings_button = QPushButton("Settings…", body)
        self.settings_button.clicked.connect(self.open_settings)
        run_row.addWidget(self.run_button)
        run_row.addWidget(self.cancel_button)
        run_row.addWidget(self.settings_button)
        outer.addLayout(run_row)
        self.progress = QProgressBar(body)
        self.progress.setRange(0, 100)
        self.progress.setValue(0)
        outer.addWidget(self.progress)
        self.status_label = QLabel("Ready.", body)
        self.status_label.setWordWrap(True)
        outer.addWidget(self.status_label)
        outer.addStretch(1)

    def _make_tools(self) -> None:
        self.point_tool = PointPromptTool(self.canvas)
        self.point_tool.pointClicked.connect(self.add_point)
        self.box_tool = BoxPromptTool(self.canvas)
        self.box_tool.boxDrawn.connect(self.add_box)
        for tool in (self.point_tool, self.box_tool):
            tool.deactivated.connect(self._tool_deactivated)
        self.fg_band = self._band(POINT_GEOMETRY, QColor(0, 170, 0))
        self.bg_band = self._band(POINT_GEOMETRY, QColor(220, 0, 0))
        self.box_band = self._band(POLYGON_GEOMETRY, QColor(255, 160, 0))
        self.box_band.setColor(QColor(255, 200, 0, 50))
        self.box_band.setStrokeColor(QColor(255, 160, 0))

    def _band(self, geometry_type: Any, color: QColor) -> QgsRubberBand:
        band = QgsRubberBand(self.canvas, geometry_type)
        band.setColor(color)
        band.setIcon(ICON_CIRCLE)
        band.setIconSize(10)
        band.setWidth(2)
        return band

    # ------------------------------------------------------------------ state
    @property
    def mode(self) -> str:
        return str(self.mode_combo.currentData())

    def set_mode(self, mode: str) -> None:
        self.mode_combo.setCurrentIndex(self.mode_combo.findData(mode))

    @property
    def busy(self) -> bool:
        return self.task is not None

    def _mode_changed(self, *_: Any) -> None:
        mode = self.mode
        self.pick_button.setEnabled(mode in ("points", "boxes"))
        self.text_edit.setEnabled(mode == "text")
        self.text_threshold_spin.setEnabled(mode == "text")
        if mode not in ("points", "boxes"):
            self.pick_button.setChecked(False)
        elif self.pick_button.isChecked():
            self._activate_tool()
        self._update_prompt_label()

    def _output_changed(self, *_: Any) -> None:
        self.output_widget.setEnabled(self.output_combo.currentData() == "gpkg")

    def _pick_toggled(self, on: bool) -> None:
        if on:
            self._activate_tool()
        else:
            for tool in (self.point_tool, self.box_tool):
                if self.canvas.mapTool() is tool:
                    self.canvas.unsetMapTool(tool)

    def _activate_tool(self) -> None:
        tool = self.box_tool if self.mode == "boxes" else self.point_tool
        if self.canvas.mapTool() is not tool:
            self.canvas.setMapTool(tool)

    def _tool_deactivated(self) -> None:
        if self.canvas.mapTool() not in (self.point_tool, self.box_tool):
            self.pick_button.blockSignals(True)
            self.pick_button.setChecked(False)
            self.pick_button.blockSignals(False)

    def activate_point_tool(self) -> PointPromptTool:
        """Switch to points mode and to the point map tool (used by tests and the toolbar)."""
        self.set_mode("points")
        self.pick_button.setChecked(True)
        self._activate_tool()
        return self.point_tool

    def activate_box_tool(self) -> BoxPromptTool:
        self.set_mode("boxes")
        self.pick_button.setChecked(True)
        self._activate_tool()
        return self.box_tool

    # ------------------------------------------------------------------ prompts
    def canvas_crs(self) -> QgsCoordinateReferenceSystem:
        return self.canvas.mapSettings().destinationCrs()

    def add_point(self, point: QgsPointXY, label: int) -> None:
        """A click in canvas coordinates (kept with the canvas CRS of the moment)."""
        self.points.append((QgsPointXY(point), int(label), QgsCoordinateReferenceSystem(self.canvas_crs())))
        self.redraw_prompts()
        self._live_run()

    def add_box(self, rect: QgsRectangle) -> None:
        self.boxes.append((QgsRectangle(rect), QgsCoordinateReferenceSystem(self.canvas_crs())))
        self.redraw_prompts()
        self._live_run()

    def _live_run(self) -> None:
        """With "Run after each click": run now, or once the current run ends."""
        if not self.live_check.isChecked() or self.mode not in ("points", "boxes"):
            return
        if self.busy:
            self.live_pending = True
        else:
            self.run(live=True)

    def clear_prompts(self) -> None:
        self.points.clear()
        self.boxes.clear()
        self.redraw_prompts()

    def redraw_prompts(self, *_: Any) -> None:
        """Rubber bands for the prompts, in the canvas CRS of now."""
        for band, geom_type in ((self.fg_band, POINT_GEOMETRY), (self.bg_band, POINT_GEOMETRY)):
            band.reset(geom_type)
        self.box_band.reset(POLYGON_GEOMETRY)
        for p, label, crs in self.points:
            band = self.fg_band if label == 1 else self.bg_band
            band.addGeometry(QgsGeometry.fromPointXY(p), crs)
        for r, crs in self.boxes:
            self.box_band.addGeometry(QgsGeometry.fromRect(r), crs)
        self._update_prompt_label()

    def _update_prompt_label(self) -> None:
        fg = sum(1 for _, label, _ in self.points if label == 1)
        bg = len(self.points) - fg
        if self.mode == "points":
            text = f"{fg} building point(s), {bg} background point(s)"
        elif self.mode == "boxes":
            text = f"{len(self.boxes)} box(es)"
        else:
            text = ""
        self.prompt_label.setText(text)

    def prompts_for(self, layer: QgsRasterLayer) -> dict[str, Any] | None:
        """The current prompts as the engine's JSON, in the raster layer's CRS.

        Every point is transformed from the CRS it was clicked in to the raster's CRS with the
        project's transform context.

        Raises:
            PromptError: no usable prompt for the mode, or a prompt outside the raster.
        """
        mode = self.mode
        dst = layer.crs()
        context = QgsProject.instance().transformContext()
        extent = layer.extent()
        if mode == "everything":
            return None
        if mode == "text":
            text = self.text_edit.text().strip()
            if not text:
                raise PromptError("Type a text prompt first (e.g. 'building').")
            return {"text": text, "text_threshold": self.text_threshold_spin.value()}
        try:
            if mode == "points":
                pts = []
                for p, label, crs in self.points:
                    q = QgsCoordinateTransform(crs, dst, context).transform(p)
                    if not extent.contains(q):
                        raise PromptError(
                            f"A point ({q.x():.2f}, {q.y():.2f} in {crs_name(dst)}) lies outside {layer.name()}."
                        )
                    pts.append([q.x(), q.y(), label])
                if not any(p[2] == 1 for p in pts):
                    raise PromptError("Click at least one building (left click) with the point tool first.")
                return {"points": pts, "crs": None}
            boxes = []
            for r, crs in self.boxes:
                b = QgsCoordinateTransform(crs, dst, context).transformBoundingBox(r)
                if not extent.intersects(b):
                    raise PromptError(f"A box lies outside {layer.name()}.")
                boxes.append([b.xMinimum(), b.yMinimum(), b.xMaximum(), b.yMaximum()])
            if not boxes:
                raise PromptError("Draw at least one box with the box tool first.")
            return {"boxes": boxes, "crs": None}
        except QgsCsException as exc:
            raise PromptError(f"A prompt cannot be transformed to {crs_name(dst)}: {exc}") from exc

    # ------------------------------------------------------------------ running
    def raster_path(self, layer: QgsRasterLayer) -> str:
        if layer.providerType() != "gdal":
            raise PromptError(f"{layer.name()} is not a GDAL raster (provider {layer.providerType()}).")
        parts = QgsProviderRegistry.instance().decodeUri("gdal", layer.source())
        return str(parts.get("path") or layer.source())

    def tta_value(self) -> int:
        """Views of each tile fused (1: off)."""
        return TTA_VIEWS[self.tta_combo.currentIndex()]

    def conf_value(self) -> float | None:
        """The confidence threshold set in the panel, or None ("model's": the model's stored one)."""
        value = self.conf_spin.value()
        return None if value <= self.conf_spin.minimum() else value

    def build_params(self) -> tuple[dict[str, Any], str | None]:
        """The ``extract`` parameters from the widgets, and the run's temporary folder (if any)."""
        layer = self.layer_combo.currentLayer()
        if not isinstance(layer, QgsRasterLayer) or not layer.isValid():
            raise PromptError("Choose a raster layer first.")
        raster = self.raster_path(layer)
        try:
            assign_crs = crs_to_assign(layer, raster)
        except ValueError as exc:
            raise PromptError(str(exc)) from None
        prompts = self.prompts_for(layer)
        temp_dir = None
        if self.output_combo.currentData() == "gpkg":
            output = self.output_widget.filePath().strip()
            if not output:
                raise PromptError("Choose a GeoPackage file to write to, or write to a temporary layer.")
            if not output.lower().endswith(".gpkg"):
                output += ".gpkg"
        else:
            temp_dir = tempfile.mkdtemp(prefix="fastsam-geo-qgis-")
            output = os.path.join(temp_dir, "buildings.gpkg")
        params: dict[str, Any] = {
            "raster": raster,
            "output": output,
            "overwrite": True,
            "weights": self.weights_widget.filePath().strip() or None,
            "device": self.device_combo.currentText().strip() or "auto",
            "batch_size": setting(KEY_BATCH_SIZE, 1, int),
            "tile_size": self.tile_spin.value(),
            "overlap": self.overlap_spin.value(),
            "conf": self.conf_value(),
            "iou": self.iou_spin.value(),
            "prompts": prompts,
            "building_filter": {
                "enabled": self.filter_check.isChecked(),
                "min_area_m2": self.min_area_spin.value(),
                "max_area_m2": self.max_area_spin.value(),
            },
            "simplify_px": self.simplify_spin.value(),
            "regularize": self.regularize_check.isChecked(),
        }
        params["tta"] = self.tta_value()
        if assign_crs:  # the file has no CRS: the layer's (Layer > Set CRS)
            params["assign_crs"] = assign_crs
            log(f"{layer.name()}: the file has no CRS; the run uses the layer's, {crs_name(layer.crs())}", "info")
        return params, temp_dir

    def run(self, live: bool = False) -> ExtractTask | None:
        """Start an extraction in a ``QgsTask``; returns it (None when nothing was started).

        ``live``: the result replaces the previous live layer (see "Run after each click").
        """
        if self.busy:
            self.message("A run is in progress; cancel it first.", "warning")
            return None
        try:
            params, temp_dir = self.build_params()
        except PromptError as exc:
            self.message(str(exc), "warning")
            return None
        self._save()
        layer = self.layer_combo.currentLayer()
        mode = self.mode
        task = ExtractTask(f"FastSAM-geo: {mode} on {layer.name()}", params, self._task_done)
        task.temp_dir = temp_dir  # type: ignore[attr-defined]
        task.memory = temp_dir is not None  # type: ignore[attr-defined]
        task.layer_name = f"buildings ({mode}, {layer.name()})"  # type: ignore[attr-defined]
        task.live = live and temp_dir is not None  # type: ignore[attr-defined]
        if task.live:  # type: ignore[attr-defined]
            task.layer_name = f"buildings (live, {layer.name()})"  # type: ignore[attr-defined]
        task.clicks = (params.get("prompts") or {}).get("points") or []  # type: ignore[attr-defined]
        task.crs_label = crs_name(layer.crs())  # type: ignore[attr-defined]
        task.pixel = max(layer.rasterUnitsPerPixelX(), layer.rasterUnitsPerPixelY())  # type: ignore[attr-defined]
        task.progressChanged.connect(self._task_progress)
        self.task = task
        self.last_task = task
        self.run_button.setEnabled(False)
        self.cancel_button.setEnabled(True)
        self.progress.setValue(0)
        self.status_label.setText("Starting the engine…")
        log(f"run: {params}", "info")
        QgsApplication.taskManager().addTask(task)
        return task

    def cancel(self) -> None:
        if self.task is not None:
            self.status_label.setText("Cancelling…")
            self.task.cancel()

    def _task_progress(self, value: float) -> None:
        if self.closed or self.task is None:
            return
        self.progress.setValue(int(value))
        done, total = self.task.tiles
        if total:
            self.status_label.setText(f"Running: {done}/{total} tiles")

    def _task_done(self, task: ExtractTask, ok: bool) -> None:
        if self.closed:
            return
        self.task = None
        self.run_button.setEnabled(True)
        self.cancel_button.setEnabled(False)
        info: dict[str, Any] = {"ok": False, "layer": None, "result": task.result, "error": "", "kind": ""}
        if ok and task.result is not None:
            res = task.result
            replaced = [] if task.memory else remove_file_layers(res["output"])  # type: ignore[attr-defined]
            try:
                layer = load_result(res, task.layer_name, task.memory, task.temp_dir)  # type: ignore[attr-defined]
            except RuntimeError as exc:
                info.update(error=str(exc), kind="OutputError")
                self.message(str(exc), "critical")
            else:
                if getattr(task, "live", False):
                    old = QgsProject.instance().mapLayer(self.live_layer_id) if self.live_layer_id else None
                    if old is not None:
                        QgsProject.instance().removeMapLayer(old.id())
                    self.live_layer_id = layer.id()
                QgsProject.instance().addMapLayer(layer)
                missed = unmatched_clicks(layer, getattr(task, "clicks", []), 2.0 * getattr(task, "pixel", 0.0))
                info.update(ok=True, layer=layer, replaced=replaced, missed=missed)
                self._report_result(task, res, replaced, missed)
        else:
            err = task.error
            if err is None or isinstance(err, WorkerCancelled):  # None: cancelled before it started
                info.update(error="cancelled", kind="Cancelled")
                self.status_label.setText("Cancelled.")
                self.message("Run cancelled; nothing was written.", "info")
            else:
                kind = getattr(err, "kind", type(err).__name__)
                info.update(error=str(err), kind=kind)
                level = "critical" if isinstance(err, (WorkerDied, WorkerNotFound)) else "warning"
                if not isinstance(err, WorkerError):
                    level = "critical"
                self.status_label.setText(f"Failed: {err}")
                self.message(str(err), level, settings_button=isinstance(err, WorkerNotFound))
            self.progress.setValue(0)
            temp_dir = getattr(task, "temp_dir", None)
            if temp_dir:
                shutil.rmtree(temp_dir, ignore_errors=True)
        self.runFinished.emit(info)
        if self.live_pending:
            self.live_pending = False
            self._live_run()

    def _report_result(self, task: ExtractTask, res: dict[str, Any], replaced: list[str], missed: list[int]) -> None:
        """The run's summary in the panel, the message bar and the log: the layers it replaced and
        each building click that selected nothing (where, in which CRS)."""
        from_cache = (res.get("cache") or {}).get("hits", 0)
        text = (
            f"{res.get('buildings', 0)} building(s) from {res.get('tiles_processed', 0)} tile(s) in "
            f"{res.get('seconds', 0):.1f} s" + (f" ({from_cache} tile(s) from the mask cache)" if from_cache else "")
        )
        if replaced:
            names = ", ".join(f"'{n}'" for n in replaced)
            text += f"; {os.path.basename(res['output'])} was overwritten: replaced its earlier layer(s) {names}"
        clicks = getattr(task, "clicks", [])
        level = "success"
        if missed:
            level = "warning"
            where = "; ".join(
                f"click {i + 1} of {len(clicks)} at ({clicks[i][0]:.2f}, {clicks[i][1]:.2f}) in "
                f"{getattr(task, 'crs_label', '?')}"
                for i in missed
            )
            text += (
                f". {len(missed)} building click(s) selected nothing: {where} (no object under the point at this "
                "confidence: click nearer the middle of the roof, or lower Confidence)"
            )
        self.progress.setValue(100)
        self.status_label.setText(text)
        self.message(text, level)

    # ------------------------------------------------------------------ messages, settings
    def message(self, text: str, level: str = "info", settings_button: bool = False) -> None:
        """Show ``text`` in the message bar and write it to the log panel."""
        log(text, level)
        bar = self.iface.messageBar()
        if settings_button:
            widget = bar.createMessage("FastSAM-geo", text)
            button = QPushButton("Settings…", widget)
            button.clicked.connect(self.open_settings)
            widget.layout().addWidget(button)
            bar.pushWidget(widget, LEVELS[level], 0)
        else:
            bar.pushMessage("FastSAM-geo", text, LEVELS.get(level, LEVELS["info"]), 8 if level != "critical" else 0)

    def open_settings(self) -> None:
        from .settings_dialog import SettingsDialog

        SettingsDialog(self.iface.mainWindow()).exec()

    def _save(self) -> None:
        set_setting("dock/weights", self.weights_widget.filePath())
        set_setting("dock/device", self.device_combo.currentText())
        set_setting("dock/tile_size", self.tile_spin.value())
        set_setting("dock/overlap", self.overlap_spin.value())
        set_setting("dock/confidence", self.conf_spin.value())
        set_setting("dock/iou", self.iou_spin.value())
        set_setting("dock/tta_views", self.tta_value())
        set_setting("dock/regularize", self.regularize_check.isChecked())

    def _restore(self) -> None:
        self.weights_widget.setFilePath(setting("dock/weights", "", str))
        self.device_combo.setCurrentText(setting("dock/device", "auto", str))
        self.tile_spin.setValue(setting("dock/tile_size", 1024, int))
        self.overlap_spin.setValue(setting("dock/overlap", 128, int))
        self.conf_spin.setValue(setting("dock/confidence", 0.0, float))
        self.iou_spin.setValue(setting("dock/iou", 0.7, float))
        views = setting("dock/tta_views", DEFAULT_TTA, int)
        self.tta_combo.setCurrentIndex(TTA_VIEWS.index(views if views in TTA_VIEWS else DEFAULT_TTA))
        self.regularize_check.setChecked(setting("dock/regularize", False, bool))

    # ------------------------------------------------------------------ teardown
    def cleanup(self) -> None:
        """Cancel a run, take the map tools and rubber bands off the canvas (plugin unload)."""
        self.closed = True
        if self.task is not None:
            self.task.cancel()
            self.task = None
        with contextlib.suppress(TypeError, RuntimeError):
            self.canvas.destinationCrsChanged.disconnect(self.redraw_prompts)
        for tool in (self.point_tool, self.box_tool):
            if self.canvas.mapTool() is tool:
                self.canvas.unsetMapTool(tool)
        self.box_tool.remove_band()
        for band in (self.fg_band, self.bg_band, self.box_band):
            band.reset(POINT_GEOMETRY if band is not self.box_band else POLYGON_GEOMETRY)
            scene = band.scene()
            if scene is not None:
                scene.removeItem(band)


def remove_file_layers(path: str) -> list[str]:
    """Remove the project's layers read from the file ``path`` (a GeoPackage the run overwrote: they
    would show its old features); their names."""
    target = os.path.realpath(path)
    names = []
    for lyr in list(QgsProject.instance().mapLayers().values()):
        if lyr.providerType() != "ogr":
            continue
        source = QgsProviderRegistry.instance().decodeUri("ogr", lyr.source()).get("path") or ""
        if source and os.path.realpath(source) == target:
            names.append(lyr.name())
            QgsProject.instance().removeMapLayer(lyr.id())
    if names:
        log(f"{path} was overwritten: removed its earlier layer(s) {names} from the project", "info")
    return names


def unmatched_clicks(layer: Any, clicks: list[list[float]], tolerance: float) -> list[int]:
    """Indices of the building clicks (label 1; points in the layer's CRS) with no polygon of
    ``layer`` under them or within ``tolerance`` map units."""
    wanted = [(i, QgsGeometry.fromPointXY(QgsPointXY(c[0], c[1]))) for i, c in enumerate(clicks) if int(c[2]) == 1]
    if not wanted:
        return []
    geoms = [f.geometry() for f in layer.getFeatures()]
    return [i for i, p in wanted if not any(g.distance(p) <= tolerance for g in geoms)]


__all__ = ["TAG", "FastSAMDock", "remove_file_layers", "unmatched_clicks"]
