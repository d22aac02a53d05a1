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
    _check_scene(seed, pixel_size, density, crs)
    if output.suffix.lower() not in (".tif", ".tiff"):
        raise click.UsageError(f"{output}: sample writes a GeoTIFF; give a .tif name.")
    truth = output.with_name(f"{output.stem}_buildings.gpkg")
    guard_output(output, (), overwrite)  # the raster and its truth: neither replaced without --overwrite
    guard_output(truth, (), overwrite)
    scene = write_scene(output, size, seed=seed, pixel_size=pixel_size, crs=crs, density=density)
    click.echo(f"{scene.raster}: {size} x {size} px, {len(scene.truth)} buildings", err=True)


MAX_PIXEL_SIZE = 1e6  # metres; exclusive


def _check_scene(seed: int, pixel_size: float, density: float, crs: str) -> None:
    """``sample``'s seed, ground resolution, density and CRS; one-line
    :class:`~fastsam_geo.errors.OptionError` (exit 1) on the first bad one.

    >>> _check_scene(0, 0.5, 0.7, "EPSG:32633")
    >>> _check_scene(-1, 0.5, 0.7, "EPSG:32633")
    Traceback (most recent call last):
    ...
    fastsam_geo.errors.OptionError: --seed -1: use a whole number of 0 or more, e.g. --seed 7.
    >>> _check_scene(0, 1e7, 0.7, "EPSG:32633")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    fastsam_geo.errors.OptionError: --pixel-size 10000000.0: use a ground resolution above 0 and below 1000000 m...
    """
    from fastsam_geo.errors import OptionError

    if seed < 0:
        raise OptionError(f"--seed {seed}: use a whole number of 0 or more, e.g. --seed 7.")
    if not 0 < pixel_size < MAX_PIXEL_SIZE:  # NaN fails too
        raise OptionError(
            f"--pixel-size {pixel_size}: use a ground resolution above 0 and below {MAX_PIXEL_SIZE:.0f} m "
            "(metres per pixel), e.g. 0.5."
        )
    if not 0 <= density <= 1:
        raise OptionError(f"--density {density}: use a value from 0 to 1, e.g. 0.7.")
    _check_metric_crs(crs)


def _check_metric_crs(crs: str) -> None:
    """A projected CRS whose easting and northing are in metres (``--pixel-size`` is in metres).

    >>> _check_metric_crs("EPSG:3857"), _check_metric_crs("EPSG:3035"), _check_metric_crs("EPSG:32633+5773")
    (None, None, None)
    >>> _check_metric_crs("EPSG:2263")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    fastsam_geo.errors.OptionError: --crs EPSG:2263: its unit is the US survey foot, ...local UTM zone, e.g. EPSG:32618.
    """
    from pyproj import CRS
    from pyproj.exceptions import CRSError

    from fastsam_geo.errors import OptionError

    try:
        parsed = CRS.from_user_input(crs)
    except CRSError:
        raise OptionError(f"--crs {crs!r}: not a CRS; give e.g. EPSG:32633.") from None
    if not parsed.is_projected:
        raise OptionError(f"--crs {crs}: use a projected CRS in metres, e.g. EPSG:32633.")
    units = {(a.unit_name, a.unit_conversion_factor) for a in parsed.axis_info if a.direction not in ("up", "down")}
    unit = next((name for name, factor in units if abs(factor - 1.0) > 1e-9), None)
    if unit is not None:
        raise OptionError(
            f"--crs {crs}: its unit is the {unit}, not the metre, and --pixel-size is in metres; "
            f"use a metric CRS such as the local UTM zone, e.g. {_utm_near(parsed)}."
        )


def _utm_near(crs: object) -> str:
    """The WGS 84 UTM zone at the middle of ``crs``'s area of use (EPSG:32633 when it has none).

    >>> from pyproj import CRS
    >>> _utm_near(CRS("EPSG:2263")), _utm_near(CRS("+proj=utm +zone=10 +units=us-ft"))
    ('EPSG:32618', 'EPSG:32633')
    """
    area = getattr(crs, "area_of_use", None)
    if area is None:
        return "EPSG:32633"
    lon, lat = (area.west + area.east) / 2, (area.south + area.north) / 2
    zone = min(60, max(1, int((lon + 180) // 6) + 1))
    return f"EPSG:{(32600 if lat >= 0 else 32700) + zone}"
