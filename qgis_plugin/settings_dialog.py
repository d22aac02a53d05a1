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
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from . import connection
from .compat import GET_FILE
from .engine import NOT_FOUND_HELP, WorkerClient, WorkerError, find_python
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
        self.source_edit = QLineEdit(setting(KEY_ENGINE_SOURCE, "", str), self)
        self.source_edit.setPlaceholderText("fastsam-geo from PyPI")
        self.source_edit.setToolTip(
            "What 'Set up engine' installs: empty for PyPI, or a local wheel, sdist or project folder."
        )
        form.addRow("Engine source", self.source_edit)
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

    def chosen_python(self) -> str:
        return self.python_widget.filePath().strip()

    def detect(self) -> None:
        """Run discovery with the current field value and show what was found where."""
        QApplication.setOverrideCursor(Qt.CursorShape.WaitCursor)
        try:
            python, report = find_python(self.chosen_python() or None, PLUGIN_DIR, managed=connection.managed_python())
        finally:
            QApplication.restoreOverrideCursor()
        rows = "".join(
            f"<li>{'&#10004;' if c.ok else '&#10008;'} <b>{html.escape(c.source)}</b>: "
            f"{html.escape(c.python or '')} <i>{html.escape(c.note)}</i></li>"
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
        self.setup_button.setEnabled(True)
        if ok and task.python:
            self.python_widget.setFilePath(task.python)
            self.detect()
        else:
            err = html.escape(str(task.error or "failed"))
            self.report_label.setText(self.report_label.text() + f"<p style='color:#b00020'>{err}</p>")

    def restart(self) -> None:
        connection.reset()
        self.report_label.setText(self.report_label.text() + "<p>The worker will restart on the next run.</p>")

    def accept(self) -> None:
        set_setting(KEY_PYTHON, self.chosen_python())
        set_setting(KEY_CACHE_DIR, self.cache_widget.filePath().strip())
        set_setting(KEY_BATCH_SIZE, self.batch_spin.value())
        connection.reset()
        super().accept()
