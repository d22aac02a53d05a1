"""``fastsam-geo info``: what a raster is and how it would be tiled and run."""

from __future__ import annotations

import os
from typing import Any

import click

from fastsam_geo.errors import FastSAMGeoError

from .common import _checked_overlap
from .options import _GSD_HELP, _Gsd


@click.command(short_help="Describe a raster: size, CRS, bands, tiles, device, weights.")
@click.argument("raster")
@click.option("--tile-size", default=1024, show_default=True)
@click.option("--overlap", default=None, type=int, help="Tile overlap in pixels (default: tile size / 8).")
@click.option("-w", "--weights", default=None, help="Weights to resolve (default lookup otherwise).")
@click.option("--gsd", type=_Gsd(), default=None, help=_GSD_HELP)
def info(raster: str, tile_size: int, overlap: int | None, weights: str | None, gsd: Any) -> None:
    """What RASTER is, its ground resolution, how it would be tiled at the model's working
    resolution, and which device and weights would be used.

    \b
    Example:
      fastsam-geo info ortho.tif --tile-size 1024
    """
    from fastsam_geo.modelmeta import conf_views, default_conf, default_gsd, read_model_meta, working_gsd
    from fastsam_geo.raster import RasterSource
    from fastsam_geo.tiling import TileGrid

    model_gsd, model_conf, w, w_error, views = None, None, None, "", ""
    try:
        from fastsam_geo.weights import resolve_weights

        w = resolve_weights(weights)
        meta = read_model_meta(w)
        model_gsd, model_conf, views = default_gsd(w, meta), default_conf(meta), conf_views(meta)
    except FastSAMGeoError as exc:
        if weights is not None:  # the file asked for is not a model: say so, never "none stored"
            raise
        w, w_error = None, str(exc)
    overlap = _checked_overlap(tile_size, overlap)
    with RasterSource(raster) as src:
        n = src.info
        src.set_gsd(working_gsd(gsd, model_gsd))
        i = src.info
        grid = TileGrid(i.width, i.height, tile_size, overlap, i.transform)
        stretch = (
            "none (8-bit)" if src.stretch is None else f"global percentiles lo={src.stretch.lo} hi={src.stretch.hi}"
        )
        radiometry = getattr(src, "radiometry", "")
    click.echo(f"raster:   {i.path}")
    click.echo(f"size:     {n.width} x {n.height} px, {n.count} band(s) {n.dtype}, RGB from bands {n.bands}")
    click.echo(
        f"crs:      {n.crs.to_string()}  pixel {n.res[0]:g} x {n.res[1]:g}  nodata {n.nodata}  overviews {n.overviews}"
    )
    click.echo(f"ground:   {n.native_gsd_m:.3g} m per pixel (native)")
    click.echo(f"stretch:  {stretch}" + (f" ({radiometry})" if radiometry else ""))
    origin = "--gsd" if gsd is not None else ("the model's" if model_gsd else "none stored in the model")
    working = f"{i.gsd_m:.3g} m per pixel" + (" (resampled)" if i.resampled else " (native, not resampled)")
    click.echo(f"working:  {working}; {origin}" + (f" {model_gsd:g} m" if model_gsd and gsd is None else ""))
    click.echo(f"grid:     {i.width} x {i.height} px, pixel {i.res[0]:.6g} x {i.res[1]:.6g} map units")
    click.echo(f"tiles:    {len(grid)} ({grid.shape[0]} x {grid.shape[1]}) of {tile_size} px, overlap {overlap}")
    click.echo(f"weights:  {w}" if w is not None else f"weights:  not found ({w_error})")
    if w is not None:
        click.echo(f"engine:   {_engine_line(w, tile_size)}")
    if model_conf is not None:
        click.echo(f"conf:     {model_conf:g} (the model's confidence threshold{views}; --conf overrides it)")
    try:
        import torch

        dev = "cuda" if torch.cuda.is_available() else ("mps" if torch.backends.mps.is_available() else "cpu")
        click.echo(f"device:   {dev} (torch {torch.__version__}, {torch.get_num_threads()} threads)")
    except ImportError:
        click.echo('device:   torch not installed (.pt weights need: pip install "fastsam-geo[torch]")')
    try:
        import onnxruntime

        providers = ", ".join(onnxruntime.get_available_providers())
        click.echo(f"onnx:     onnxruntime {onnxruntime.__version__} ({providers})")
    except ImportError:
        click.echo("onnx:     onnxruntime not installed (.onnx weights need: pip install onnxruntime)")


def _engine_line(weights: object, tile_size: int) -> str:
    """Which engine ``extract --engine auto`` would run the weights on, and the file it loads."""
    from fastsam_geo.segmenters import resolve_model

    try:
        model = resolve_model(str(weights), "auto", tile_size)
    except FastSAMGeoError as exc:
        return f"none ({exc})"
    name = os.path.basename(model.path)
    twin = model.engine == "onnx" and not str(weights).lower().endswith(".onnx")
    how = f"{name}, the ONNX export beside the .pt; --engine torch runs the .pt" if twin else name
    return f"{'ONNX Runtime' if model.engine == 'onnx' else 'torch'} ({how})"
