"""Throughput with 300 objects per tile: forward pass vs fastsam-geo end to end vs a naive loop.

All three use the FastSAM-s architecture (yolov8s-seg, one class, random weights: no
official weights can be downloaded here) at 1024 px on the CPU, with the same torch threads:

(a) the forward pass alone, one tile per call (and four, the default batch);
(b) ``extract_buildings`` end to end over a 2 x 2-tile raster (1920 px), per tile. Random weights
    give few non-empty masks, so each tile gets 300 realistic objects: the network's forward
    pass and NMS run for real, then 300 detections with the boxes of real objects (the
    buildings and trees of the scene) are assembled on the network's own prototypes (the real
    cost of building 300 masks), and the rest of the pipeline (select, vectorize, merge, write)
    runs on those 300 masks of buildings and trees;
(c) a naive loop: ``ultralytics.FastSAM(...).predict(tile, retina_masks=True)`` per 1024 px tile
    with the same conf / max_det (300 full-resolution masks), prediction only.

Usage: ``python benchmarks/bench_throughput.py --data DIR --out FILE.json [--quick]``
"""

from __future__ import annotations

import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common

OBJECTS = 300
CONF = 0.0005  # random weights score every anchor near the head's bias: a low conf keeps 300


def realistic_masks(sc: common.SceneFiles, n: int = OBJECTS) -> dict[str, Any]:
    """Per tile id, ``n`` true instance masks: the scene's buildings, then its trees (discs)."""
    import geopandas as gpd
    import numpy as np
    import shapely

    from fastsam_geo.oracle import TruthSegmenter
    from fastsam_geo.raster import RasterSource
    from fastsam_geo.synthetic import plan_scene
    from fastsam_geo.tiling import Tile, TileGrid

    truth = gpd.read_file(sc.truth)
    plan = plan_scene(sc.size, sc.size, sc.seed, density=sc.density)
    out: dict[str, Any] = {}
    with RasterSource(sc.raster) as src:
        info = src.info
        t = info.transform
        xs, ys = t * (plan.trees[:, 0], plan.trees[:, 1])
        trees = shapely.buffer(shapely.points(xs, ys), plan.trees[:, 2] * abs(t.a), quad_segs=8)
        geoms = np.concatenate([np.asarray(truth.geometry.values, dtype=object), trees])
        oracle = TruthSegmenter(gpd.GeoDataFrame(geometry=geoms, crs=info.crs))
        grid = TileGrid(info.width, info.height, common.TILE, common.OVERLAP, t)
        for spec in grid:
            h, w = int(spec.window.height), int(spec.window.width)
            tile = Tile(
                np.zeros((h, w, 3), np.uint8),
                spec.window,
                spec.transform,
                info.crs,
                spec.core,
                None,
                spec.index,
                spec.id,
            )
            masks = oracle.segment([tile])[0]
            out[spec.id] = masks.subset(np.arange(min(n, len(masks))))
    return out


class ForwardThenObjects:
    """The network's forward pass and NMS for real, then ``n`` realistic objects per tile.

    For each tile, detections with the boxes of the recorded objects and random mask
    coefficients are assembled on the network's prototypes (the cost of building that many
    building-sized masks), then the recorded masks are returned for the rest of the pipeline.
    """

    def __init__(self, seg: Any, recorded: dict[str, Any], seed: int = 0) -> None:
        import numpy as np

        self.seg = seg
        self.recorded = recorded
        self.rng = np.random.default_rng(seed)
        self.weights_path = seg.weights_path
        self.weights_sha256 = seg.weights_sha256
        self.batch_size = seg.batch_size  # the pipeline batches tiles by this
        self.assembled = 0

    def segment(self, tiles: Any) -> list[Any]:
        import numpy as np

        from fastsam_geo.segment import assemble_masks

        raws = self.seg.predict_raw(tiles)
        out = []
        for raw, tile in zip(raws, tiles, strict=True):
            masks = self.recorded[tile.id]
            nm = raw.protos.shape[0]
            det = np.zeros((len(masks), 6 + nm), np.float32)
            top, left = raw.letterbox.pad
            det[:, :4] = masks.boxes + np.array([left, top, left, top], np.float32)
            det[:, 4] = np.linspace(0.9, 0.3, len(masks))
            det[:, 6:] = self.rng.standard_normal((len(masks), nm))
            self.assembled += len(assemble_masks(det, raw.protos, raw.letterbox, nodata=tile.nodata))
            out.append(masks)
        return out


def run(data: Path, quick: bool = False) -> dict[str, Any]:
    import numpy as np
    import rasterio
    import torch

    from fastsam_geo.pipeline import extract_buildings
    from fastsam_geo.raster import RasterSource
    from fastsam_geo.segment import FastSAMSegmenter, letterbox_image, letterbox_params
    from fastsam_geo.tiling import TileGrid

    res: dict[str, Any] = {"name": "throughput_300"}
    weights = common.random_fastsam_s(data / "weights")
    sc = common.scene(data, 1920, seed=9005, density=1.0)
    recorded = realistic_masks(sc)
    counts = [len(m) for m in recorded.values()]
    seg = FastSAMSegmenter(weights, device="cpu", conf=CONF, max_det=OBJECTS)  # the engine's default batch size
    n_rep = 2 if quick else 5
    res.update(
        model="FastSAM-s architecture (yolov8s-seg, 1 class), random weights",
        input_px=common.TILE,
        device=str(seg.device),
        batch_size=seg.batch_size,
        torch_threads=seg.threads,
        conf=CONF,
        max_det=OBJECTS,
        raster="1920 x 1920 px synthetic (seed 9005, density 1.0): 4 tiles of 1024 px",
        objects_per_tile=counts,
    )

    # (a) forward pass alone
    with RasterSource(sc.raster) as src:
        grid = TileGrid(src.info.width, src.info.height, common.TILE, common.OVERLAP, src.info.transform)
        image, _ = src.read(grid[0].window)
    lb = letterbox_params(image.shape[:2], (common.TILE, common.TILE), resize=False)
    x1 = torch.from_numpy(letterbox_image(image, lb)[None]).permute(0, 3, 1, 2).float().div_(255)
    x4 = x1.repeat(4, 1, 1, 1)

    def forward(x: Any) -> Any:
        with torch.inference_mode():
            return seg.net(x)

    t1, _ = common.repeat(lambda: forward(x1), n_rep, warmup=1)
    t4, _ = common.repeat(lambda: forward(x4), max(n_rep // 2, 1), warmup=1)
    res["forward_s_per_tile_batch1"] = common.stats(t1)
    res["forward_s_per_tile_batch4"] = common.stats([t / 4 for t in t4])
    common.log(f"throughput: forward {statistics.median(t1):.3f} s/tile (batch 1)")

    # (b) fastsam-geo end to end, 300 objects per tile
    hybrid = ForwardThenObjects(seg, recorded)
    e2e = []
    summaries = []
    with tempfile.TemporaryDirectory(dir=data) as tmp:
        for _ in range(max(n_rep - 2, 1)):
            s = extract_buildings(sc.raster, Path(tmp) / "b.gpkg", segmenter=hybrid, overwrite=True)  # type: ignore[arg-type]
            summaries.append(s)
            e2e.append(s.seconds / s.tiles_processed)
            common.log(f"throughput: end to end {s.seconds:.2f} s for {s.tiles_processed} tiles, {s.stage_seconds}")
    res["end_to_end_s_per_tile"] = common.stats(e2e)
    res["end_to_end_stages"] = min(summaries, key=lambda s: s.seconds).stage_seconds
    res["masks_assembled_per_tile"] = round(hybrid.assembled / sum(s.tiles_processed for s in summaries), 1)
    res["buildings_written"] = summaries[-1].buildings

    # (b') the same with the other batch size (1 <-> 4): how much batching helps on this machine
    other = 4 if seg.batch_size == 1 else 1
    seg_o = FastSAMSegmenter(weights, device="cpu", batch_size=other, conf=CONF, max_det=OBJECTS)
    hybrid_o = ForwardThenObjects(seg_o, recorded)
    e2e_o = []
    with tempfile.TemporaryDirectory(dir=data) as tmp:
        for _ in range(max(n_rep - 3, 1)):
            s = extract_buildings(sc.raster, Path(tmp) / "b.gpkg", segmenter=hybrid_o, overwrite=True)  # type: ignore[arg-type]
            e2e_o.append(s.seconds / s.tiles_processed)
            common.log(f"throughput: end to end, batch {other}: {s.seconds:.2f} s for {s.tiles_processed} tiles")
    res["other_batch_size"] = other
    res["end_to_end_other_batch_s_per_tile"] = common.stats(e2e_o)

    # (c) the naive loop: ultralytics' FastSAM with full-resolution (retina) masks
    from ultralytics import FastSAM

    ul = FastSAM(str(weights))
    naive = []
    n_masks = []
    with rasterio.open(sc.raster) as ds:
        tiles = [np.ascontiguousarray(ds.read(window=spec.window).transpose(1, 2, 0)[..., ::-1]) for spec in grid]

    def predict(bgr: Any) -> Any:
        return ul.predict(
            bgr,
            imgsz=common.TILE,
            conf=CONF,
            iou=seg.iou,
            max_det=OBJECTS,
            retina_masks=True,
            device="cpu",
            verbose=False,
        )[0]

    predict(tiles[0])  # sets up ultralytics' predictor (which sets cpu_count - 1 torch threads)
    torch.set_num_threads(seg.threads)  # the same threads for every figure
    for bgr in tiles[: 2 if quick else 3]:
        t, r = common.repeat(lambda bgr=bgr: predict(bgr), 1)
        naive.extend(t)
        n_masks.append(0 if r.masks is None else len(r.masks))
        common.log(f"throughput: naive ultralytics retina {t[0]:.2f} s ({n_masks[-1]} masks)")
    res["naive_retina_s_per_tile"] = common.stats(naive)
    res["naive_masks_per_tile"] = n_masks

    fwd = min(statistics.median(t1), statistics.median([t / 4 for t in t4]))
    ratio = statistics.median(e2e) / fwd
    res.update(
        forward_reference_s=round(fwd, 4),
        end_to_end_over_forward=round(ratio, 3),
        end_to_end_other_batch_over_forward=round(statistics.median(e2e_o) / fwd, 3),
        naive_over_forward=round(statistics.median(naive) / fwd, 3),
        naive_over_end_to_end=round(statistics.median(naive) / statistics.median(e2e), 2),
        target="end-to-end time per tile with 300 objects <= 1.5 x the forward pass",
        met=ratio <= 1.5,
    )
    return res


def main() -> None:
    ap = common.arg_parser(__doc__, weights_help="(unused: this benchmark uses the FastSAM-s architecture)")
    a = ap.parse_args()
    common.write_fragment(a.out, run(a.data, a.quick))


if __name__ == "__main__":
    main()
