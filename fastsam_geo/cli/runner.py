"""A run of ``extract`` or ``prompt``: option checks, the output's lock, Ctrl-C, progress bars,
Dask, one part per raster and the report of each."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import click

from fastsam_geo.errors import FastSAMGeoError

from .assemble import _assemble
from .common import _name, log
from .options import _build_prompts, _check_options, _default_cache_dir, _floats

#: Set by Ctrl-C (SIGINT) during an extract run (:func:`_sigint_latch`).
_INTERRUPTED = threading.Event()


@contextlib.contextmanager
def _sigint_latch() -> Iterator[None]:
    """Ctrl-C raises KeyboardInterrupt as usual *and* is remembered: a KeyboardInterrupt raised while
    Python runs a finalizer (``__del__``, a weakref callback) is printed and dropped, and the run
    would then finish with exit 0; the progress callback raises it again after the next tile."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    _INTERRUPTED.clear()

    def handler(signum: int, frame: Any) -> None:
        _INTERRUPTED.set()
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


@contextlib.contextmanager
def _progress_bar(label: str, enabled: bool) -> Iterator[Callable[[int, int], None]]:
    """A tqdm bar on stderr (tiles done, rate, time left) fed by ``progress(done, total)``;
    silent with -q and when stderr is not a terminal (logs, pipes, CI)."""
    try:
        from tqdm import tqdm
    except ImportError:  # a dependency of the package; an odd install without it just shows no bar
        enabled = False
    bar = None

    def progress(done: int, total: int) -> None:
        nonlocal bar
        if _INTERRUPTED.is_set():  # a Ctrl-C that a finalizer swallowed: the tile is booked, stop now
            raise KeyboardInterrupt
        if not enabled:
            return
        if bar is None:
            bar = tqdm(
                total=total,
                desc=label,
                unit="tile",
                file=sys.stderr,
                disable=None,  # off when stderr is not a TTY
                dynamic_ncols=True,
                leave=True,
            )
        bar.total = total
        bar.update(done - bar.n)

    try:
        yield progress
    finally:
        if bar is not None:
            bar.close()


def _guard_inputs(inputs: list[str], output: Path, kw: dict[str, Any]) -> None:
    """Refuse an output that is one of the inputs, whatever the flags: the rasters (and a
    VRT's sources), the prompts file, the weights, the CLIP weights."""
    from fastsam_geo.output import refuse_input_as_output

    sources: list[object] = [*inputs, kw["prompt_file"], kw["weights"], kw["clip_weights"]]
    from fastsam_geo.raster import vrt_sources

    for raster in inputs:
        sources.extend(vrt_sources(raster))
    refuse_input_as_output(output, sources)


def _usable_cache_dir(cache_dir: Path | None, cache_only: bool) -> Path | None:
    """The mask cache folder, or None (with one warning) when it cannot be written: an
    optional cache never fails a run. ``prompt`` needs it, so there it is an error."""
    if cache_dir is None:
        return None
    from fastsam_geo.cache import probe_cache_dir

    problem = probe_cache_dir(cache_dir)
    if problem is None:
        return cache_dir
    if cache_only:
        raise click.UsageError(f"--cache-dir {cache_dir}: {problem}; `prompt` reads the masks from there.")
    log.warning("Warning: mask cache %s cannot be used (%s); going on without it.", cache_dir, problem)
    return None


def _run_extract(
    ctx: click.Context,
    inputs: list[str],
    output: Path,
    kw: dict[str, Any],
    *,
    layout: str,
    resume: bool,
    cache_only: bool,
    use_cache: bool,
    workers: int | None = None,
    scheduler: str | None = None,
    mosaic: bool = False,
) -> None:
    from fastsam_geo.locks import output_lock
    from fastsam_geo.output import check_output

    from .inputset import check_input_set

    _check_options(kw)
    _guard_inputs(inputs, output, kw)
    check_input_set(inputs, output, mosaic=mosaic, layout=layout)
    check_output(output, overwrite=True)  # a folder, a missing or read-only folder, an unknown extension
    if not resume:
        check_output(output, kw["overwrite"])
    with output_lock(output), _sigint_latch():
        _run_locked(ctx, inputs, output, kw, layout, resume, cache_only, use_cache, workers, scheduler, mosaic)


def _run_locked(
    ctx: click.Context,
    inputs: list[str],
    output: Path,
    kw: dict[str, Any],
    layout: str,
    resume: bool,
    cache_only: bool,
    use_cache: bool,
    workers: int | None,
    scheduler: str | None,
    mosaic: bool,
) -> None:
    """_run_extract while this process holds the output's lock."""
    quiet = ctx.obj.get("quiet", False)
    options, scorer = _extract_options(kw, cache_only=cache_only, use_cache=use_cache)
    client, cluster = _connect(workers, scheduler, quiet, ctx.obj.get("verbose", 0) > 0)
    parts: list[tuple[str, Path]] = []
    vrt = output.with_name(f".{output.name}.mosaic.vrt")
    try:
        if mosaic:
            from fastsam_geo.mosaic import write_vrt

            sheets = write_vrt(inputs, vrt)
            if not quiet:
                click.echo(f"mosaic of {len(sheets)} sheets: {vrt}", err=True)
            jobs = [(vrt, output, sheets)]
        else:
            jobs = [(r, output, ()) for r in inputs]
        summaries = _extract_all(jobs, output, options, kw, scorer, client, parts, resume=resume, quiet=quiet)
        if len(jobs) > 1:
            _assemble(parts, output, layout, kw["overwrite"] or resume)
    except KeyboardInterrupt:
        click.echo(
            f"\nInterrupted. Finished tiles are kept: run the same command with --resume to continue into {output}.",
            err=True,
        )
        sys.exit(130)
    except FastSAMGeoError:
        if len(parts) > 1:  # a bad input: nothing to resume, no .part.gpkg left beside the output
            for _, part in parts:
                part.unlink(missing_ok=True)
        raise
    finally:
        vrt.unlink(missing_ok=True)
        if client is not None:
            client.close()
        if cluster is not None:
            cluster.close()
    if len(jobs) > 1 and not quiet:
        click.echo(f"{output}: {len(parts)} rasters, layout '{layout}'", err=True)
    if kw["as_json"]:
        click.echo(json.dumps([s.as_dict() for s in summaries] if len(jobs) > 1 else summaries[0].as_dict(), indent=2))


def _extract_options(kw: dict[str, Any], *, cache_only: bool, use_cache: bool) -> tuple[Any, Any]:
    """The run's ExtractOptions from the command line, and the CLIP scorer (loaded now) for --text."""
    from fastsam_geo.pipeline import BuildingFilter, build_options

    prompts = _build_prompts(
        kw["points"],
        kw["boxes"],
        kw["prompt_crs"],
        kw["prompt_file"],
        kw["text"],
        kw["text_threshold"],
        kw["top_k"],
        kw["prompts_layer"],
    )
    scorer = None
    if prompts is not None and prompts.text:
        from fastsam_geo.textprompt import ClipScorer, _import_open_clip

        _import_open_clip()  # without the torch extra: one line, before anything runs
        device = kw["device"]
        scorer = ClipScorer(kw["clip_model"], kw["clip_weights"], device="cpu" if device == "auto" else device)
        scorer.load()  # fail now, not after the first tiles' inference
    bands = [int(b) for b in _floats(kw["bands"], (1, 3), "--bands")] if kw["bands"] else None
    cache_dir = (kw["cache_dir"] or _default_cache_dir()) if (use_cache or cache_only) else None
    options = build_options(
        weights=kw["weights"],
        prompts=prompts,  # type: ignore[arg-type]
        tile_size=kw["tile_size"],
        overlap=kw["overlap"],
        bands=bands,
        stretch=kw["stretch"],
        gsd=kw["gsd"],
        device=kw["device"],
        batch_size=kw["batch_size"],
        conf=kw["conf"],
        iou=kw["iou"],
        building_filter=BuildingFilter(
            min_area_m2=kw["min_area"], max_area_m2=kw["max_area"], enabled=not kw["no_filter"]
        ),
        simplify_px=kw["simplify"],
        regularize=kw["regularize"],
        cache_dir=_usable_cache_dir(None if cache_dir is None else Path(cache_dir), cache_only),
        cache_only=cache_only,
        assign_crs=kw["assign_crs"],
        engine=kw["engine"],
        tta=kw["tta"],
        refine=kw["refine"],
    )
    return options, scorer


def _connect(workers: int | None, scheduler: str | None, quiet: bool, verbose: bool) -> tuple[Any, Any]:
    """A Dask client for --workers / --scheduler / $DASK_SCHEDULER_ADDRESS, else (None, None);
    Dask's own logs only with -v."""
    scheduler = scheduler or (None if workers else os.environ.get("DASK_SCHEDULER_ADDRESS"))
    if not workers and not scheduler:
        return None, None
    from fastsam_geo.cluster import connect

    client, cluster = connect(workers=workers, scheduler=scheduler, verbose=verbose)
    if not quiet:
        n = len(client.scheduler_info().get("workers", {}))
        click.echo(f"Dask: {n} workers at {client.scheduler.address}; dashboard {client.dashboard_link}", err=True)
    return client, cluster


def _part_path(output: Path, raster: str, k: int) -> Path:
    """Where raster ``k`` of a multi-raster run is written before assembly (numbered: two
    rasters of the same name in different folders must not share a part).

    >>> _part_path(Path("out/city.gpkg"), "x/a.tif", 1).name
    '.city.gpkg.1.a.part.gpkg'
    """
    return output.with_name(f".{output.name}.{k}.{Path(_name(raster)).stem}.part.gpkg")


def _extract_all(
    jobs: list[tuple[Any, Path, tuple[Any, ...]]],
    output: Path,
    options: Any,
    kw: dict[str, Any],
    scorer: Any,
    client: Any,
    parts: list[tuple[str, Path]],
    *,
    resume: bool,
    quiet: bool,
) -> list[Any]:
    """Run every raster (one call on a Dask cluster: their tiles spread together); returns the
    summaries and fills ``parts`` with (raster, part) pairs. Several rasters go to hidden parts,
    assembled later."""
    from dataclasses import replace

    from fastsam_geo.run import RasterJob, extract_rasters

    single = len(jobs) == 1
    todo: list[RasterJob] = []
    summaries = []
    with contextlib.ExitStack() as bars:
        for k, (raster, _, sheets) in enumerate(jobs):
            target = output if single else _part_path(output, str(raster), k)
            parts.append((str(raster), target))
            if not single and resume and target.exists():
                continue  # finished before the interruption
            overwrite = kw["overwrite"] or (not single and not resume)
            out = replace(options.output, overwrite=overwrite, resume=resume and _has_ledger(target))
            progress = bars.enter_context(_progress_bar(_name(str(raster)), not quiet))
            todo.append(RasterJob(raster, target, progress, sheets, replace(options, output=out)))
        groups = [todo] if client is not None else [[j] for j in todo]
        for group in groups:
            results = extract_rasters(group, options, text_scorer=scorer, client=client)
            for job, summary in zip(group, results, strict=True):
                summaries.append(summary)
                if not quiet:
                    _echo_summary(job.raster, summary)
    return summaries


def _echo_summary(raster: object, summary: Any) -> None:
    click.echo(
        f"{raster}: {summary.buildings} buildings ({summary.seam_merged} joined across seams) from "
        f"{summary.tiles_processed} tiles in {summary.seconds:.1f} s"
        + (f" ({summary.tiles_resumed} resumed)" if summary.tiles_resumed else "")
        + (f"; {summary.tiles_failed} tiles failed: {summary.failures[0]}" if summary.tiles_failed else ""),
        err=True,
    )


def _has_ledger(target: Path) -> bool:
    from fastsam_geo.ledger import ledger_path

    return ledger_path(target).exists()
