"""Settings: which Python runs the engine (with what was found automatically), cache, batch size."""

from __future__ import annotations

import html

from qgis.gui import QgsFileWidget
from qgis.PyQt.QtCore import Qt
from qgis.PyQt.QtWidgets import (
    QApplication,
    QCheckBox,
    QDialog,
    QDialogButtonBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QSpinBox,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from . import connection
from .compat import GET_FILE
from .engine import NOT_FOUND_HELP, Candidate, WorkerClient, WorkerError, find_python
from .tasks import SetupEngineTask
from .utils import KEY_BATCH_SIZE, KEY_CACHE_DIR, KEY_PYTHON, PLUGIN_DIR, icon, set_setting, setting

KEY_ENGINE_SOURCE = "engine_source"


class SettingsDialog(QDialog):
    """Choose the engine's Python; shows what discovery found and a clear message when nothing."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("FastSAM-geo settings")
        self.setWindowIcon(icon())
        self.setMinimumWidth(560)
        layout = QVBoxLayout(self)

        form = QFormLayout()
        self.python_widget = QgsFileWidget(self)
        self.python_widget.setStorageMode(GET_FILE)
        self.python_widget.setDialogTitle("Python interpreter with fastsam-geo")
        self.python_widget.setFilePath(setting(KEY_PYTHON, "", str))
        self.python_widget.setToolTip(
            "The python executable of an environment where fastsam-geo is installed "
            "(e.g. <project>/.venv/bin/python). Empty: found automatically."
        )
        form.addRow("Engine Python", self.python_widget)

        self.cache_widget = QgsFileWidget(self)
        self.cache_widget.setStorageMode(QgsFileWidget.StorageMode.GetDirectory)
        self.cache_widget.setFilePath(setting(KEY_CACHE_DIR, "", str))
        self.cache_widget.setToolTip("Folder of the everything-mask cache. Empty: the engine's default.")
        form.addRow("Mask cache folder", self.cache_widget)

        self.batch_spin = QSpinBox(self)
        self.batch_spin.setRange(1, 64)
        self.batch_spin.setValue(setting(KEY_BATCH_SIZE, 1, int))
        self.batch_spin.setToolTip("Tiles per forward pass: 1 on a CPU, 4-8 on a GPU.")
        form.addRow("Batch size", self.batch_spin)
        form.addRow("Engine source", self._source_row())
        self.torch_check = QCheckBox("with torch (.pt weights, train, text prompts: a few GB)", self)
        form.addRow("", self.torch_check)
        layout.addLayout(form)

        buttons_row = QHBoxLayout()
        self.setup_button = QPushButton("Set up engine", self)
        self.setup_button.setToolTip("Create a virtual environment in the QGIS profile and install fastsam-geo in it")
        self.setup_button.clicked.connect(self.setup_engine)
        buttons_row.addWidget(self.setup_button)
        self.detect_button = QPushButton("Detect", self)
        self.detect_button.setToolTip("Look for a Python with fastsam-geo again")
        self.detect_button.clicked.connect(self.detect)
        self.test_button = QPushButton("Test connection", self)
        self.test_button.setToolTip("Start the worker with this Python and ask who it is")
        self.test_button.clicked.connect(self.test_connection)
        self.restart_button = QPushButton("Restart worker", self)
        self.restart_button.clicked.connect(self.restart)
        for b in (self.detect_button, self.test_button, self.restart_button):
            buttons_row.addWidget(b)
        buttons_row.addStretch(1)
        layout.addLayout(buttons_row)

        self.report_label = QLabel(self)
        self.report_label.setWordWrap(True)
        self.report_label.setTextFormat(Qt.TextFormat.RichText)
        self.report_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        layout.addWidget(self.report_label)
        layout.addStretch(1)

        box = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel, self)
        box.accepted.connect(self.accept)
        box.rejected.connect(self.reject)
        layout.addWidget(box)
        self.detect()

    def _source_row(self) -> QWidget:
        """The Engine source: a text box with two pickers (a wheel or sdist file, a project folder)."""
        from .setup_engine import bundled_wheel

        row = QWidget(self)
        box = QHBoxLayout(row)
        box.setContentsMargins(0, 0, 0, 0)
        self.source_edit = QLineEdit(setting(KEY_ENGINE_SOURCE, "", str), row)
        wheel = bundled_wheel()
        if wheel is not None:
            default = f"empty: {wheel.name} (comes with the plugin), or a newer fastsam-geo from the package index"
        else:
            default = "empty: fastsam-geo from the package index (this plugin copy carries no engine wheel)"
        self.source_edit.setPlaceholderText(default)
        self.source_edit.setToolTip(
            "What 'Set up engine' installs. " + default[0].upper() + default[1:] + ". Or a fastsam-geo wheel "
            "(.whl), sdist (.tar.gz) or project folder: pick it with the buttons. Dependencies come from the "
            "package index."
        )
        box.addWidget(self.source_edit, 1)
        self.source_file_button = QToolButton(row)
        self.source_file_button.setText("Wheel…")
        self.source_file_button.setToolTip("Pick a fastsam-geo wheel (.whl) or sdist (.tar.gz, .zip)")
        self.source_file_button.clicked.connect(self.pick_source_file)
        self.source_dir_button = QToolButton(row)
        self.source_dir_button.setText("Folder…")
        self.source_dir_button.setToolTip("Pick a fastsam-geo project folder (the one holding pyproject.toml)")
        self.source_dir_button.clicked.connect(self.pick_source_folder)
        box.addWidget(self.source_file_button)
        box.addWidget(self.source_dir_button)
        return row

    def pick_source_file(self) -> None:
        path, _ = QFileDialog.getOpenFileName(
            self,
            "fastsam-geo wheel or sdist",
            self.source_edit.text().strip(),
            "fastsam-geo packages (*.whl *.tar.gz *.zip);;All files (*)",
        )
        if path:
            self.source_edit.setText(path)

    def pick_source_folder(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "fastsam-geo project folder", self.source_edit.text().strip())
        if path:
            self.source_edit.setText(path)

    def chosen_python(self) -> str:
        return self.python_widget.filePath().strip()

    def detect(self) -> None:
        """Run discovery with the current field value and show what was found where."""
        QApplication.setOverrideCursor(Qt.CursorShape.WaitCursor)
        try:
            python, report = find_python(self.chosen_python() or None, PLUGIN_DIR, managed=connection.managed_python())
        finally:
            QApplication.restoreOverrideCursor()
        def mark(c: Candidate) -> str:  # a tick where it works, a dash where it was not looked at
            return "&#10004;" if c.ok else ("&#10008;" if c.checked else "&#8211;")

        rows = "".join(
            f"<li>{mark(c)} <b>{html.escape(c.source)}</b>: {html.escape(c.python or '')} "
            f"<i>{html.escape(c.note)}</i>{' <b>(in use)</b>' if c.in_use else ''}</li>"
            for c in report
        )
        if python:
            verdict = f"<p>The engine runs with <b>{html.escape(python)}</b>.</p>"
        else:
            verdict = f"<p style='color:#b00020'><b>{html.escape(NOT_FOUND_HELP)}</b></p>"
        self.report_label.setText(f"{verdict}<p>Looked at, in order:</p><ul>{rows}</ul>")
        self.found_python = python

    def test_connection(self) -> None:
        """Start a worker with the chosen (or found) Python and show its hello."""
        python = self.chosen_python() or getattr(self, "found_python", None)
        if not python:
            self.detect()
            return
        QApplication.setOverrideCursor(Qt.CursorShape.WaitCursor)
        probe = WorkerClient(python, start_timeout=60)
        try:
            hello = probe.start()
            text = (
                f"<p style='color:#1b5e20'>Connected: fastsam-geo {html.escape(str(hello.get('version')))} "
                f"on Python {html.escape(str(hello.get('python_version')))} (pid {hello.get('pid')}).<br>"
                f"Default weights: {html.escape(str(hello.get('default_weights') or hello.get('weights_error')))}</p>"
            )
        except (WorkerError, TimeoutError, OSError) as exc:
            text = f"<p style='color:#b00020'>{html.escape(str(exc))}</p>"
        finally:
            probe.stop()
            QApplication.restoreOverrideCursor()
        self.report_label.setText(self.report_label.text() + text)

    def setup_engine(self) -> SetupEngineTask:
        """Start the set-up task (progress and cancel in the QGIS task bar); the result lands here."""
        from qgis.core import QgsApplication

        from .setup_engine import managed_venv
        from .tasks import SetupEngineTask

        source = self.source_edit.text().strip() or None
        set_setting(KEY_ENGINE_SOURCE, source or "")
        venv = str(managed_venv(QgsApplication.qgisSettingsDirPath()))
        self.setup_task = SetupEngineTask(venv, source, self.torch_check.isChecked(), on_done=self._setup_done)
        self.setup_button.setEnabled(False)
        self.report_label.setText(f"<p>Setting up the engine in {html.escape(venv)} (see the task bar)…</p>")
        QgsApplication.taskManager().addTask(self.setup_task)
        return self.setup_task

    def _setup_done(self, task: SetupEngineTask, ok: bool) -> None:
        """The set-up's end replaces its "Setting up..." line: the engine found, or the error alone."""
        self.setup_button.setEnabled(True)
        if ok and task.python:
            self.python_widget.setFilePath(task.python)
            self.detect()
            done = f"<p style='color:#1b5e20'>Engine set up in {task.seconds:.0f} s.</p>"
            self.report_label.setText(done + self.report_label.text())
        else:
            from .setup_engine import SetupCancelled

            if isinstance(task.error, SetupCancelled):
                text = "<p>Engine set-up cancelled; nothing was installed.</p>"
            else:
                err = html.escape(str(task.error or "failed"))
                text = f"<p style='color:#b00020'>The engine could not be set up: {err}</p>"
            self.report_label.setText(text)

    def restart(self) -> None:
        connection.reset()
        self.report_label.setText(self.report_label.text() + "<p>The worker will restart on the next run.</p>")

    def accept(self) -> None:
        set_setting(KEY_PYTHON, self.chosen_python())
        set_setting(KEY_CACHE_DIR, self.cache_widget.filePath().strip())
        set_setting(KEY_BATCH_SIZE, self.batch_spin.value())
        connection.reset()
        super().accept()
