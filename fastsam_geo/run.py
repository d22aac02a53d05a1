"""The stages put together: plan -> tile work (an executor) -> merge and sink.

:func:`extract_rasters` runs one or many rasters: it plans each, opens a
:class:`~fastsam_geo.sink.RunSink` per raster (replaying its resume ledger), hands every
remaining tile to an executor, and feeds the results to their sinks in the order they
finish. Executors only choose *where* tile work runs: :class:`LocalExecutor` here (a
reader thread ahead of the model, batches), :class:`~fastsam_geo.cluster.DaskExecutor`
on a Dask cluster. Both give the same output.
"""

from __future__ import annotations

import os
import queue
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Protocol

import rasterio

from fastsam_geo.errors import Cancelled, PromptError
from fastsam_geo.locks import locks_job_outputs
from fastsam_geo.output import refuse_input_as_output
from fastsam_geo.plan import ExtractOptions, RunPlan, Sheet, open_source, plan_run, resolve_gsd
from fastsam_geo.segmenters import (
    CacheOnly,
    ModelLabel,
    ResolvedModel,
    cache_bands_key,
    inner,
    label_of,
    make_segmenter,
    resolve_model,
    with_cache,
)
from fastsam_geo.sink import ExtractSummary, ProgressFn, RunSink, Timer, preflight
from fastsam_geo.tilework import TileContext, TileResult, process_tiles, read_tile
from fastsam_geo.tiling import Tile, TileSpec
from fastsam_geo.validate import check_run

if TYPE_CHECKING:
    from fastsam_geo.prompts import TextScorer
    from fastsam_geo.segment import Segmenter

GDAL_CACHE_MB = 128
#: rasterio passes GDAL_CACHEMAX to GDALSetCacheMax64, in bytes: 128 alone was a 128-byte cache, and
#: reading a raster with nodata (its mask) 60x slower
GDAL_CACHE_BYTES = GDAL_CACHE_MB * 1024 * 1024
CancelFn = Callable[[], bool]
CheckFn = Callable[[], None]


@dataclass
class Job:
    """One raster's remaining tiles, as an executor sees them."""

    plan: RunPlan
    specs: list[TileSpec]

    @property
    def context(self) -> TileContext:
        """The picklable context of the job's tiles."""
        return TileContext.of(self.plan)


class Executor(Protocol):
    """Runs tile work; yields ``(job number, result)`` as tiles finish, in any order."""

    seconds: dict[str, float]

    def run(self, jobs: Sequence[Job], check: CheckFn) -> Iterator[tuple[int, TileResult]]: ...


# ---------------------------------------------------------------------------------- local
def _prefetch(src: Any, specs: Sequence[TileSpec], crs: object, depth: int) -> Iterator[tuple[TileSpec, Any]]:
    """Read tiles in a thread, ``depth`` ahead of the consumer: ``(spec, Tile | TileResult)``."""
    q: queue.Queue[tuple[TileSpec, Any] | None] = queue.Queue(maxsize=max(depth, 1))
    stop = threading.Event()

    def work() -> None:
        # GDAL's block cache defaults to 5 % of RAM and keeps every block read: capped, the
        # memory of a run stays flat in the raster's size (one row of tiles still fits).
        try:
            with rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_BYTES):
                for spec in specs:
                    if stop.is_set():
                        return
                    item = (spec, read_tile(src, spec, crs))
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
        while (item := q.get()) is not None:
            yield item
    finally:
        stop.set()
        while thread.is_alive():
            try:
                q.get_nowait()
            except queue.Empty:
                thread.join(0.05)


class LocalExecutor:
    """Tile work in this process: a reader thread ``prefetch`` batches ahead, ``batch_size`` tiles
    per forward pass. ``segmenter_for(plan)`` gives the segmenter of a raster (cache-wrapped)."""

    def __init__(
        self,
        segmenter_for: Callable[[RunPlan], Segmenter],
        *,
        batch_size: int = 1,
        prefetch: int = 4,
        text_scorer: TextScorer | None = None,
    ) -> None:
        self.segmenter_for = segmenter_for
        self.batch_size = max(int(batch_size), 1)
        self.prefetch = prefetch
        self.text_scorer = text_scorer
        self.seconds: dict[str, float] = {}

    def run(self, jobs: Sequence[Job], check: CheckFn) -> Iterator[tuple[int, TileResult]]:
        """Each job in turn, its tiles in grid order."""
        timer = Timer()
        timer.seconds = self.seconds
        for n, job in enumerate(jobs):
            plan, ctx = job.plan, job.context
            segmenter = self.segmenter_for(plan)
            src = plan.source or open_source(plan.raster, plan.options.tiling)
            try:
                batch: list[Tile] = []
                t_read = time.perf_counter()
                for _spec, item in _prefetch(src, job.specs, src.info.crs, self.prefetch * self.batch_size):
                    timer.add("read_wait", t_read)
                    check()
                    if isinstance(item, TileResult):
                        yield n, item
                    else:
                        batch.append(item)
                        if len(batch) >= self.batch_size:
                            yield from ((n, r) for r in process_tiles(batch, segmenter, ctx, self.text_scorer))
                            batch = []
                    t_read = time.perf_counter()
                if batch:
                    check()
                    yield from ((n, r) for r in process_tiles(batch, segmenter, ctx, self.text_scorer))
            finally:
                if plan.source is None:
                    src.close()


# ---------------------------------------------------------------------------------- the run
@dataclass
class RasterJob:
    """A raster to extract into an output, with its own progress callback."""

    raster: str | os.PathLike[str]
    output: str | os.PathLike[str]
    progress: ProgressFn | None = None
    sheets: tuple[Sheet, ...] = ()
    options: ExtractOptions | None = None  # this raster's own options (e.g. resume), else the run's


def _open_sinks(plans: list[RunPlan], jobs: list[RasterJob], label: ModelLabel) -> list[RunSink]:
    """A sink per plan, ledger opened or created; the first failure closes those opened."""
    sinks: list[RunSink] = []
    try:
        for plan, job in zip(plans, jobs, strict=True):
            summary = ExtractSummary(
                raster=str(job.raster),
                output=str(job.output),
                tiles_total=len(plan.specs),
                mode=plan.mode,
                crs=plan.source.info.crs.to_string() if plan.source is not None else _crs_string(plan),
                weights=label.weights,
                weights_sha256=label.sha256,
                engine=label.engine,
            )
            sink = RunSink(plan, summary, job.progress)
            sinks.append(sink.open(plan.params(label.segmenter, label.sha256), label.segmenter))
    except BaseException as exc:
        for s in sinks:
            s.close(exc)
        raise
    return sinks


def _crs_string(plan: RunPlan) -> str:
    from rasterio.crs import CRS

    return CRS.from_wkt(plan.crs_wkt).to_string()


def drive(sinks: list[RunSink], executor: Executor, cancel: CancelFn | None) -> None:
    """Replay ledgers, run the remaining tiles on ``executor``, merge, commit every sink."""
    jobs = []
    for sink in sinks:
        finished = sink.replay() if sink.plan.options.output.resume else set()
        jobs.append(Job(sink.plan, [sp for sp in sink.plan.specs if sp.id not in finished]))

    def check() -> None:
        if cancel is not None and cancel():
            done, total = sum(s.done for s in sinks), sum(s.total for s in sinks)
            where = ", ".join(str(s.plan.output) for s in sinks)
            raise Cancelled(
                f"cancelled after {done} of {total} tiles; nothing was written to {where}; "
                "run again with --resume to continue."
            )

    for n, result in executor.run(jobs, check):
        sinks[n].add(result)
    check()
    for sink in sinks:
        sink.finish()


def _plan_all(
    jobs: list[RasterJob], options: ExtractOptions, segmenter: Segmenter | None, local: bool
) -> tuple[list[RunPlan], ResolvedModel | None]:
    """A plan per job (sources kept open for the local executor) and the model, resolved once
    (after the first raster is checked: a bad raster is named before a missing model)."""
    plans: list[RunPlan] = []
    resolved: ResolvedModel | None = None
    need_model = segmenter is None or options.output.cache_only  # cache-only: the model's cache keys
    try:
        for job in jobs:
            o = job.options or options
            src = open_source(job.raster, replace(o.tiling, gsd=None)) if local else None
            try:
                if src is not None:
                    refuse_input_as_output(job.output, src.dataset.files)  # any other multi-file format too
                if need_model and resolved is None:
                    resolved = resolve_model(o.model.weights, o.model.engine, o.tiling.tile_size)
                o = resolve_gsd(o, segmenter, resolved)
                if src is not None and hasattr(src, "set_gsd"):
                    src.set_gsd(o.tiling.gsd)  # type: ignore[arg-type]
                plans.append(plan_run(job.raster, job.output, o, source=src, sheets=job.sheets))
            except BaseException:
                if src is not None:
                    src.close()
                raise
        if need_model and resolved is None:
            resolved = resolve_model(options.model.weights, options.model.engine, options.tiling.tile_size)
    except BaseException:
        for p in plans:
            if p.source is not None:
                p.source.close()
        raise
    return plans, resolved


@locks_job_outputs
def extract_rasters(
    jobs: Sequence[RasterJob],
    options: ExtractOptions,
    *,
    segmenter: Segmenter | None = None,
    text_scorer: TextScorer | None = None,
    cancel: CancelFn | None = None,
    client: Any = None,
    executor: Executor | None = None,
) -> list[ExtractSummary]:
    """Extract buildings from every raster of ``jobs``; one summary per raster.

    ``client`` (a ``dask.distributed.Client``) runs tile work on its cluster, tiles of all
    rasters together; else it runs here (or on ``executor``). The model is resolved once, here,
    and its one value (:class:`~fastsam_geo.segmenters.ResolvedModel`) goes to the executor.
    """
    t_start = time.perf_counter()
    jobs = list(jobs)
    check_run(jobs, options)
    out = options.output
    for job in jobs:
        o = (job.options or options).output
        preflight(job.output, overwrite=o.overwrite, resume=o.resume)
    if out.cache_only and out.cache_dir is None:
        raise PromptError("re-prompting from the cache needs a cache folder (--cache-dir).")
    plans, resolved = _plan_all(jobs, options, segmenter, local=client is None)
    try:
        options = resolve_gsd(options, segmenter, resolved)
        if any(p.prompts is not None and p.prompts.text for p in plans) and text_scorer is None and client is None:
            from fastsam_geo.textprompt import ClipScorer

            text_scorer = ClipScorer()
        if executor is None:
            executor, label = _executor(plans, options, segmenter, resolved, text_scorer, client)
        else:
            label = getattr(executor, "label", None) or (
                label_of(segmenter) if segmenter is not None else ModelLabel(None, None, "Segmenter", None)
            )
        sinks = _open_sinks(plans, jobs, label)
        try:
            drive(sinks, executor, cancel)
        except BaseException as exc:
            for s in sinks:
                s.close(exc)
            raise
        for s in sinks:
            s.close(None)
    finally:
        for p in plans:
            if p.source is not None:
                p.source.close()
    elapsed = round(time.perf_counter() - t_start, 3)
    for s in sinks:
        s.timer.add_seconds(executor.seconds)
        s.summary.stage_seconds = {k: round(v, 3) for k, v in s.timer.seconds.items()}
        s.summary.seconds = elapsed
    return [s.summary for s in sinks]


def _executor(
    plans: list[RunPlan],
    options: ExtractOptions,
    segmenter: Segmenter | None,
    resolved: ResolvedModel | None,
    text_scorer: TextScorer | None,
    client: Any,
) -> tuple[Executor, ModelLabel]:
    """The executor of a run and the label of its model (for the output's metadata and ledger)."""
    out = options.output
    if client is not None:
        from fastsam_geo.cluster import DaskExecutor

        dask_ex = DaskExecutor(
            client,
            options,
            segmenter=segmenter,
            model=resolved,
            text_scorer=text_scorer,
            rasters=[p.raster for p in plans],
        )
        return dask_ex, dask_ex.label
    base = segmenter
    if base is None or out.cache_only:
        assert resolved is not None  # resolved by _plan_all when no segmenter is given, or cache-only
        raster = plans[0].raster if plans else ""
        base = make_segmenter(options.model, resolved, raster=raster, cache_only=out.cache_only)
    batch = options.model.batch_size or int(getattr(base, "batch_size", 1) or 1)

    def segmenter_for(plan: RunPlan) -> Segmenter:
        if out.cache_dir is None:
            return base  # type: ignore[return-value]
        return with_cache(base, plan.raster, out.cache_dir, cache_bands_key(plan))  # type: ignore[no-any-return]

    local = LocalExecutor(segmenter_for, batch_size=batch, prefetch=options.prefetch, text_scorer=text_scorer)
    return local, label_of(base)


__all__ = [
    "CacheOnly",
    "Executor",
    "Job",
    "LocalExecutor",
    "RasterJob",
    "drive",
    "extract_rasters",
    "inner",
    "make_segmenter",
    "with_cache",
]
