"""Several rasters' parts into one GeoPackage: a layer per raster, or one merged layer."""

from __future__ import annotations

import os
from pathlib import Path

from .common import _name


def _assemble(parts: list[tuple[str, Path]], output: Path, layout: str, overwrite: bool) -> None:
    """One GeoPackage from per-raster parts: a layer per raster, or one merged layer."""
    from fastsam_geo import vectorio
    from fastsam_geo.output import check_output

    check_output(output, overwrite)
    tmp = output.with_name(f".{output.name}.assemble.gpkg")
    if tmp.exists():
        tmp.unlink()
    try:
        if layout == "layers":
            used: set[str] = set()
            for raster, part in parts:
                name = Path(_name(raster)).stem
                while name in used:
                    name += "_"
                used.add(name)
                f = vectorio.read_features(part, layer="buildings")
                vectorio.write_gpkg(tmp, name, f.geometry, f.columns.columns, f.crs)
        else:
            _assemble_merged(parts, tmp)
        os.replace(tmp, output)
    finally:
        if tmp.exists():
            tmp.unlink()
    for _, part in parts:
        part.unlink(missing_ok=True)


def _assemble_merged(parts: list[tuple[str, Path]], tmp: Path) -> None:
    """All parts in one ``buildings`` layer (in the first part's CRS), with a ``raster`` column
    after ``id`` and ids renumbered 1..N."""
    import numpy as np
    import shapely
    from pyproj import Transformer

    from fastsam_geo import vectorio

    feats = [(raster, vectorio.read_features(part, layer="buildings")) for raster, part in parts]
    crs = next((f.crs for _, f in feats if f.crs is not None), None)
    geoms, columns = [], []
    for raster, f in feats:
        g = f.geometry
        if crs is not None and f.crs is not None and not f.crs.equals(crs):
            tr = Transformer.from_crs(f.crs, crs, always_xy=True)
            g = shapely.transform(g, lambda xy, tr=tr: np.column_stack(tr.transform(xy[:, 0], xy[:, 1])))
        cols = dict(f.columns.columns)
        first = list(cols)[:1]
        cols = {**{k: cols[k] for k in first}, "raster": [_name(raster)] * len(f), **cols}
        geoms.append(g)
        columns.append(cols)
    names = list(dict.fromkeys(k for c in columns for k in c))
    merged = {
        k: np.concatenate([vectorio._as_array(c.get(k, [None] * len(g))) for c, g in zip(columns, geoms, strict=True)])
        for k in names
    }
    n = sum(len(g) for g in geoms)
    merged["id"] = np.arange(1, n + 1, dtype=np.int64)
    all_geoms = np.concatenate(geoms) if geoms else np.empty(0, dtype=object)
    schema = {k: _merged_type(k, [c[k] for c in columns if k in c]) for k in names}
    vectorio.write_gpkg(tmp, "buildings", all_geoms, merged, crs, schema=schema)


def _merged_type(name: str, parts: list[object]) -> str:
    """The GeoPackage type of a merged column: the parts' own type when they agree."""
    from fastsam_geo import vectorio

    kinds = {vectorio.column_type(p) for p in parts if len(p)}  # type: ignore[arg-type]
    return kinds.pop() if len(kinds) == 1 else ("INTEGER" if name == "id" else "TEXT")
