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
import rasterio
import shapely

from fastsam_geo import __version__
from fastsam_geo.errors import Cancelled, FastSAMGeoError, OutputError, PromptError, RasterError
from fastsam_geo.ledger import Ledger, NoLedger, ledger_path
from fastsam_geo.masks import InstanceMasks
from fastsam_geo.merge import MergedObjects, TileMerger
from fastsam_geo.output import VectorWriter, area_m2, check_output
from fastsam_geo.raster import RasterSource
from fastsam_geo.segment import Segmenter
from fastsam_geo.tiling import DEFAULT_OVERLAP, DEFAULT_TILE_SIZE, Tile, TileGrid, TileSpec
from fastsam_geo.vectorize import masks_to_geometries, polygon_parts, simplify

GDAL_CACHE_MB = 128
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
    tiles_resumed: int = 0
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
        # GDAL's block cache defaults to 5 % of RAM and keeps every block read: capped, the
        # memory of a run stays flat in the raster's size (one row of tiles still fits).
        try:
            with rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_MB):
                for spec in specs:
                    if stop.is_set():
                        return
                    try:
                        image, nodata = src.read(spec.window)
                        tile = Tile(image, spec.window, spec.transform, crs, spec.core, nodata, spec.index, spec.id)
                        item = _Item(spec, tile)
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


def _prompt_label(prompts: Any) -> str:
    kinds = []
    if prompts.points:
        kinds.append("point")
    if prompts.boxes:
        kinds.append("box")
    if prompts.text:
        kinds.append(f"text:{prompts.text}")
    return "+".join(kinds) or "everything"


def _select(
    tile: Tile,
    masks: InstanceMasks,
    prompts: Any,
    bfilter: BuildingFilter,
    pixel_area_m2: float,
    text_scorer: Any,
) -> tuple[InstanceMasks, str]:
    """Prompt-select the everything masks of one tile; returns the chosen masks and a label."""
    prompted = prompts is not None and not prompts.is_empty
    if not prompted and not (bfilter.enabled and len(masks)):
        return masks, "everything"
    from fastsam_geo import prompts as P

    if prompted and (prompts.points or prompts.boxes):
        return P.select_prompts(masks, prompts, tile.transform, image=tile.image, scorer=text_scorer), _prompt_label(
            prompts
        )
    if bfilter.enabled and len(masks):
        if not prompted:
            keep = P.building_filter(
                masks,
                pixel_area_m2=pixel_area_m2,
                min_area_m2=bfilter.min_area_m2,
                max_area_m2=bfilter.max_area_m2,
                min_rectangularity=bfilter.min_rectangularity,
            )
            masks = masks.subset(keep)
        masks = P.nms_masks(masks, iou=bfilter.nms_iou)
    if prompted:
        return P.select_prompts(masks, prompts, tile.transform, image=tile.image, scorer=text_scorer), _prompt_label(
            prompts
        )
    return masks, "everything"


def _route_prompts(prompts: Any, grid: TileGrid, specs: list[TileSpec], info: Any) -> list[TileSpec]:
    """The tiles that point and box prompts need; raises PromptError for a prompt outside the raster.

    A point goes to every tile whose window holds it; a box to the tiles that hold it
    whole (else to every tile it touches). Pieces found twice are merged at the seams.
    """
    inv = ~info.transform
    wanted: set[int] = set()
    corners = []
    for p in prompts.points:
        corners.append(((p.x, p.y), (p.x, p.y), f"point ({p.x:.3f}, {p.y:.3f})"))
    for bx in prompts.boxes:
        corners.append(
            (
                (bx.xmin, bx.ymax),
                (bx.xmax, bx.ymin),
                f"box ({bx.xmin:.3f}, {bx.ymin:.3f}, {bx.xmax:.3f}, {bx.ymax:.3f})",
            )
        )
    for (x0, y0), (x1, y1), what in corners:
        c0, r0 = inv * (x0, y0)
        c1, r1 = inv * (x1, y1)
        c0, c1 = sorted((c0, c1))
        r0, r1 = sorted((r0, r1))
        if c1 < 0 or r1 < 0 or c0 >= info.width or r0 >= info.height:
            raise PromptError(
                f"{what} in {info.crs.to_string()} lies outside {info.path} "
                f"(bounds {tuple(round(v, 3) for v in info.bounds)}); check the prompt's CRS."
            )
        touching = grid.indices_intersecting(c0, r0, max(c1, c0 + 1e-6), max(r1, r0 + 1e-6))
        whole = [
            int(i)
            for i in touching
            if grid[int(i)].window.col_off <= c0
            and c1 <= grid[int(i)].window.col_off + grid[int(i)].window.width
            and grid[int(i)].window.row_off <= r0
            and r1 <= grid[int(i)].window.row_off + grid[int(i)].window.height
        ]
        wanted.update(whole or [int(i) for i in touching])
    return [sp for sp in specs if sp.index in wanted]


class _CacheOnly:
    """A segmenter that never runs a model: for re-prompting tiles already in the cache.

    Its ``metadata`` is what a CPU ``FastSAMSegmenter`` with the same settings reports, so
    its cache keys are the ones ``extract`` wrote.
    """

    def __init__(
        self, raster: str | os.PathLike[str], weights: str | os.PathLike[str] | None, conf: float, iou: float
    ) -> None:
        from fastsam_geo.segment import mask_settings
        from fastsam_geo.weights import resolve_weights, sha256_file

        self.raster = raster
        self.weights_path = resolve_weights(weights)
        self.weights_sha256 = sha256_file(self.weights_path)
        self.metadata = mask_settings(self.weights_sha256, conf=conf, iou=iou)

    def segment(self, tiles: Sequence[Tile]) -> list[InstanceMasks]:
        ids = ", ".join(t.id for t in tiles[:3])
        raise PromptError(
            f"{self.raster}: tile(s) {ids} not in the mask cache; run `fastsam-geo extract` over this raster "
            "first (with the same weights, --conf, --iou, --bands and --gsd), or use `extract` with these prompts."
        )


def _inner(segmenter: Any) -> Any:
    """The segmenter behind a cache wrapper."""
    return getattr(segmenter, "segmenter", segmenter)


def _with_cache(segmenter: Any, raster: str | os.PathLike[str], cache_dir: str | os.PathLike[str], bands: str) -> Any:
    """Wrap ``segmenter`` so that tiles already segmented come from ``cache_dir``.

    Keys come from the segmenter's ``metadata`` (weights sha256, conf, iou, max_det...), the
    same way the QGIS worker builds them, so both share the cache.
    """
    from fastsam_geo.cache import CachedSegmenter, MaskCache, key_fn_for

    settings = getattr(segmenter, "metadata", None)
    if settings is None:  # a plugged-in segmenter without metadata: key on its type
        settings = {"weights_sha256": type(segmenter).__name__, "conf": 0.0, "iou": 0.0, "imgsz": None}
    return CachedSegmenter(segmenter, MaskCache(cache_dir), key_fn_for(raster, settings, bands))


def _working_gsd(gsd: float | str | None, segmenter: Any, weights: str | os.PathLike[str] | None) -> float | None:
    """The ground resolution tiles are read at: ``gsd``, else the segmenter's (or its weights')."""
    from fastsam_geo.modelmeta import parse_gsd, weights_gsd, working_gsd

    try:
        checked = parse_gsd(gsd)
    except ValueError as exc:
        raise RasterError(str(exc)) from None
    if checked is not None:
        return working_gsd(checked, None)
    model = getattr(_inner(segmenter), "gsd", None) if segmenter is not None else weights_gsd(weights)
    return working_gsd(None, model)


def _grid_metadata(src: RasterSource) -> dict[str, str]:
    """Output metadata of the grid and the radiometry the tiles were read with."""
    i = src.info
    out = {
        "native_gsd_m": f"{i.native_gsd_m:.6g}",
        "gsd_m": f"{i.gsd_m:.6g}",
        "grid": f"{i.width} x {i.height} px (native {i.native_width} x {i.native_height})",
        "bands": ",".join(str(b) for b in i.bands),
    }
    radiometry = getattr(src, "radiometry", None)
    if radiometry:
        out["radiometry"] = str(radiometry)
    return out


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
    batch_size: int | None = None,
    conf: float = 0.25,
    iou: float = 0.7,
    building_filter: BuildingFilter | bool | None = None,
    text_scorer: Any = None,
    simplify_px: float = 1.0,
    min_area_m2: float = 2.0,
    regularize: bool = False,
    match_iou: float = 0.5,
    overwrite: bool = False,
    resume: bool = False,
    cache_dir: str | os.PathLike[str] | None = None,
    cache_only: bool = False,
    layer: str = "buildings",
    progress: ProgressFn | None = None,
    cancel: CancelFn | None = None,
    prefetch: int = 4,
    gsd: float | str | None = None,
) -> ExtractSummary:
    """Extract building polygons from ``raster`` into ``output`` (.gpkg, .geojson, .fgb).

    Args:
        raster: GeoTIFF/COG/VRT path.
        output: vector path; refused if it exists unless ``overwrite``.
        segmenter: any :class:`~fastsam_geo.segment.Segmenter`; default a
            ``FastSAMSegmenter`` with ``weights``, ``device``, ``batch_size`` (None: 1 on the CPU,
            4 on a GPU), ``conf``, ``iou``.
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
        cancel: returns True to stop; the run then raises :class:`Cancelled` and writes nothing
            (the finished tiles stay in the resume ledger).
        cache_dir: keep each tile's everything masks there, so a new prompt over an area
            already segmented costs no inference.
        cache_only: never run the model: every tile must be in ``cache_dir`` (re-prompting).
        resume: continue an interrupted run writing ``output``: finished tiles are not
            computed again, and the result equals an uninterrupted run.
        gsd: working ground resolution in metres per pixel: tiles are read resampled to it
            (None: the segmenter's ``gsd``, stored with its weights; ``"native"``: the
            raster's own resolution). Polygons come out in the raster's CRS either way.

    Returns:
        An :class:`ExtractSummary`.
    """
    t_start = time.perf_counter()
    timer = _Timer()
    check_output(output, overwrite)
    state = ledger_path(output)
    if state.exists() and not (resume or overwrite):
        raise OutputError(
            f"{output}: an interrupted run left {state.name}; "
            "pass --resume to continue it, or --overwrite to start again."
        )
    if resume or overwrite:
        for stale in Path(output).parent.glob(f".{Path(output).name}.*.partial.gpkg"):
            stale.unlink()
    if isinstance(building_filter, BuildingFilter):
        bfilter = building_filter
    else:
        bfilter = BuildingFilter(enabled=building_filter is not False)
    with RasterSource(raster, bands=bands, stretch=stretch) as src:  # type: ignore[arg-type]
        src.set_gsd(_working_gsd(gsd, segmenter, weights))  # after the raster is checked
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
            if prompts.points or prompts.boxes:
                specs = _route_prompts(prompts, grid, specs, info)
            if prompts.text and text_scorer is None:
                from fastsam_geo.textprompt import ClipScorer

                text_scorer = ClipScorer()
        if cache_only:
            if cache_dir is None:
                raise PromptError("re-prompting from the cache needs a cache folder (--cache-dir).")
            segmenter = _CacheOnly(raster, weights, conf, iou)
        elif segmenter is None:
            from fastsam_geo.segment import FastSAMSegmenter

            segmenter = FastSAMSegmenter(weights, device=device, batch_size=batch_size, conf=conf, iou=iou)
        if batch_size is None:
            batch_size = int(getattr(segmenter, "batch_size", 1) or 1)
        if cache_dir is not None:
            segmenter = _with_cache(segmenter, raster, cache_dir, f"{list(info.bands)}|{stretch}")  # + tile grid
        summary = ExtractSummary(
            raster=str(raster),
            output=str(output),
            tiles_total=len(specs),
            mode=mode,
            crs=info.crs.to_string(),
            weights=str(getattr(_inner(segmenter), "weights_path", "") or "") or None,
            weights_sha256=getattr(_inner(segmenter), "weights_sha256", None),
        )
        merger = TileMerger(grid, match_iou=match_iou)
        for idx in set(range(len(grid))) - {s.index for s in specs}:
            merger.done[idx] = True  # tiles outside the prompts' reach hold nothing to wait for
        params = {
            "raster": str(Path(raster).resolve()),
            "raster_size": os.path.getsize(raster) if os.path.exists(raster) else 0,
            "tile_size": tile_size,
            "overlap": overlap,
            "bands": list(info.bands),
            "stretch": stretch,
            "grid": [info.width, info.height],
            "prompts": repr(prompts),
            "segmenter": type(_inner(segmenter)).__name__,
            "weights_sha256": summary.weights_sha256,
            "conf": conf,
            "iou": iou,
            "building_filter": asdict(bfilter),
            "match_iou": match_iou,
        }
        ledger: Ledger | NoLedger
        if resume:
            ledger = Ledger.open(output, params)
        elif len(specs) > 1:
            ledger = Ledger.create(output, params)
        else:  # one tile (a click): nothing worth resuming, and ~5 ms saved
            ledger = NoLedger()
        tol = simplify_px * abs(info.transform.a)
        min_area_map = min_area_m2 / pixel_area * abs(info.transform.a * info.transform.e)
        tiles_table: list[dict[str, Any]] = []
        done = 0

        try:
            with VectorWriter(output, info.crs, overwrite=overwrite, layer=layer) as writer:

                def emit(objs: MergedObjects) -> None:
                    if not len(objs):
                        return
                    t0 = time.perf_counter()
                    geoms = simplify(objs.geoms, tol)
                    if regularize:
                        from fastsam_geo.regularize import regularize_array

                        geoms = regularize_array(
                            geoms, tolerance=abs(info.transform.a), max_hausdorff=2.5 * abs(info.transform.a)
                        )
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
                        raise Cancelled(
                            f"cancelled after {done} of {len(specs)} tiles; nothing was written to {output}; "
                            "run again with --resume to continue."
                        )

                batch: list[Tile] = []

                def book(
                    index: int,
                    tile_id: str,
                    status: str,
                    geoms: Sequence[Any],
                    scores: Sequence[float],
                    labels: Sequence[str],
                    error: str = "",
                    *,
                    replayed: bool = False,
                ) -> None:
                    """Account for one finished tile (done, nodata or failed): tile table, ledger
                    (unless replayed from it), summary counts and progress."""
                    nonlocal done
                    tiles_table.append({"tile_id": tile_id, "status": status, "objects": len(geoms), "error": error})
                    if not replayed:
                        ledger.record(index, tile_id, status, geoms, scores, list(labels), error)
                    summary.tiles_processed += int(status == "done")
                    summary.tiles_nodata += int(status == "nodata")
                    summary.tiles_failed += int(status == "failed")
                    if status == "failed":
                        summary.failures.append(f"{tile_id}: {error}")
                    done += 1
                    if progress is not None and not replayed:
                        progress(done, len(specs))

                def run_batch(tiles: list[Tile]) -> None:
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
                        book(tile.index, tile.id, "done", geoms[ok], sel.scores[ok], [label] * int(ok.sum()))
                        t0 = time.perf_counter()

                if resume:
                    for rec in ledger.records():
                        if rec.status == "done":
                            emit(merger.add(rec.index, rec.geoms, rec.scores, {"prompt": rec.labels}))
                        else:
                            emit(merger.skip(rec.index))
                        book(
                            rec.index,
                            rec.tile_id,
                            rec.status,
                            rec.geoms,
                            rec.scores,
                            rec.labels,
                            rec.error,
                            replayed=True,
                        )
                    finished = {r["tile_id"] for r in tiles_table}
                    specs_left = [sp for sp in specs if sp.id not in finished]
                    summary.tiles_resumed = done
                else:
                    specs_left = specs
                t_read = time.perf_counter()
                for item in _prefetch(src, specs_left, info.crs, prefetch * max(batch_size, 1)):
                    timer.add("read_wait", t_read)
                    check_cancel()
                    if item.tile is None or (item.tile.nodata is not None and item.tile.nodata.all()):
                        emit(merger.skip(item.spec.index))
                        status = "failed" if item.tile is None else "nodata"
                        book(item.spec.index, item.spec.id, status, [], [], [], item.error or "")
                    else:
                        batch.append(item.tile)
                        if len(batch) >= max(batch_size, 1):
                            run_batch(batch)
                            batch = []
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
                    "weights": summary.weights or type(_inner(segmenter)).__name__,
                    "weights_sha256": summary.weights_sha256 or "",
                    "conf": str(conf),
                    "iou": str(iou),
                    **_grid_metadata(src),
                    "building_filter": json.dumps(asdict(bfilter)),
                    "created_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                }
                tables = {
                    "fastsam_geo_tiles": pd.DataFrame(tiles_table, columns=["tile_id", "status", "objects", "error"]),
                    "fastsam_geo_metadata": pd.DataFrame({"key": list(metadata), "value": list(metadata.values())}),
                }
                if summary.tiles_failed and summary.tiles_failed * 2 > summary.tiles_failed + summary.tiles_processed:
                    raise RasterError(
                        f"{raster}: {summary.tiles_failed} of {summary.tiles_failed + summary.tiles_processed} tiles "
                        "could not be read; the file is truncated or corrupt (check it with gdalinfo -checksum)."
                    )
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
        except Cancelled:
            ledger.close()  # resumable
            raise
        except FastSAMGeoError:
            ledger.remove()  # the input is at fault: nothing to resume
            raise
        except BaseException:
            ledger.close()  # a crash or Ctrl-C: resumable
            raise
        ledger.remove()
    summary.stage_seconds = {k: round(v, 3) for k, v in timer.seconds.items()}
    summary.seconds = round(time.perf_counter() - t_start, 3)
    return summary


__all__ = ["BuildingFilter", "ExtractSummary", "FastSAMGeoError", "extract_buildings"]
