"""``fastsam-geo sample``: a synthetic scene and its true footprints."""

from __future__ import annotations

from pathlib import Path

import click


@click.command(short_help="Write a synthetic scene (GeoTIFF + truth GeoPackage).")
@click.argument("output", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--size", default=2048, show_default=True, help="Width and height in pixels, 64 to 32768.")
@click.option("--seed", default=0, show_default=True, help="Random seed: the same seed gives the same scene.")
@click.option("--pixel-size", default=0.5, show_default=True, help="Ground resolution in metres.")
@click.option("--crs", default="EPSG:32633", show_default=True, help="Projected CRS of the scene.")
@click.option("--density", default=0.7, show_default=True, help="Building density, 0-1.")
@click.option("--overwrite", is_flag=True, help="Replace OUTPUT if it exists.")
def sample(output: Path, size: int, seed: int, pixel_size: float, crs: str, density: float, overwrite: bool) -> None:
    """Write a seeded synthetic aerial scene to OUTPUT and its building footprints to
    OUTPUT_buildings.gpkg (layer "buildings").

    \b
    Example:
      fastsam-geo sample sample_tiles/town.tif --size 1024 --seed 1
    """
    from fastsam_geo.output import guard_output
    from fastsam_geo.validate import check_size

    try:
        import geopandas  # noqa: F401  (the synthetic scene's truth is a GeoDataFrame)
    except ImportError:
        from fastsam_geo.errors import DependencyError
        from fastsam_geo.vectorio import VECTOR_EXTRA

        raise DependencyError(f"fastsam-geo sample needs geopandas: {VECTOR_EXTRA}") from None
    from fastsam_geo.synthetic import write_scene

    check_size(size)
    if not (pixel_size > 0 and pixel_size < 1e6):
        raise click.UsageError(f"--pixel-size {pixel_size}: use a ground resolution above 0 m, e.g. 0.5.")
    if not 0 <= density <= 1:
        raise click.UsageError(f"--density {density}: use a value from 0 to 1, e.g. 0.7.")
    from pyproj import CRS
    from pyproj.exceptions import CRSError

    try:
        if CRS.from_user_input(crs).is_geographic:
            raise click.UsageError(f"--crs {crs}: use a projected CRS in metres, e.g. EPSG:32633.")
    except CRSError:
        raise click.UsageError(f"--crs {crs!r}: not a CRS; give e.g. EPSG:32633.") from None
    if output.suffix.lower() not in (".tif", ".tiff"):
        raise click.UsageError(f"{output}: sample writes a GeoTIFF; give a .tif name.")
    truth = output.with_name(f"{output.stem}_buildings.gpkg")
    guard_output(output, (), overwrite)  # the raster and its truth: neither replaced without --overwrite
    guard_output(truth, (), overwrite)
    scene = write_scene(output, size, seed=seed, pixel_size=pixel_size, crs=crs, density=density)
    click.echo(f"{scene.raster}: {size} x {size} px, {len(scene.truth)} buildings", err=True)
