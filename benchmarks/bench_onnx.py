"""torch vs ONNX Runtime: forward pass and end to end per 1024 px tile, side by side in one run.

For the default model and the FastSAM-s architecture (random weights, ``conf`` low enough for
300 detections per tile): each ``.pt`` is exported once with ``fastsam_geo.export.export_onnx``
(fixed 1024 px, batch 1, float32, onnxslim), then, alternating engines so that a change of load
on the shared machine hits both alike:

- forward pass: the network alone on one letterboxed 1024 px tile (torch ``net(x)`` in inference
  mode / ``session.run``), median of 5 after a warm-up;
- end to end: ``extract_buildings`` on a 1024 px raster (one tile: read, forward, NMS, masks,
  polygons, merge, GeoPackage), median of 5 after a warm-up, no mask cache.

Both engines use every core. GPU rows (CUDA / TensorRT execution providers, half precision, batch
4 and 8) run only where onnxruntime lists ``CUDAExecutionProvider``; elsewhere "no GPU" is recorded.

Usage: ``python benchmarks/bench_onnx.py --data DIR --out FILE.json [--weights PT] [--quick]``
"""

from __future__ import annotations

import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common

RUNS = 5
FASTSAM_S_CONF, FASTSAM_S_MAX_DET = 0.0005, 300


def _export(pt: Path, folder: Path, **kw: Any) -> Path:
    from fastsam_geo.export import export_onnx

    out = folder / f"{pt.stem}-{kw.get('batch', 1)}{'-half' if kw.get('half') else ''}.onnx"
    if not out.exists():
        export_onnx(pt, out, imgsz=common.TILE, **kw)
    return out


def _forward_fn(seg: Any, x: Any) -> Any:
    """A no-argument call of the network alone on the uint8 batch ``x`` (N x H x W x 3)."""
    import numpy as np

    if seg.engine == "torch":
        import torch

        xt = torch.from_numpy(x).to(seg.device).permute(0, 3, 1, 2).contiguous()
        xt = (xt.half() if seg.half else xt.float()).div_(255.0)

        def fwd() -> None:
            with torch.inference_mode():
                seg.net(xt)
            if seg.device.type == "cuda":
                torch.cuda.synchronize()

        return fwd
    feed = {seg.input_name: (x.transpose(0, 3, 1, 2).astype(np.float32) / 255.0).astype(seg.input_dtype)}
    return lambda: seg.session.run(None, feed)


def _compare_cpu(name: str, pt: Path, raster: Path, work: Path, quick: bool, **seg_kw: Any) -> dict[str, Any]:
    """Both engines on the CPU, interleaved: forward and end-to-end medians, masks per tile."""

    from fastsam_geo.pipeline import extract_buildings
    from fastsam_geo.raster import RasterSource
    from fastsam_geo.segment import FastSAMSegmenter, letterbox_image, letterbox_params
    from fastsam_geo.testing import compare_instances
    from fastsam_geo.tiling import Tile

    onnx_file = _export(pt, work)
    segs = {
        "torch": FastSAMSegmenter(pt, device="cpu", **seg_kw),
        "onnxruntime": FastSAMSegmenter(onnx_file, device="cpu", **seg_kw),
    }
    with RasterSource(raster) as src:
        from rasterio.windows import Window

        win = Window(0, 0, common.TILE, common.TILE)
        image, nodata = src.read(win)
        tile = Tile(image, win, src.info.transform, src.info.crs, win, nodata)
    lb = letterbox_params(image.shape[:2], (common.TILE, common.TILE), resize=False)
    x = letterbox_image(image, lb)[None]
    runs = 2 if quick else RUNS
    fwd: dict[str, list[float]] = {k: [] for k in segs}
    e2e: dict[str, list[float]] = {k: [] for k in segs}
    fns = {k: _forward_fn(s, x) for k, s in segs.items()}
    for f in fns.values():
        f()  # warm-up
    for _ in range(runs):
        for k, f in fns.items():
            fwd[k] += common.repeat(f, 1)[0]
    with tempfile.TemporaryDirectory(dir=work) as tmp:
        for k, s in segs.items():  # warm-up
            extract_buildings(raster, Path(tmp) / f"{k}.gpkg", segmenter=s, overwrite=True)
        for _ in range(runs):
            for k, s in segs.items():
                summary = extract_buildings(raster, Path(tmp) / f"{k}.gpkg", segmenter=s, overwrite=True)
                e2e[k].append(summary.seconds)
    masks = {k: s.segment([tile])[0] for k, s in segs.items()}
    agree = compare_instances(masks["torch"], masks["onnxruntime"])
    out: dict[str, Any] = {"model": name, "weights": pt.name, "onnx_mib": round(onnx_file.stat().st_size / 2**20, 1)}
    for k in segs:
        out[k] = {
            "forward_s": common.stats(fwd[k]),
            "end_to_end_s": common.stats(e2e[k]),
            "masks_per_tile": len(masks[k]),
        }
    med = {k: (statistics.median(fwd[k]), statistics.median(e2e[k])) for k in segs}
    out["speedup_forward"] = round(med["torch"][0] / med["onnxruntime"][0], 2)
    out["speedup_end_to_end"] = round(med["torch"][1] / med["onnxruntime"][1], 2)
    out["agreement"] = {"ok": agree.ok(), **agree.__dict__}
    common.log(f"onnx {name}: forward x{out['speedup_forward']}, end to end x{out['speedup_end_to_end']}, {agree}")
    return out


def _gpu_rows(pt: Path, raster: Path, work: Path, quick: bool) -> dict[str, Any]:
    """ONNX Runtime on the GPU (CUDA / TensorRT providers, float32 / half, batch 4 and 8)."""
    import numpy as np
    import onnxruntime as ort

    from fastsam_geo.segment import FastSAMSegmenter, letterbox_image, letterbox_params

    available = ort.get_available_providers()
    if "CUDAExecutionProvider" not in available:
        return {"available": False, "note": f"no GPU: onnxruntime {ort.__version__} has {', '.join(available)}"}
    gpu = common.gpu_name() if _has_torch_cuda() else None
    from fastsam_geo.raster import RasterSource

    with RasterSource(raster) as src:
        from rasterio.windows import Window

        image, _ = src.read(Window(0, 0, common.TILE, common.TILE))
    lb = letterbox_params(image.shape[:2], (common.TILE, common.TILE), resize=False)
    rows = []
    devices = ["cuda"] + (["tensorrt"] if "TensorrtExecutionProvider" in available else [])
    for device in devices:
        for half in (False, True):
            for batch in (4, 8):
                onnx_file = _export(pt, work, batch=batch, half=half, device="0")
                seg = FastSAMSegmenter(onnx_file, device=device)
                x = np.stack([letterbox_image(image, lb)] * batch)
                times, _ = common.repeat(_forward_fn(seg, x), 2 if quick else RUNS, warmup=2)
                rows.append(
                    {
                        "provider": seg.providers[0],
                        "half": half,
                        "batch": batch,
                        "forward_s_per_tile": round(statistics.median(times) / batch, 4),
                    }
                )
                common.log(f"onnx gpu: {rows[-1]}")
    return {"available": True, "gpu": gpu, "rows": rows}


def _has_torch_cuda() -> bool:
    try:
        import torch

        return bool(torch.cuda.is_available())
    except ImportError:
        return False


def run(data: Path, weights: str | None, quick: bool = False) -> dict[str, Any]:
    import onnxruntime as ort
    import torch

    work = data / "onnx"
    work.mkdir(parents=True, exist_ok=True)
    sc = common.scene(data, common.TILE, seed=9003)
    default = common.default_weights(weights)
    rand = common.random_fastsam_s(data / "weights")
    res: dict[str, Any] = {
        "name": "onnx",
        "onnxruntime": ort.__version__,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "runs": 2 if quick else RUNS,
        "models": [],
    }
    if default is not None:
        res["models"].append(_compare_cpu("default", default, sc.raster, work, quick))
    res["models"].append(
        _compare_cpu("FastSAM-s arch.", rand, sc.raster, work, quick, conf=FASTSAM_S_CONF, max_det=FASTSAM_S_MAX_DET)
    )
    res["gpu"] = _gpu_rows(default or rand, sc.raster, work, quick)
    res["met"] = all(m["speedup_end_to_end"] >= 1.5 for m in res["models"])
    return res


def main() -> None:
    ap = common.arg_parser(__doc__)
    a = ap.parse_args()
    common.write_fragment(a.out, run(a.data, a.weights, a.quick))


if __name__ == "__main__":
    main()
