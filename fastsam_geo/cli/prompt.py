"""``fastsam-geo prompt``: re-select buildings with new prompts from the mask cache."""

from __future__ import annotations

from typing import Any

import click

from .common import _expand_inputs
from .options import _OUTPUT_OPTION, _model_options, _split_output
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
    _run_extract(
        ctx, _expand_inputs(rasters), output, kw, layout="layers", resume=False, cache_only=True, use_cache=True
    )
