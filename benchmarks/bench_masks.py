"""Seconds per tile: forward pass only vs FastSAMSegmenter.segment() vs ultralytics retina masks.

Run once by hand (not a test)::

    YOLO_OFFLINE=1 .venv/bin/python benchmarks/bench_masks.py [--size 1024] [--repeat 5] [--weights PATH]

Without ``--weights`` it builds a FastSAM-s-architecture checkpoint (yolov8s-seg, one class) with
random weights, like the test fixture. Random weights score every anchor near the head's bias, so
``conf`` is set very low and ``max_det`` caps the kept objects (default 300): both pipelines then
assemble the same number of masks, which is what the comparison is about.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("YOLO_OFFLINE", "1")
os.environ.setdefault("YOLO_VERBOSE", "False")

import numpy as np
from affine import Affine
from rasterio.windows import Window

from fastsam_geo.segment import FastSAMSegmenter, assemble_masks, letterbox_image, letterbox_params
from fastsam_geo.synthetic import plan_scene, render_block
from fastsam_geo.testing import random_fastsam_checkpoint
from fastsam_geo.tiling import Tile


def timed(fn: Callable[[], object], repeat: int) -> tuple[float, object]:
    """Fastest of ``repeat`` runs after one warm-up run (the least disturbed by other load on
    the machine), and the last result."""
    out = fn()
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return min(times), out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=1024)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--weights", type=Path, default=None)
    ap.add_argument("--conf", type=float, default=0.0005)
    ap.add_argument("--max-det", type=int, default=300)
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()

    import torch
    from ultralytics import FastSAM
    from ultralytics.utils import ops

    with tempfile.TemporaryDirectory() as tmp:
        weights = args.weights or random_fastsam_checkpoint(Path(tmp) / "FastSAM-s-random.pt")
        n = args.size
        image = np.ascontiguousarray(render_block(plan_scene(n, n, seed=3), Window(0, 0, n, n)).transpose(1, 2, 0))
        tile = Tile(image, Window(0, 0, n, n), Affine.identity(), None, Window(0, 0, n, n))

        seg = FastSAMSegmenter(weights, device="cpu", conf=args.conf, max_det=args.max_det, threads=args.threads)
        lb = letterbox_params((n, n), (n, n), resize=False)
        x = torch.from_numpy(letterbox_image(image, lb)[None]).permute(0, 3, 1, 2).float().div_(255)

        def forward() -> object:
            with torch.inference_mode():
                return seg.net(x)

        t_fwd, _ = timed(forward, args.repeat)
        t_seg, result = timed(lambda: seg.segment([tile]), args.repeat)
        masks = result[0]  # type: ignore[index]

        ul = FastSAM(str(weights))
        bgr = np.ascontiguousarray(image[..., ::-1])

        def retina() -> object:
            return ul.predict(
                bgr,
                imgsz=n,
                conf=args.conf,
                iou=seg.iou,
                max_det=args.max_det,
                retina_masks=True,
                device="cpu",
                verbose=False,
            )[0]

        retina()  # sets up ultralytics' predictor, which resets torch to cpu_count - 1 threads
        torch.set_num_threads(seg.threads)  # same threads for all three figures
        t_ul, res = timed(retina, args.repeat)
        n_ul = 0 if res.masks is None else len(res.masks)
        crop_px = sum(c.size for c in masks.crops)
        print(f"tile {n} px, torch threads {torch.get_num_threads()}, weights {Path(weights).name}")
        print(f"(a) forward pass only                 {t_fwd:7.3f} s/tile")
        print(
            f"(b) FastSAMSegmenter.segment()        {t_seg:7.3f} s/tile  ({len(masks)} masks, "
            f"{crop_px / 1e6:.1f} Mpx of crops)"
        )
        print(
            f"(c) ultralytics retina_masks=True     {t_ul:7.3f} s/tile  ({n_ul} masks, "
            f"{n_ul * n * n / 1e6:.1f} Mpx of masks)"
        )

        # Mask assembly alone, on the model's real prototypes with 300 synthetic detections whose
        # masks are not empty (random weights leave most masks empty, which flatters (b)).
        raw = seg.predict_raw([tile])[0]
        rng = np.random.default_rng(0)
        nm = raw.protos.shape[0]
        for label, lo, hi in (
            ("building-sized boxes 16-128 px", 16, 128),
            ("whole-tile boxes (worst case)", n, n),
        ):
            k = args.max_det
            wh = rng.uniform(lo, hi, (k, 2))
            xy = rng.uniform(0, n - wh)
            det = np.zeros((k, 6 + nm), np.float32)
            det[:, :4] = np.concatenate([xy, xy + wh], axis=1)
            det[:, 4] = np.linspace(0.9, 0.1, k)
            det[:, 6:] = rng.standard_normal((k, nm))
            t_own, _ = timed(lambda det=det: assemble_masks(det, raw.protos, raw.letterbox), args.repeat)
            td, tp = torch.from_numpy(det), torch.from_numpy(raw.protos)
            t_ref, _ = timed(lambda td=td, tp=tp: ops.process_mask_native(tp, td[:, 6:], td[:, :4], (n, n)), 1)
            print(
                f"    assembly of {k} {label}: in-box crops {t_own:6.3f} s, "
                f"ultralytics process_mask_native {t_ref:6.3f} s"
            )


if __name__ == "__main__":
    main()
