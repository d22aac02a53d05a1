"""``extract_buildings``: raster -> tiles -> segmenter -> select -> vectorize -> merge -> write.

The one call behind the CLI and the QGIS plugin. It reports progress and honours
cancellation through callbacks and never prints. Reading runs ahead of the segmenter
in a thread (prefetch), so the model does not wait for I/O.
"""

from __future__ import annotations

import json
import os
import queue
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import shapely

from fastsam_geo import __version__
from fastsam_geo.errors import Cancelled, FastSAMGeoError, RasterError
from fastsam_geo.masks import InstanceMasks
from fastsam_geo.merge import MergedObjects, TileMerger
from fastsam_geo.output import VectorWriter, area_m2, check_output
from fastsam_geo.raster import RasterSource
from fastsam_geo.segment import Segmenter
from fastsam_geo.tiling import DEFAULT_OVERLAP, DEFAULT_TILE_SIZE, Tile, TileGrid, TileSpec
from fastsam_geo.vectorize import masks_to_geometries, polygon_parts, simplify

ProgressFn = Callable[[int, int], None]
CancelFn = Callable[[], bool]


@dataclass
class BuildingFilter:
    """Which "everything" masks count as buildings (used when no prompt is given)."""

    min_area_m2: float = 12.0
    max_area_m2: float = 20000.0
    min_rectangularity: float = 0.55
    nms_iou: float = 0.7
    enabled: bool = True


@dataclass
class ExtractSummary:
    """What a run did: counts, timings, where the output went."""

    raster: str
    output: str
    buildings: int = 0
    seam_merged: int = 0
    tiles_total: int = 0
    tiles_processed: int = 0
    tiles_nodata: int = 0
    tiles_failed: int = 0
    failures: list[str] = field(default_factory=list)
    seconds: float = 0.0
    stage_seconds: dict[str, float] = field(default_factory=dict)
    mode: str = "everything"
    crs: str = ""
    weights: str | None = None
    weights_sha256: str | None = None

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return asdict(self)


@dataclass
class _Item:
    spec: TileSpec
    tile: Tile | None
    error: str | None = None


def _tile_has_prompt(spec: TileSpec, cols: np.ndarray, rows: np.ndarray) -> bool:
    w = spec.window
    return bool(
        ((cols >= w.col_off) & (cols < w.col_off + w.width) & (rows >= w.row_off) & (rows < w.row_off + w.height)).any()
    )


class _Timer:
    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    def add(self, stage: str, t0: float) -> float:
        now = time.perf_counter()
        self.seconds[stage] = self.seconds.get(stage, 0.0) + now - t0
        return now


def _prefetch(src: RasterSource, specs: Sequence[TileSpec], crs: object, depth: int) -> Iterator[_Item]:
    """Read tiles in a thread, ``depth`` ahead of the consumer."""
    q: queue.Queue[_Item | None] = queue.Queue(maxsize=max(depth, 1))
    stop = threading.Event()

    def work() -> None:
        try:
            for spec in specs:
                if stop.is_set():
                    return
                try:
                    image, nodata = src.read(spec.window)
                    item = _Item(
                        spec, Tile(image, spec.window, spec.transform, crs, spec.core, nodata, spec.index, spec.id)
                    )
                except RasterError as exc:
                    item = _Item(spec, None, str(exc))
                while not stop.is_set():
                    try:
                        q.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
        finally:
            q.put(None)

    thread = threading.Thread(target=work, name="fastsam-geo-reader", daemon=True)
    thread.start()
    try:
        while True:
            item = q.get()
            if item is None:
                return
            yield item
    finally:
        stop.set()
        while thread.is_alive():
            try:
                q.get_nowait()
            except queue.Empty:
                thread.join(0.05)


def _select(
    tile: Tile,
    masks: InstanceMasks,
    prompts: Any,
    bfilter: BuildingFilter,
    pixel_area_m2: float,
    text_scorer: Any,
) -> tuple[InstanceMasks, str]:
    """Prompt-select the everything masks of one tile; returns the chosen masks and a label."""
    mode = "everything" if prompts is None else prompts.mode
    if mode == "everything" and not (bfilter.enabled and len(masks)):
        return masks, "everything"
    from fastsam_geo import prompts as P

    inv = ~tile.transform
    if mode == "points":
        xy = np.array([(p.x, p.y) for p in prompts.points], float)
        cols, rows = inv * (xy[:, 0], xy[:, 1])
        labels = np.array([p.label for p in prompts.points], int)
        return P.select_points(masks, np.floor(cols).astype(int), np.floor(rows).astype(int), labels), "point"
    if mode == "boxes":
        boxes = []
        for b in prompts.boxes:
            c0, r0 = inv * (b.xmin, b.ymax)
            c1, r1 = inv * (b.xmax, b.ymin)
            boxes.append((min(c0, c1), min(r0, r1), max(c0, c1), max(r0, r1)))
        return P.select_boxes(masks, np.asarray(boxes, float)), "box"
    if bfilter.enabled and len(masks):
        masks = P.nms_masks(masks, iou=bfilter.nms_iou)
    if mode == "text":
        scores = text_scorer.score(tile.image, masks, prompts.text) if len(masks) else np.zeros(0)
        keep = P.select_text(masks, scores, threshold=prompts.text_threshold, top_k=prompts.text_top_k)
        return masks.subset(keep), f"text:{prompts.text}"
    if bfilter.enabled and len(masks):
        keep = P.building_filter(
            masks,
            pixel_area_m2=pixel_area_m2,
            min_area_m2=bfilter.min_area_m2,
            max_area_m2=bfilter.max_area_m2,
            min_rectangularity=bfilter.min_rectangularity,
        )
        masks = masks.subset(keep)
    return masks, "everything"


def extract_buildings(
    raster: str | os.PathLike[str],
    output: str | os.PathLike[str],
    *,
    segmenter: Segmenter | None = None,
    weights: str | os.PathLike[str] | None = None,
    prompts: Any = None,
    tile_size: int = DEFAULT_TILE_SIZE,
    overlap: int = DEFAULT_OVERLAP,
    bands: Sequence[int] | None = None,
    stretch: str = "auto",
    device: str = "auto",
    batch_size: int = 4,
    conf: float = 0.25,
    iou: float = 0.7,
    building_filter: BuildingFilter | bool | None = None,
    text_scorer: Any = None,
    simplify_px: float = 1.0,
    min_area_m2: float = 2.0,
    regularize: bool = False,
    match_iou: float = 0.5,
    overwrite: bool = False,
    layer: str = "buildings",
    progress: ProgressFn | None = None,
    cancel: CancelFn | None = None,
    prefetch: int = 4,
) -> ExtractSummary:
    """Extract building polygons from ``raster`` into ``output`` (.gpkg, .geojson, .fgb).

    Args:
        raster: GeoTIFF/COG/VRT path.
        output: vector path; refused if it exists unless ``overwrite``.
        segmenter: any :class:`~fastsam_geo.segment.Segmenter`; default a
            ``FastSAMSegmenter`` with ``weights``, ``device``, ``batch_size``, ``conf``, ``iou``.
        prompts: a :class:`~fastsam_geo.prompts.Prompts` (points, boxes or text), in any
            CRS (transformed to the raster's); None means everything + building filter.
        tile_size, overlap: the tile grid in pixels.
        building_filter: filter for everything/text mode (True/None: defaults, False: off).
        text_scorer: CLIP scorer for text prompts (default: ``ClipScorer()``).
        simplify_px: simplification tolerance in pixels, applied after seam merging.
        min_area_m2: polygons smaller than this are dropped.
        regularize: square building outlines (right angles), refusing bad fits.
        match_iou: IoU inside the common region of two tiles above which pieces join.
        progress: ``progress(done, total)`` after each tile.
        cancel: returns True to stop; the run then raises :class:`Cancelled` and writes nothing.

    Returns:
        An :class:`ExtractSummary`.
    """
    t_start = time.perf_counter()
    timer = _Timer()
    check_output(output, overwrite)
    if isinstance(building_filter, BuildingFilter):
        bfilter = building_filter
    else:
        bfilter = BuildingFilter(enabled=building_filter is not False)
    with RasterSource(raster, bands=bands, stretch=stretch) as src:  # type: ignore[arg-type]
        info = src.info
        grid = TileGrid(info.width, info.height, tile_size, overlap, info.transform)
        pixel_area = float(area_m2(np.array([shapely.box(*grid.window_bounds(0))]), info.crs)[0]) / (
            grid.tile_w * grid.tile_h
        )
        mode = "everything"
        specs: list[TileSpec] = list(grid)
        if prompts is not None and not prompts.is_empty:
            prompts = prompts.to_crs(info.crs) if prompts.crs is not None else prompts
            mode = prompts.mode
            inv = ~info.transform
            if mode in ("points", "boxes"):
                if mode == "points":
                    xs = np.array([p.x for p in prompts.points], float)
                    ys = np.array([p.y for p in prompts.points], float)
                else:
                    xs = np.array([(b.xmin + b.xmax) / 2 for b in prompts.boxes], float)
                    ys = np.array([(b.ymin + b.ymax) / 2 for b in prompts.boxes], float)
                cols, rows = inv * (xs, ys)
                cols, rows = np.asarray(cols), np.asarray(rows)
                outside = (cols < 0) | (cols >= info.width) | (rows < 0) | (rows >= info.height)
                if outside.any():
                    k = int(np.flatnonzero(outside)[0])
                    from fastsam_geo.errors import PromptError

                    raise PromptError(
                        f"prompt at ({xs[k]:.3f}, {ys[k]:.3f}) in {info.crs.to_string()} lies outside {info.path} "
                        f"(bounds {tuple(round(v, 3) for v in info.bounds)}); check the prompt's CRS."
                    )
                specs = [s for s in specs if _tile_has_prompt(s, cols, rows)]
            if mode == "text" and text_scorer is None:
                from fastsam_geo.textprompt import ClipScorer

                text_scorer = ClipScorer()
        if segmenter is None:
            from fastsam_geo.segment import FastSAMSegmenter

            segmenter = FastSAMSegmenter(weights, device=device, batch_size=batch_size, conf=conf, iou=iou)
        summary = ExtractSummary(
            raster=str(raster),
            output=str(output),
            tiles_total=len(specs),
            mode=mode,
            crs=info.crs.to_string(),
            weights=str(getattr(segmenter, "weights_path", "") or "") or None,
            weights_sha256=getattr(segmenter, "weights_sha256", None),
        )
        merger = TileMerger(grid, match_iou=match_iou)
        for idx in set(range(len(grid))) - {s.index for s in specs}:
            merger.done[idx] = True  # tiles outside the prompts' reach hold nothing to wait for
        tol = simplify_px * abs(info.transform.a)
        min_area_map = min_area_m2 / pixel_area * abs(info.transform.a * info.transform.e)
        ledger: list[dict[str, Any]] = []
        done = 0

        with VectorWriter(output, info.crs, overwrite=overwrite, layer=layer) as writer:

            def emit(objs: MergedObjects) -> None:
                if not len(objs):
                    return
                t0 = time.perf_counter()
                geoms = simplify(objs.geoms, tol)
                if regularize:
                    from fastsam_geo.regularize import regularize_array

                    geoms = regularize_array(geoms, max_hausdorff=2.5 * abs(info.transform.a))
                parts, idx = polygon_parts(geoms, min_area=min_area_map)
                timer.add("vectorize", t0)
                t0 = time.perf_counter()
                cols = {
                    "score": np.round(objs.scores[idx].astype(float), 4),
                    "tile_ids": [objs.tile_ids[i] for i in idx],
                    "seam_merged": objs.seam_merged[idx],
                    "pieces": objs.pieces[idx],
                    "prompt": [objs.attrs.get("prompt", [mode] * len(objs))[i] for i in idx],
                }
                writer.write(parts, cols)
                summary.seam_merged += int(objs.seam_merged[idx].sum())
                timer.add("write", t0)

            def check_cancel() -> None:
                if cancel is not None and cancel():
                    raise Cancelled(f"cancelled after {done} of {len(specs)} tiles; nothing was written to {output}.")

            batch: list[Tile] = []

            def run_batch(tiles: list[Tile]) -> None:
                nonlocal done
                t0 = time.perf_counter()
                results = segmenter.segment(tiles)
                t0 = timer.add("segment", t0)
                for tile, masks in zip(tiles, results, strict=True):
                    sel, label = _select(tile, masks, prompts, bfilter, pixel_area, text_scorer)
                    t0 = timer.add("select", t0)
                    geoms = masks_to_geometries(sel, tile.transform)
                    ok = np.array([g is not None for g in geoms], bool)
                    t0 = timer.add("vectorize", t0)
                    finals = merger.add(tile.index, geoms[ok], sel.scores[ok], {"prompt": [label] * int(ok.sum())})
                    timer.add("merge", t0)
                    emit(finals)
                    t0 = time.perf_counter()
                    ledger.append({"tile_id": tile.id, "status": "done", "objects": int(ok.sum()), "error": ""})
                    summary.tiles_processed += 1
                    done += 1
                    if progress is not None:
                        progress(done, len(specs))

            t_read = time.perf_counter()
            for item in _prefetch(src, specs, info.crs, prefetch * max(batch_size, 1)):
                timer.add("read_wait", t_read)
                check_cancel()
                if item.tile is None:
                    summary.tiles_failed += 1
                    summary.failures.append(f"{item.spec.id}: {item.error}")
                    ledger.append(
                        {"tile_id": item.spec.id, "status": "failed", "objects": 0, "error": item.error or ""}
                    )
                    emit(merger.skip(item.spec.index))
                    done += 1
                elif item.tile.nodata is not None and item.tile.nodata.all():
                    summary.tiles_nodata += 1
                    ledger.append({"tile_id": item.spec.id, "status": "nodata", "objects": 0, "error": ""})
                    emit(merger.skip(item.spec.index))
                    done += 1
                else:
                    batch.append(item.tile)
                    if len(batch) >= max(batch_size, 1):
                        run_batch(batch)
                        batch = []
                if progress is not None and item.tile is None:
                    progress(done, len(specs))
                t_read = time.perf_counter()
            if batch:
                check_cancel()
                run_batch(batch)
            check_cancel()
            emit(merger.flush())
            if summary.tiles_processed == 0 and summary.tiles_failed == 0 and len(specs):
                raise RasterError(f"{raster}: every tile is nodata; check the raster's nodata value and mask.")
            metadata = {
                "fastsam_geo_version": __version__,
                "raster": str(Path(raster).resolve()),
                "crs": info.crs.to_string(),
                "mode": mode,
                "prompts": repr(prompts) if prompts is not None else "",
                "tile_size": str(tile_size),
                "overlap": str(overlap),
                "weights": summary.weights or type(segmenter).__name__,
                "weights_sha256": summary.weights_sha256 or "",
                "conf": str(conf),
                "iou": str(iou),
                "building_filter": json.dumps(asdict(bfilter)),
                "created_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            }
            tables = {
                "fastsam_geo_tiles": pd.DataFrame(ledger, columns=["tile_id", "status", "objects", "error"]),
                "fastsam_geo_metadata": pd.DataFrame({"key": list(metadata), "value": list(metadata.values())}),
            }
            summary.buildings = writer.count
            writer.commit(
                tables,
                empty_schema={
                    "score": "float64",
                    "tile_ids": "str",
                    "seam_merged": "bool",
                    "pieces": "int64",
                    "prompt": "str",
                },
            )
    summary.stage_seconds = {k: round(v, 3) for k, v in timer.seconds.items()}
    summary.seconds = round(time.perf_counter() - t_start, 3)
    return summary


__all__ = ["BuildingFilter", "ExtractSummary", "FastSAMGeoError", "extract_buildings"]
