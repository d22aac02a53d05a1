"""``fastsam-geo prompt``: re-select buildings with new prompts from the mask cache."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from .common import _expand_inputs
from .options import _OUTPUT_OPTION, _default_cache_dir, _model_options, _split_output
from .runner import _run_extract


@click.command(short_help="Re-select buildings with new prompts from the mask cache (no inference).")
@click.argument("paths", nargs=-1, required=True, metavar="RASTER OUTPUT")
@_OUTPUT_OPTION
@_model_options
@click.pass_context
def prompt(ctx: click.Context, paths: tuple[str, ...], output_opt: str | None, **kw: Any) -> None:
    """Apply new prompts to RASTER using the everything masks cached by an earlier
    `fastsam-geo extract` (same weights, --conf, --iou, --bands, --gsd): no model runs, so a new
    click or a new text costs milliseconds per tile. Tiles not in the cache are an error.

    \b
    Examples:
      fastsam-geo extract ortho.tif all.gpkg                     # segments and caches
      fastsam-geo prompt ortho.tif one.gpkg --point 500120.5,4649880.0
      fastsam-geo prompt ortho.tif boxed.gpkg --prompts boxes.gpkg
    """
    if not (kw["points"] or kw["boxes"] or kw["prompt_file"] or kw["text"]):
        raise click.UsageError("give a prompt: --point, --box, --prompts or --text.")
    rasters, output = _split_output(paths, output_opt, "RASTER")
    if len(rasters) != 1:
        raise click.UsageError(f"prompt takes one RASTER, got {len(rasters)}: {' '.join(rasters)}.")
    _check_cache_exists(kw["cache_dir"], rasters[0])
    _run_extract(
        ctx, _expand_inputs(rasters), output, kw, layout="layers", resume=False, cache_only=True, use_cache=True
    )


def _check_cache_exists(cache_dir: Path | None, raster: str) -> None:
    """``prompt`` only reads the mask cache: a folder that does not exist is an error, and it is
    not created (it would stay behind, empty).

    >>> _check_cache_exists(Path("no/such/cache"), "a.tif")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    fastsam_geo.errors.OptionError: --cache-dir no/such/cache: no such folder, so the tiles of a.tif are not in \
the mask cache; run `fastsam-geo extract a.tif OUTPUT --cache-dir no/such/cache` first, or give the folder it wrote to.
    """
    from fastsam_geo.errors import OptionError

    folder = cache_dir or _default_cache_dir()
    if folder.is_dir():
        return
    missing = f"so the tiles of {raster} are not in the mask cache"
    if cache_dir is None:
        raise OptionError(
            f"the default --cache-dir {folder} does not exist, {missing}; run `fastsam-geo extract {raster} "
            "OUTPUT` first, or give the cache it wrote to with --cache-dir."
        )
    raise OptionError(
        f"--cache-dir {folder}: no such folder, {missing}; run `fastsam-geo extract {raster} OUTPUT "
        f"--cache-dir {folder}` first, or give the folder it wrote to."
    )
