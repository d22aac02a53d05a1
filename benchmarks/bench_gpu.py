"""GPU: tiles per second of the FastSAM-s architecture at 1024 px, batched, float32 and half.

Runs only where torch sees an NVIDIA GPU (``torch.cuda.is_available()``); elsewhere it records
that there is none. FastSAM-s architecture (yolov8s-seg, one class) with random weights, the
same low ``conf`` / ``max_det=300`` as the CPU throughput benchmark, so that 300 detections per
tile go through NMS and mask assembly. Two figures per setting: the forward pass alone
(synchronised) and ``FastSAMSegmenter.segment`` (upload, forward, NMS, masks assembled on the
CPU); plus ``extract_buildings`` end to end over a 16-tile raster with the best setting.

Usage: ``python benchmarks/bench_gpu.py --data DIR --out FILE.json [--quick]``
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common

CONF, MAX_DET = 0.0005, 300


def run(data: Path, quick: bool = False) -> dict[str, Any]:
    import torch

    res: dict[str, Any] = {"name": "gpu", "torch": torch.__version__, "torch_cuda": torch.version.cuda}
    if not torch.cuda.is_available():
        res.update(
            available=False,
            note=f"no NVIDIA GPU here: torch.cuda.is_available() is False (torch {torch.__version__}, "
            f"built for CUDA {torch.version.cuda})",
            met=None,
        )
        return res

    import numpy as np

    from fastsam_geo.pipeline import extract_buildings
    from fastsam_geo.raster import RasterSource
    from fastsam_geo.segment import FastSAMSegmenter, letterbox_image, letterbox_params
    from fastsam_geo.tiling import Tile, TileGrid

    res.update(
        available=True,
        gpu=torch.cuda.get_device_name(0),
        gpu_memory_gib=round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1),
    )
    weights = common.random_fastsam_s(data / "weights")
    sc = common.scene(data, 3712, seed=9002)
    with RasterSource(sc.raster) as src:
        info = src.info
        grid = TileGrid(info.width, info.height, common.TILE, common.OVERLAP, info.transform)
        tiles = []
        for spec in grid:
            image, nodata = src.read(spec.window)
            tiles.append(Tile(image, spec.window, spec.transform, info.crs, spec.core, nodata, spec.index, spec.id))
    tiles = (tiles * 4)[: 16 if quick else 64]
    rows = []
    for half in (False, True):
        for batch in (1, 8, 16):
            seg = FastSAMSegmenter(weights, device="cuda", half=half, batch_size=batch, conf=CONF, max_det=MAX_DET)
            lb = letterbox_params((common.TILE, common.TILE), (common.TILE, common.TILE), resize=False)
            x = np.stack([letterbox_image(t.image, lb) for t in tiles[:batch]])
            xt = torch.from_numpy(x).cuda().permute(0, 3, 1, 2).contiguous()
            xt = (xt.half() if half else xt.float()).div_(255)

            def forward(xt: Any = xt, seg: Any = seg) -> None:
                with torch.inference_mode():
                    seg.net(xt)
                torch.cuda.synchronize()

            fwd, _ = common.repeat(forward, 10, warmup=3)
            seg.segment(tiles[:batch])  # warm-up
            torch.cuda.synchronize()
            t = time.perf_counter()
            masks = seg.segment(tiles)
            torch.cuda.synchronize()
            dt = time.perf_counter() - t
            rows.append(
                {
                    "half": half,
                    "batch": batch,
                    "forward_tiles_per_s": round(batch / float(np.median(fwd)), 2),
                    "segment_tiles_per_s": round(len(tiles) / dt, 2),
                    "masks_per_tile": round(sum(len(m) for m in masks) / len(tiles), 1),
                }
            )
            common.log(f"gpu: {rows[-1]}")
            del seg
            torch.cuda.empty_cache()
    best = max(rows, key=lambda r: r["segment_tiles_per_s"])
    seg = FastSAMSegmenter(
        weights, device="cuda", half=best["half"], batch_size=best["batch"], conf=CONF, max_det=MAX_DET
    )
    with tempfile.TemporaryDirectory(dir=data) as tmp:
        s = extract_buildings(sc.raster, Path(tmp) / "b.gpkg", segmenter=seg, overwrite=True)
    res.update(
        rows=rows,
        best=best,
        end_to_end={
            "tiles": s.tiles_processed,
            "seconds": s.seconds,
            "tiles_per_s": round(s.tiles_processed / s.seconds, 2),
            "megapixels_per_s": round(sc.size * sc.size / 1e6 / s.seconds, 2),
            "stage_seconds": s.stage_seconds,
        },
        met=None,
    )
    return res


def main() -> None:
    ap = common.arg_parser(__doc__, weights_help="(unused: the FastSAM-s architecture is timed)")
    a = ap.parse_args()
    common.write_fragment(a.out, run(a.data, a.quick))


if __name__ == "__main__":
    main()
