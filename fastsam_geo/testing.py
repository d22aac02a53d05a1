"""Helpers for tests and benchmarks that need a model file without downloading one."""

from __future__ import annotations

import os
from pathlib import Path


def random_fastsam_checkpoint(
    path: str | os.PathLike[str], cfg: str = "yolov8s-seg.yaml", *, seed: int = 0, imgsz: int = 1024
) -> Path:
    """Save a checkpoint of the FastSAM-s architecture (``yolov8s-seg``, one class) with random
    weights, the way ultralytics saves checkpoints, so it loads through ``ultralytics.FastSAM``.

    It segments nothing meaningful: it exercises the same code path as the official weights
    (loading, forward pass, NMS, mask assembly) at the same cost.
    """
    import torch
    from ultralytics.nn.tasks import SegmentationModel

    torch.manual_seed(seed)
    model = SegmentationModel(cfg, nc=1, verbose=False)
    model.names = {0: "object"}
    model.args = {"task": "segment", "imgsz": imgsz}
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    ckpt = {
        "model": model.half(),
        "train_args": {"task": "segment", "imgsz": imgsz},
        "epoch": -1,
        "date": None,
        "version": "8.4",
    }
    torch.save(ckpt, out)
    return out
