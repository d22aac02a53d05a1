"""``fastsam-geo calibrate``: a model's confidence threshold, chosen on labelled rasters."""

from __future__ import annotations

from typing import Any

import click

from .common import _checked_overlap
from .options import _GSD_HELP, _LABELS_LAYER_HELP, _Gsd, _tta_option


@click.command(short_help="Choose a model's confidence threshold on labelled rasters.")
@click.argument("weights", type=click.Path(exists=True, dir_okay=False))
@click.argument("rasters", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False))
@click.option("--labels", required=True, multiple=True, help="Footprint vectors (one file, or one per raster).")
@click.option("--labels-layer", default=None, help=_LABELS_LAYER_HELP)
@click.option("--gsd", type=_Gsd(), default=None, help=_GSD_HELP)
@click.option("--tile-size", default=1024, show_default=True, help="Tile size in pixels, as you will extract.")
@click.option("--overlap", default=None, type=int, help="Tile overlap in pixels (default: tile size / 8).")
@click.option("--min-area", default=8.0, show_default=True, help="Building filter minimum in m², as you will extract.")
@_tta_option("As you will extract. ")
@click.option("--device", default="cpu", show_default=True, help="cpu, cuda, cuda:0, mps.")
@click.option("--write", is_flag=True, help="Store the chosen threshold in WEIGHTS (.pt or .onnx), for `extract`.")
def calibrate(
    weights: str,
    rasters: tuple[str, ...],
    labels: tuple[str, ...],
    labels_layer: str | None,
    gsd: Any,
    tile_size: int,
    overlap: int | None,
    min_area: float,
    tta: int,
    device: str,
    write: bool,
) -> None:
    """Run `extract` (CLI defaults) on RASTERS at each confidence threshold from 0.08 to 0.4 and
    score each result against --labels (object F1 at IoU 0.5, pixel F1). The threshold with the
    best object F1 averaged over the rasters that have truth buildings (each counts once, and
    each threshold is averaged with its neighbours) is the model's; --write stores it in
    WEIGHTS, so that `extract` without --conf uses it. `train` ends with the same step on its
    rasters. Pass the --gsd, --tile-size, --overlap, --min-area and --tta you will extract
    with: the best threshold depends on them. The model runs --tta times a tile, once for all
    thresholds.

    \b
    Example:
      fastsam-geo calibrate weights/mine.pt block_a.tif block_b.tif --labels osm.gpkg --write
    """
    from fastsam_geo.calibrate import calibrate_conf, check_store, store_conf
    from fastsam_geo.plan import BuildingFilter
    from fastsam_geo.validate import check_areas

    overlap = _checked_overlap(tile_size, overlap)
    bfilter = BuildingFilter(min_area_m2=min_area)
    check_areas(bfilter.min_area_m2, bfilter.max_area_m2)
    if len(labels) not in (1, len(rasters)):
        raise click.BadParameter(f"give one --labels file or one per raster ({len(rasters)})", param_hint="--labels")
    if write:
        check_store(weights, [*rasters, *labels])
    lab = list(labels) if len(labels) > 1 else labels[0]
    cal = calibrate_conf(
        weights,
        list(rasters),
        lab,
        gsd=gsd,
        device=device,
        labels_layer=labels_layer,
        tta=tta,
        tile_size=tile_size,
        overlap=overlap,
        building_filter=bfilter,
    )
    click.echo(cal.table())
    if cal.conf is None:
        raise click.ClickException(
            "no threshold finds any truth building on these rasters (check that --labels overlap them): "
            "nothing to calibrate on."
        )
    views = f"--tta {tta}" if tta > 1 else "--tta 1 (one view)"
    click.echo(f"best threshold: {cal.conf:.2f} for {views}")
    click.echo(cal.source_table())
    if write:
        written = store_conf(weights, cal.conf, cal.tta)
        click.echo(f"stored in {' and its ONNX twin '.join(str(p) for p in written)}")
