"""Stages 3 and 4, merge and sink: tile results -> seam merge -> GeoPackage, ledger, tables.

A :class:`RunSink` takes the :class:`~fastsam_geo.tilework.TileResult` of each finished
tile in whatever order an executor delivers them, feeds the streaming
:class:`~fastsam_geo.merge.TileMerger`, writes the objects that became final, records the
tile in the resume ledger, and at the end writes the tile table and the run's metadata.
Output ids do not depend on the order tiles arrived: the writer numbers the objects by a
stable key when it commits.
"""

from __future__ import annotations

import glob
import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import shapely

from fastsam_geo import __version__
from fastsam_geo.errors import OutputError, RasterError
from fastsam_geo.ledger import Ledger, NoLedger, discard_ledger, ledger_path
from fastsam_geo.merge import MergedObjects, TileMerger
from fastsam_geo.output import TILE_COLUMNS, VectorWriter, check_output, keep_area
from fastsam_geo.plan import RunPlan
from fastsam_geo.raster import display_path
from fastsam_geo.refine import outline_name
from fastsam_geo.tilework import TileResult
from fastsam_geo.vectorize import polygon_parts, simplify

ProgressFn = Callable[[int, int], None]
EMPTY_SCHEMA = {"score": "float64", "tile_ids": "str", "seam_merged": "bool", "pieces": "int64", "prompt": "str"}


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
    engine: str | None = None  # "onnx" (ONNX Runtime) or "torch" for FastSAM; a plugged-in model's own

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return asdict(self)


class Timer:
    """Seconds per stage, summed."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    def add(self, stage: str, t0: float) -> float:
        """Add the time since ``t0`` to ``stage``; returns now."""
        now = time.perf_counter()
        self.seconds[stage] = self.seconds.get(stage, 0.0) + now - t0
        return now

    def add_seconds(self, seconds: dict[str, float]) -> None:
        """Add measured seconds (e.g. a tile's, measured where it ran)."""
        for k, v in seconds.items():
            self.seconds[k] = self.seconds.get(k, 0.0) + v


def preflight(output: str | Path, *, overwrite: bool, resume: bool) -> None:
    """Refuse an output that exists, or an interrupted run's ledger without --resume/--overwrite;
    drop stale staging files of a run being resumed or overwritten."""
    check_output(output, overwrite)
    state = ledger_path(output)
    if state.exists() and not (resume or overwrite):
        raise OutputError(
            f"{output}: an interrupted run left {state.name}; "
            "pass --resume to continue it, or --overwrite to start again."
        )
    if resume or overwrite:
        own = f".{glob.escape(Path(output).name)}.*.partial.gpkg"  # "[" or "*" in a name: its own files only
        for suffix in ("", "-journal", "-wal", "-shm"):  # SQLite's files beside a killed run's staging file
            for stale in Path(output).parent.glob(own + suffix):
                stale.unlink()


class RunSink:
    """Merge and write one plan's tile results; see the module docstring.

    Use :meth:`open`, then :meth:`replay` (on resume), :meth:`add` per tile result,
    :meth:`commit`; :meth:`close` with the exception that ended the run, if any.
    """

    def __init__(self, plan: RunPlan, summary: ExtractSummary, progress: ProgressFn | None = None) -> None:
        self.plan = plan
        self.summary = summary
        self.progress = progress
        self.timer = Timer()
        self.merger = TileMerger(plan.grid, match_iou=plan.options.select.match_iou)
        for idx in set(range(len(plan.grid))) - {s.index for s in plan.specs}:
            self.merger.done[idx] = True  # tiles outside the prompts' reach hold nothing to wait for
        self.tiles_table: list[dict[str, Any]] = []
        self.done = 0
        self.ledger: Ledger | NoLedger = NoLedger()
        self.writer: VectorWriter | None = None
        self.segmenter_name = "Segmenter"
        self._sheet_tree = shapely.STRtree([shapely.box(*s.bounds) for s in plan.sheets]) if plan.sheets else None

    @property
    def total(self) -> int:
        """Tiles this run processes."""
        return len(self.plan.specs)

    def open(self, params: dict[str, Any], segmenter_name: str = "Segmenter") -> RunSink:
        """Open (resume) or create the ledger and the staging writer."""
        self.segmenter_name = segmenter_name
        out = self.plan.options.output
        if out.resume:
            self.ledger = Ledger.open(self.plan.output, params)
        elif self.total > 1 and out.resumable:
            self.ledger = Ledger.create(self.plan.output, params)
        elif out.overwrite:  # an interrupted run's ledger: --overwrite starts again, and it would stay behind
            discard_ledger(self.plan.output)
        # one tile (a click): nothing worth resuming, and ~5 ms saved
        self.writer = VectorWriter(self.plan.output, self.plan.crs_wkt, overwrite=out.overwrite, layer=out.layer)
        return self

    def replay(self) -> set[str]:
        """Feed the ledger's finished tiles (in the order they finished); returns their ids."""
        for rec in self.ledger.records():
            result = TileResult(rec.index, rec.tile_id, rec.status, rec.geoms, rec.scores, rec.labels, rec.error)
            self.add(result, replayed=True)
        self.summary.tiles_resumed = self.done
        return {r["tile_id"] for r in self.tiles_table}

    def add(self, result: TileResult, *, replayed: bool = False) -> None:
        """Merge one finished tile, write what became final, book it (ledger, counts, progress)."""
        self.timer.add_seconds(result.seconds)
        t0 = time.perf_counter()
        if result.status == "done":
            finals = self.merger.add(result.index, result.geoms, result.scores, {"prompt": result.labels})
        else:
            finals = self.merger.skip(result.index)
        self.timer.add("merge", t0)
        self._emit(finals)
        self._book(result, replayed)

    def _book(self, r: TileResult, replayed: bool) -> None:
        s = self.summary
        self.tiles_table.append({"tile_id": r.tile_id, "status": r.status, "objects": len(r.geoms), "error": r.error})
        if not replayed:
            self.ledger.record(r.index, r.tile_id, r.status, r.geoms, r.scores, list(r.labels), r.error)
        s.tiles_processed += int(r.status == "done")
        s.tiles_nodata += int(r.status == "nodata")
        s.tiles_failed += int(r.status == "failed")
        if r.status == "failed":
            s.failures.append(f"{r.tile_id}: {r.error}")
        self.done += 1
        if self.progress is not None and not replayed:
            self.progress(self.done, self.total)

    def _emit(self, objs: MergedObjects) -> None:
        if not len(objs) or self.writer is None:
            return
        plan = self.plan
        t0 = time.perf_counter()
        geoms = simplify(objs.geoms, plan.tolerance)
        if plan.options.select.regularize:
            from fastsam_geo.regularize import regularize_array

            px = abs(plan.transform.a)
            geoms = regularize_array(geoms, tolerance=px, max_hausdorff=2.5 * px)
        parts, idx = polygon_parts(geoms, min_area=plan.min_area_map)
        parts, idx = keep_area(parts, idx, plan.crs_wkt, *plan.area_range)  # final shapes, true m²
        t0 = self.timer.add("vectorize", t0)
        cols: dict[str, Any] = {
            "score": np.round(objs.scores[idx].astype(float), 4),
            "tile_ids": [objs.tile_ids[i] for i in idx],
            "seam_merged": objs.seam_merged[idx],
            "pieces": objs.pieces[idx],
            "prompt": [objs.attrs.get("prompt", [plan.mode] * len(objs))[i] for i in idx],
        }
        if self._sheet_tree is not None:
            cols["sheets"] = self._sheets_of(parts)
        self.writer.write(parts, cols)
        self.summary.seam_merged += int(objs.seam_merged[idx].sum())
        self.timer.add("write", t0)

    def _sheets_of(self, geoms: np.ndarray) -> list[str]:
        """For each polygon, the mosaic sheets it lies on (names joined by ';', in sheet order)."""
        assert self._sheet_tree is not None
        gi, si = self._sheet_tree.query(geoms, predicate="intersects")
        found: list[list[int]] = [[] for _ in range(len(geoms))]
        for g, s in zip(gi.tolist(), si.tolist(), strict=True):
            if shapely.area(shapely.intersection(geoms[g], shapely.box(*self.plan.sheets[s].bounds))) > 0:
                found[g].append(s)
        return [";".join(self.plan.sheets[s].name for s in sorted(f)) for f in found]

    def finish(self) -> None:
        """Flush the merger, check the run's health, write tables and move the output into place."""
        assert self.writer is not None
        self._emit(self.merger.flush())
        s, plan = self.summary, self.plan
        if s.tiles_processed == 0 and s.tiles_failed == 0 and self.total:
            raise RasterError(f"{plan.raster}: every tile is nodata; check the raster's nodata value and mask.")
        if s.tiles_failed and s.tiles_failed * 2 > s.tiles_failed + s.tiles_processed:
            raise RasterError(
                f"{plan.raster}: {s.tiles_failed} of {s.tiles_failed + s.tiles_processed} tiles "
                "could not be read; the file is truncated or corrupt (check it with gdalinfo -checksum)."
            )
        tables = {
            "fastsam_geo_tiles": [{k: r.get(k) for k in TILE_COLUMNS} for r in self.tiles_table],
            "fastsam_geo_metadata": self._metadata(self.segmenter_name),
        }
        s.buildings = self.writer.count
        schema = {**EMPTY_SCHEMA, **({"sheets": "str"} if plan.sheets else {})}
        self.writer.commit(tables, empty_schema=schema, order_by=("tile_ids", "bounds", "score"))

    def _metadata(self, weights_label: str) -> dict[str, str]:
        plan, o = self.plan, self.plan.options
        meta = {
            "fastsam_geo_version": __version__,
            "raster": display_path(plan.raster),
            "crs": self.summary.crs,
            "mode": plan.mode,
            "prompts": repr(plan.prompts) if plan.prompts is not None else "",
            "tile_size": str(o.tiling.tile_size),
            "overlap": str(o.tiling.overlap),
            "weights": self.summary.weights or weights_label,
            "weights_sha256": self.summary.weights_sha256 or "",
            "engine": self.summary.engine or "",
            "conf": str(o.model.conf),
            "iou": str(o.model.iou),
            "tta": str(o.model.tta),
            "outline": outline_name(o.model.refine),
            **plan.grid_metadata,
            "building_filter": json.dumps(asdict(o.select.building_filter)),
            "created_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }
        if plan.sheets:
            meta["sheets"] = json.dumps([s.name for s in plan.sheets])
        return meta

    def close(self, exc: BaseException | None) -> None:
        """End the run: the ledger goes when committed or when the input is at fault, else stays
        for --resume (crash, Ctrl-C, cancel); an uncommitted staging file is dropped."""
        from fastsam_geo.errors import Cancelled, FastSAMGeoError

        if self.writer is not None and exc is not None:
            self.writer.abort()
        if exc is None or (isinstance(exc, FastSAMGeoError) and not isinstance(exc, Cancelled)):
            self.ledger.remove()
        else:
            self.ledger.close()


__all__ = ["ExtractSummary", "RunSink", "Timer", "preflight"]
