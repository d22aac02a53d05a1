"""The ONNX Runtime engine of :class:`~fastsam_geo.segment.FastSAMSegmenter`: ``.onnx`` exports.

Runs a YOLOv8-seg / FastSAM model exported by ``fastsam-geo export`` (ultralytics' ONNX
exporter) with ONNX Runtime, then the numpy NMS of :mod:`fastsam_geo.nms` and the shared numpy
mask assembly: no torch anywhere, so the light install (``pip install fastsam-geo``) runs it.

Execution providers: ``device="auto"`` uses CUDA when onnxruntime lists
``CUDAExecutionProvider`` (``pip install onnxruntime-gpu``), else the CPU; ``"cuda"`` asks for
CUDA (an error when it is missing); ``"tensorrt"`` puts ``TensorrtExecutionProvider`` first
(it builds an engine per input shape on first use: minutes); ``"cpu"`` the CPU only.

An export with a fixed input size (the default, 1024 x 1024) runs every tile at that size:
smaller tiles are padded (as the torch engine pads them), larger ones resized to fit. A
``--batch dynamic`` export takes any batch and any size that is a multiple of the stride.
"""

from __future__ import annotations

import ast
import logging
import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from fastsam_geo.errors import DependencyError, WeightsError
from fastsam_geo.modelmeta import META_KEY, default_gsd, parse_meta
from fastsam_geo.nms import non_max_suppression
from fastsam_geo.segment import FastSAMSegmenter, cpu_threads, round_up
from fastsam_geo.weights import sha256_file

log = logging.getLogger(__name__)

CPU, CUDA, TENSORRT = "CPUExecutionProvider", "CUDAExecutionProvider", "TensorrtExecutionProvider"


def import_onnxruntime() -> Any:
    """``onnxruntime``, or :class:`DependencyError` saying how to install it."""
    try:
        import onnxruntime
    except ImportError as e:
        raise DependencyError(f".onnx models need onnxruntime ({e}): pip install onnxruntime") from e
    return onnxruntime


def select_providers(device: str | int | None, available: Sequence[str]) -> list[str]:
    """The execution providers to ask for, best first, for ``device`` given those ``available``.

    >>> select_providers("auto", [CPU]), select_providers("auto", [TENSORRT, CUDA, CPU])
    (['CPUExecutionProvider'], ['CUDAExecutionProvider', 'CPUExecutionProvider'])
    >>> select_providers("tensorrt", [TENSORRT, CUDA, CPU])[0], select_providers("cpu", [CUDA, CPU])
    ('TensorrtExecutionProvider', ['CPUExecutionProvider'])
    """
    dev = "cuda" if isinstance(device, int) else str(device or "auto").lower()
    kind = dev.split(":")[0]
    if kind == "cpu":
        return [CPU]
    if kind == "auto":
        return [p for p in (CUDA, CPU) if p in available] or [CPU]
    wanted = {"cuda": [CUDA], "tensorrt": [TENSORRT, CUDA], "trt": [TENSORRT, CUDA]}.get(kind)
    if wanted is None:
        raise ValueError(f"device={device!r}: an ONNX model runs on 'auto', 'cpu', 'cuda[:N]' or 'tensorrt'")
    if wanted[0] not in available:
        raise DependencyError(
            f"device={device!r} needs onnxruntime's {wanted[0]}, but this onnxruntime only has "
            f"{', '.join(available)}; install onnxruntime-gpu (with CUDA/TensorRT) or use device='cpu'."
        )
    return [p for p in wanted if p in available] + [CPU]


def _parse_names(text: str | None) -> dict[int, str]:
    """Class names as ultralytics writes them (``"{0: 'item'}"``).

    >>> _parse_names("{0: 'item'}"), _parse_names(None)
    ({0: 'item'}, {0: 'object'})
    """
    try:
        names = ast.literal_eval(text) if text else None
    except (ValueError, SyntaxError):
        names = None
    if not isinstance(names, dict) or not names:
        return {0: "object"}
    return {int(k): str(v) for k, v in names.items()}


class OnnxFastSAMSegmenter(FastSAMSegmenter):
    """:class:`~fastsam_geo.segment.FastSAMSegmenter` on ONNX Runtime (built for ``.onnx`` weights).

    Extra attributes: ``session`` (the ``onnxruntime.InferenceSession``), ``providers`` (those in
    use), ``model_meta`` (the file's fastsam-geo metadata: ``gsd_m``, ``source_sha256``...),
    ``fixed_shape`` (``(H, W)`` of a fixed-size export, else None), ``fixed_batch``.
    """

    engine = "onnxruntime"

    def _setup(
        self, *, device: str | int | None, half: bool | None, batch_size: int | None, threads: int | None
    ) -> None:
        ort = import_onnxruntime()
        providers = select_providers(device, ort.get_available_providers())
        opts = ort.SessionOptions()
        self.threads = int(threads or cpu_threads())
        opts.intra_op_num_threads = self.threads
        opts.inter_op_num_threads = 1
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.log_severity_level = 3
        path = self.weights_path
        self._requested_providers = providers
        try:
            self.session = ort.InferenceSession(os.fspath(path), opts, providers=providers)
        except Exception as e:
            reason = " ".join(str(e).split())[:300] or type(e).__name__
            raise WeightsError(
                f"Cannot load ONNX model {path}: {reason}. Export one with: fastsam-geo export MODEL.pt MODEL.onnx"
            ) from e
        self.weights_sha256 = sha256_file(path)
        self.providers = list(self.session.get_providers())
        self.device = "cuda" if self.providers[0] in (CUDA, TENSORRT) else "cpu"
        self._read_io(path)
        if half is not None and bool(half) != self.half:
            log.warning("%s is a %s export; half=%s is ignored", path.name, "float16" if self.half else "float32", half)
        if self.fixed_batch is not None:
            self.batch_size = self.fixed_batch
        elif batch_size is None:
            self.batch_size = 1 if self.device == "cpu" else 4

    def __getstate__(self) -> dict[str, Any]:
        """Picklable (for process or Dask executors): the session is rebuilt from the file."""
        state = dict(self.__dict__)
        state.pop("session", None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        ort = import_onnxruntime()
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = self.threads
        opts.inter_op_num_threads = 1
        opts.log_severity_level = 3
        self.session = ort.InferenceSession(os.fspath(self.weights_path), opts, providers=self._requested_providers)

    def _read_io(self, path: os.PathLike[str]) -> None:
        """Check the graph is a YOLOv8-seg one; read names, stride, input size and precision."""
        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        ranks = sorted(len(o.shape) for o in outputs)
        if len(inputs) != 1 or len(inputs[0].shape) != 4 or ranks[:2] != [3, 4]:
            raise WeightsError(
                f"ONNX model {path} is not an instance-segmentation export (inputs {[i.shape for i in inputs]}, "
                f"outputs {[o.shape for o in outputs]}); export a FastSAM/YOLO-seg .pt with fastsam-geo export."
            )
        self.input_name = inputs[0].name
        self.input_dtype = np.float16 if "float16" in inputs[0].type else np.float32
        b, _, h, w = inputs[0].shape
        self.fixed_batch = b if isinstance(b, int) else None
        self.fixed_shape = (h, w) if isinstance(h, int) and isinstance(w, int) else None
        props = self.session.get_modelmeta().custom_metadata_map
        self.model_meta = parse_meta(props.get(META_KEY))
        self.gsd: float | None = default_gsd(self.weights_path, self.model_meta)
        self.names = _parse_names(props.get("names"))
        self.stride = max(int(props.get("stride", 32) or 32), 32)
        self.half = bool(self.model_meta.get("half", self.input_dtype == np.float16))

    def _input_shape(self, shapes: Sequence[tuple[int, int]], floor: int = 0) -> tuple[tuple[int, int], bool]:
        if self.fixed_shape is None:
            return super()._input_shape(shapes, floor)
        fh, fw = self.fixed_shape
        if self.imgsz is not None and round_up(self.imgsz, self.stride) != max(fh, fw):
            log.warning("imgsz=%s ignored: %s was exported for %d x %d inputs", self.imgsz, self.weights_path, fh, fw)
        fits = all(h <= fh and w <= fw for h, w in shapes)
        return (fh, fw), self.imgsz is not None or not fits

    def _forward(self, x: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
        n = len(x)
        if self.fixed_batch is not None and n < self.fixed_batch:  # a short last batch: pad with grey images
            x = np.concatenate([x, np.full((self.fixed_batch - n, *x.shape[1:]), 114, np.uint8)])
        inp = (x.transpose(0, 3, 1, 2).astype(np.float32) / np.float32(255.0)).astype(self.input_dtype, copy=False)
        outs = self.session.run(None, {self.input_name: np.ascontiguousarray(inp)})
        pred = next(o for o in outs if o.ndim == 3)
        protos = next(o for o in outs if o.ndim == 4)
        return [
            (
                non_max_suppression(pred[j], self.nms_conf, self.iou, max_det=self.max_det, nc=len(self.names)),
                protos[j].astype(np.float32, copy=False),
            )
            for j in range(n)
        ]
