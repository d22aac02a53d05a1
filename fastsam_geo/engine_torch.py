"""The torch engine of :class:`~fastsam_geo.segment.FastSAMSegmenter`: ``.pt`` checkpoints.

The only module of the segmenter that imports torch and ultralytics (when a segmenter is built,
not at import). It loads the weights through ``ultralytics.FastSAM`` and applies ultralytics'
own NMS; letterboxing and mask assembly are the shared numpy code of :mod:`fastsam_geo.segment`.
Needs the ``torch`` extra: ``pip install "fastsam-geo[torch]"``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from fastsam_geo.errors import DependencyError, WeightsError
from fastsam_geo.segment import FastSAMSegmenter, cpu_threads
from fastsam_geo.weights import sha256_file

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

TORCH_EXTRA = 'pip install "fastsam-geo[torch]"'


def import_torch() -> Any:
    """``torch``, or :class:`DependencyError` naming the extra that installs it."""
    try:
        import torch
    except ImportError as e:
        raise DependencyError(
            f"torch is not installed ({e}): .pt weights, `train` and `export` need it: {TORCH_EXTRA}; "
            "or run an .onnx model (the default without torch: weights/fastsam-geo-n.onnx)."
        ) from e
    return torch


def set_torch_threads(threads: int | None = None) -> int:
    """Set torch's intra-op threads (default: every core this process may use; ultralytics leaves one idle).

    Returns the number set.
    """
    torch = import_torch()
    n = threads or cpu_threads()
    torch.set_num_threads(n)
    return n


def resolve_device(device: str | int | None = "auto") -> torch.device:
    """``"auto"`` -> CUDA if available, else Apple MPS if available, else CPU; others are checked.

    Raises:
        DependencyError: a CUDA / MPS device was asked for but this torch build cannot use it.
    """
    torch = import_torch()
    if device is None or (isinstance(device, str) and device.lower() == "auto"):
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    dev = torch.device(f"cuda:{device}" if isinstance(device, int) else device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise DependencyError(
            f"device={device!r} asked for CUDA, but this torch ({torch.__version__}) cannot use a GPU; "
            "install a CUDA build of torch or use device='cpu'."
        )
    if dev.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise DependencyError(f"device={device!r} asked for Apple MPS, which is not available here; use device='cpu'.")
    return dev


class TorchFastSAMSegmenter(FastSAMSegmenter):
    """:class:`~fastsam_geo.segment.FastSAMSegmenter` on torch (built for ``.pt`` weights).

    Extra attributes: ``net`` (the fused ``torch.nn.Module``), ``threads`` (torch CPU threads).
    """

    engine = "torch"

    def _setup(
        self, *, device: str | int | None, half: bool | None, batch_size: int | None, threads: int | None
    ) -> None:
        self.device = resolve_device(device)
        if batch_size is None:
            self.batch_size = 1 if self.device.type == "cpu" else 4
        if half and self.device.type != "cuda":
            log.warning("half precision is only used on CUDA; running in float32 on %s", self.device)
        self.half = bool(self.device.type == "cuda" and (half is None or half))
        self._load()
        # after ultralytics is imported; _forward sets it again if someone changed it since
        # (ultralytics' own predictors set cpu_count - 1, and 2 threads beat 1 by 1.8x on 2 cores)
        self.threads = set_torch_threads(threads)

    def _load(self) -> None:
        torch = import_torch()
        try:
            from ultralytics import FastSAM
        except ImportError as e:
            raise DependencyError(f"ultralytics is not installed ({e}): {TORCH_EXTRA}") from e
        try:  # ultralytics' NMS uses torchvision's C++ kernel only when torchvision is already imported
            import torchvision  # noqa: F401
        except ImportError:  # pragma: no cover - a dependency; ultralytics falls back on its own (slower) NMS
            log.debug("torchvision not importable; NMS falls back on ultralytics' TorchNMS")
        path = self.weights_path
        try:
            wrapper = FastSAM(str(path))
        except Exception as e:
            reason = " ".join(str(e).split())[:300] or type(e).__name__
            raise WeightsError(
                f"Cannot load model weights {path}: {type(e).__name__}: {reason}. "
                "Use a FastSAM or YOLO-seg .pt checkpoint (e.g. FastSAM-s.pt)."
            ) from e
        net = wrapper.model
        if not isinstance(net, torch.nn.Module):
            raise WeightsError(f"Model weights {path} are not a PyTorch .pt checkpoint; use a FastSAM .pt file.")
        head = net.model[-1] if hasattr(net, "model") and len(net.model) else None
        if getattr(wrapper, "task", None) != "segment" or not hasattr(head, "nm"):
            raise WeightsError(
                f"Model weights {path} hold a {getattr(wrapper, 'task', 'unknown')!r} model, not an instance-"
                "segmentation one; use a FastSAM or YOLO-seg checkpoint (e.g. FastSAM-s.pt)."
            )
        ckpt_path = Path(getattr(wrapper, "ckpt_path", None) or path)
        if ckpt_path.is_file():  # a bare official name downloaded by ultralytics lands here
            self.weights_path = ckpt_path.resolve()
        self.weights_sha256 = sha256_file(self.weights_path)
        from fastsam_geo.modelmeta import META_KEY, default_gsd

        ckpt = getattr(wrapper, "ckpt", None)  # the checkpoint dict ultralytics loaded: no second read
        meta = ckpt.get(META_KEY) if isinstance(ckpt, dict) else None
        self.model_meta = dict(meta) if isinstance(meta, dict) else {}
        self.gsd: float | None = default_gsd(self.weights_path, self.model_meta)

        if hasattr(net, "fuse"):
            net = net.fuse(verbose=False)
        net = net.to(self.device).eval()
        net = net.half() if self.half else net.float()
        for p in net.parameters():
            p.requires_grad_(False)
        self.net = net
        self.names = dict(getattr(net, "names", {0: "object"}))
        self.stride = int(max(int(torch.as_tensor(net.stride).max()), 32))
        self.end2end = bool(getattr(net, "end2end", False))

    def _forward(self, x: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
        import torch
        from ultralytics.utils.nms import non_max_suppression

        if torch.get_num_threads() != self.threads:
            torch.set_num_threads(self.threads)
        out = []
        with torch.inference_mode():
            xt = torch.from_numpy(x).to(self.device).permute(0, 3, 1, 2).contiguous()
            xt = (xt.half() if self.half else xt.float()).div_(255.0)
            preds = self.net(xt)
            head = preds[0] if isinstance(preds, (tuple, list)) else preds
            if isinstance(head, (tuple, list)):
                pred, protos = head[0], head[1]
            else:
                pred, protos = head, preds[1]
            for j in range(len(x)):
                # one image per call: NMS's time limit then never drops the later images of a batch
                det = non_max_suppression(
                    pred[j : j + 1],
                    self.nms_conf,
                    self.iou,
                    max_det=self.max_det,
                    nc=len(self.names),
                    end2end=self.end2end,
                )[0]
                out.append((det.float().cpu().numpy(), protos[j].float().cpu().numpy()))
        return out
