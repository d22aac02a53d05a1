"""Several rasters as one run's inputs: read once each, written where a GeoPackage can hold them.

Without ``--mosaic`` every input raster is extracted on its own and the parts are assembled
(``--layout layers`` or ``merged``). So the same raster given twice (``s.tif ./s.tif``), or a VRT
beside the sheets it holds, gave every building twice with exit 0; rasters that overlap give
theirs once per raster (said in a warning: ``--mosaic`` merges across sheets); and the assembly
writes a GeoPackage, which a ``.geojson`` or ``.fgb`` name then held.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

import click

log = logging.getLogger("fastsam_geo")


def same_file_key(item: str) -> str:
    """What makes two spellings of a local file one input (its resolved path); URLs as given.

    >>> same_file_key("a/../b.tif") == same_file_key("b.tif")
    True
    >>> same_file_key("https://host/x.tif")
    'https://host/x.tif'
    """
    if "://" in item or item.startswith("/vsi"):
        return item
    return os.path.realpath(item)


def read_once(inputs: Sequence[str]) -> list[str]:
    """``inputs`` without a second spelling of one file (kept: the first), with a warning.

    >>> read_once(["b.tif", "./b.tif", "c.tif"])
    ['b.tif', 'c.tif']
    """
    seen: dict[str, str] = {}
    for item in inputs:
        key = same_file_key(item)
        if key in seen:
            log.warning("Warning: %s is %s, given before: read once.", item, seen[key])
            continue
        seen[key] = item
    return list(seen.values())


def check_input_set(inputs: Sequence[str], output: Path, *, mosaic: bool, layout: str) -> None:
    """Refuse, before any tile runs, a VRT given beside one of its own sheets, and several rasters
    (without ``--mosaic``) written to anything but a GeoPackage; warn when ``--layout merged``
    rasters overlap."""
    from fastsam_geo.output import driver_for
    from fastsam_geo.raster import vrt_sources

    keys = {same_file_key(r): r for r in inputs}
    for raster in inputs:
        inside = [keys[k] for k in (same_file_key(s) for s in vrt_sources(raster)) if k in keys]
        if inside:
            raise click.UsageError(
                f"{raster} holds {inside[0]}, also an input: its buildings would come out twice; give the VRT "
                "or its sheets, not both."
            )
    if len(inputs) < 2 or mosaic:
        return
    if driver_for(output) != "GPKG":
        raise click.UsageError(
            f"{output}: several rasters are written as one GeoPackage (a layer per raster, or --layout merged); "
            "give a .gpkg output, or --mosaic to read the sheets as one raster."
        )
    if layout == "merged":
        pair = overlapping_pair(inputs)
        if pair:
            log.warning(
                "Warning: %s and %s overlap: --layout merged keeps the buildings there once per raster; "
                "--mosaic reads sheets as one raster and merges them across seams.",
                *pair,
            )


def overlapping_pair(rasters: Sequence[str]) -> tuple[str, str] | None:
    """Two of ``rasters`` whose extents overlap (more than touch), compared in the first one's
    CRS; None when none do or an extent cannot be read (extract then says why)."""
    import rasterio
    import shapely
    from rasterio.warp import transform_bounds

    boxes = []
    try:
        crs = None
        for raster in rasters:
            with rasterio.open(raster) as ds:
                crs = crs or ds.crs
                if ds.crs is None or crs is None:
                    return None
                boxes.append(shapely.box(*transform_bounds(ds.crs, crs, *ds.bounds)))
    except Exception:
        return None
    tree = shapely.STRtree(boxes)
    for i, j in zip(*tree.query(boxes, predicate="overlaps"), strict=True):
        if i < j and boxes[i].intersection(boxes[j]).area > 0:
            return rasters[i], rasters[j]
    for i, j in zip(*tree.query(boxes, predicate="contains"), strict=True):
        if i != j:
            return rasters[i], rasters[j]
    return None
