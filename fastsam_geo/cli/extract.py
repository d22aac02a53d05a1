"""``fastsam-geo extract``: building polygons from rasters."""

from __future__ import annotations

from typing import Any

import click

from .common import _expand_inputs
from .options import _OUTPUT_OPTION, _model_options, _split_output
from .runner import _run_extract


@click.command(short_help="Extract building polygons from rasters.")
@click.argument("paths", nargs=-1, required=True, metavar="INPUTS... OUTPUT")
@_OUTPUT_OPTION
@_model_options
@click.option(
    "--layout",
    type=click.Choice(["layers", "merged"]),
    default="layers",
    show_default=True,
    help="Several rasters: one layer per raster, or one merged layer with a 'raster' column.",
)
@click.option(
    "--resume", is_flag=True, help="Continue an interrupted run into OUTPUT; finished tiles are not computed again."
)
@click.option("--no-cache", is_flag=True, help="Do not keep the everything masks (no re-prompting later).")
@click.option(
    "--mosaic", is_flag=True, help="Treat INPUTS (same CRS, resolution, aligned grids) as one surface (a GDAL VRT)."
)
@click.option("--workers", type=int, default=None, help="Run tiles on a local Dask cluster of N worker processes.")
@click.option(
    "--scheduler",
    default=None,
    metavar="ADDRESS",
    help="Run tiles on the Dask cluster at ADDRESS, e.g. tcp://host:8786 (default: $DASK_SCHEDULER_ADDRESS).",
)
@click.pass_context
def extract(
    ctx: click.Context,
    paths: tuple[str, ...],
    output_opt: str | None,
    layout: str,
    resume: bool,
    no_cache: bool,
    mosaic: bool,
    workers: int | None,
    scheduler: str | None,
    **kw: Any,
) -> None:
    """Extract building polygons from INPUTS (GeoTIFF, COG or VRT files, folders, or quoted
    glob patterns) into OUTPUT (.gpkg, .geojson, .fgb). Several rasters go into one
    GeoPackage: a layer per raster (--layout layers) or one merged layer.

    Without prompts every object is segmented and a building filter keeps the
    building-like ones. Prompts narrow it down: --point/--box in map coordinates, a
    --prompts vector file, or --text scored with CLIP. Each tile's everything masks are
    cached, so `fastsam-geo prompt` can re-select later without inference.

    \b
    Examples:
      fastsam-geo extract ortho.tif buildings.gpkg
      fastsam-geo extract 'tiles/*.tif' city.gpkg --layout merged
      fastsam-geo extract ortho.tif b.gpkg --point 500120.5,4649880.0 --point 500200,4649800,0
      fastsam-geo extract ortho.tif b.gpkg --text building --text-threshold 0.22 --clip-weights clip.pt
      fastsam-geo extract big.tif b.gpkg --resume      # after a crash or Ctrl-C
      fastsam-geo extract 'sheets/*.tif' city.gpkg --mosaic --workers 4
      fastsam-geo extract 'sheets/*.tif' city.gpkg --mosaic --scheduler tcp://head:8786
    """
    if workers is not None:
        from fastsam_geo.validate import check_workers

        check_workers(workers)
        if scheduler:
            raise click.UsageError(
                "give --workers N (a local Dask cluster of N processes) or --scheduler ADDRESS (a running "
                "cluster), not both."
            )
    inputs, output = _split_output(paths, output_opt, "INPUTS")
    _run_extract(
        ctx,
        _expand_inputs(inputs),
        output,
        kw,
        layout=layout,
        resume=resume,
        cache_only=False,
        use_cache=not no_cache,
        workers=workers,
        scheduler=scheduler,
        mosaic=mosaic,
    )
