"""The background task that runs one extraction on the worker, and the result layer's style."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from typing import Any

from qgis.core import QgsFeatureRequest, QgsFillSymbol, QgsTask, QgsVectorLayer

from . import connection
from .compat import TASK_CAN_CANCEL
from .utils import log


class ExtractTask(QgsTask):
    """``extract`` on the shared worker, off the GUI thread, with per-tile progress and cancel.

    ``on_done(task, ok)`` is called on the GUI thread when the task ends; then ``result`` holds
    the engine's summary, or ``error`` the exception (``WorkerCancelled`` when cancelled).
    """

    def __init__(self, description: str, params: dict[str, Any], on_done: Callable[[ExtractTask, bool], None]):
        super().__init__(description, TASK_CAN_CANCEL)
        self.params = params
        self.on_done = on_done
        self.result: dict[str, Any] | None = None
        self.error: BaseException | None = None
        self.tiles = (0, 0)
        self.worker_pid: int | None = None

    def run(self) -> bool:
        try:
            client = connection.client()
            client.start()
            self.worker_pid = client.pid
            self.result = client.request("extract", self.params, progress=self._progress, cancel=self.isCanceled)
            return True
        except Exception as exc:  # reported on the GUI thread by on_done
            self.error = exc
            return False

    def _progress(self, done: int, total: int) -> None:
        self.tiles = (done, total)
        self.setProgress(100.0 * done / max(total, 1))

    def finished(self, result: bool) -> None:  # GUI thread
        try:
            self.on_done(self, result)
        except Exception as exc:  # never let an exception escape into the task manager
            log(f"error while handling the end of '{self.description()}': {exc}", "critical")


def style_buildings(layer: QgsVectorLayer) -> None:
    """The default look of extracted buildings: a semi-transparent orange fill with an outline."""
    symbol = QgsFillSymbol.createSimple(
        {
            "color": "255,140,0,80",
            "outline_color": "230,80,0,255",
            "outline_width": "0.5",
            "outline_width_unit": "MM",
        }
    )
    renderer = layer.renderer()
    if renderer is not None and hasattr(renderer, "setSymbol"):
        renderer.setSymbol(symbol)
    layer.triggerRepaint()


def load_result(result: dict[str, Any], name: str, memory: bool, temp_dir: str | None = None) -> QgsVectorLayer:
    """The engine's output as a layer: a temporary (memory) copy, or the GeoPackage itself.

    With ``memory``, the features are copied into a memory layer and ``temp_dir`` (the run's
    temporary folder) is removed.

    Raises:
        RuntimeError: the output cannot be opened.
    """
    path = result["output"]
    uri = f"{path}|layername={result.get('layer') or 'buildings'}"
    layer = QgsVectorLayer(uri, name, "ogr")
    if not layer.isValid():
        raise RuntimeError(f"cannot open the engine's output {uri}")
    if memory:
        copy = layer.materialize(QgsFeatureRequest())
        copy.setName(name)
        del layer
        if temp_dir:
            shutil.rmtree(temp_dir, ignore_errors=True)
        layer = copy
    style_buildings(layer)
    return layer


class SetupEngineTask(QgsTask):
    """Set up the plugin's own engine (``setup_engine.setup_engine``) off the GUI thread, with
    progress, the pip output in the QGIS log and a cancel that stops pip at once.

    On success the engine's python becomes the plugin setting and discovery is refreshed;
    ``python`` then holds it, else ``error`` the exception (``SetupCancelled`` when cancelled).
    ``on_done(task, ok)`` is called on the GUI thread.
    """

    def __init__(
        self,
        venv_dir: str,
        source: str | None = None,
        torch: bool = False,
        on_done: Callable[[SetupEngineTask, bool], None] | None = None,
        base_python: str | None = None,
        bundled: str | None = "plugin",
    ):
        """``bundled``: the engine wheel to install when ``source`` is empty ("plugin": the one
        the plugin zip carries, if any; None: none, fastsam-geo from the package index)."""
        from .setup_engine import bundled_wheel

        super().__init__("Setting up the fastsam-geo engine" + (" (with torch)" if torch else ""), TASK_CAN_CANCEL)
        self.venv_dir, self.source, self.torch, self.base_python = venv_dir, source, torch, base_python
        self.bundled = bundled_wheel() if bundled == "plugin" else bundled
        self.seconds = 0.0
        self.on_done = on_done
        self.python: str | None = None
        self.error: BaseException | None = None
        self.lines: list[str] = []

    def _log(self, line: str) -> None:
        self.lines.append(line)
        log(line, "info")

    def run(self) -> bool:
        import time

        from .setup_engine import setup_engine

        t0 = time.monotonic()
        try:
            self.python = setup_engine(
                self.venv_dir,
                source=self.source,
                torch=self.torch,
                bundled=self.bundled,
                base_python=self.base_python,
                log=self._log,
                progress=self.setProgress,
                cancelled=self.isCanceled,
            )
            return True
        except Exception as exc:  # reported on the GUI thread
            self.error = exc
            return False
        finally:
            self.seconds = time.monotonic() - t0

    def finished(self, result: bool) -> None:  # GUI thread
        from .utils import KEY_PYTHON, set_setting

        if result and self.python:
            set_setting(KEY_PYTHON, self.python)
            connection.reset()
            log(f"engine set up in {self.seconds:.0f} s: {self.python}", "success")
        elif self.error is not None:
            log(f"engine set-up failed: {self.error}", "critical")
        if self.on_done is not None:
            try:
                self.on_done(self, result)
            except Exception as exc:
                log(f"error while handling the end of '{self.description()}': {exc}", "critical")
