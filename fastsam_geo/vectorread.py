"""Vector reading without GDAL: :func:`list_layers` and :func:`read_features` read any GeoPackage
(any envelope, ISO or extended WKB) and GeoJSON natively; other formats (Shapefile, FlatGeobuf,
...) go through pyogrio when it is installed (``pip install "fastsam-geo[vector]"``).

:mod:`fastsam_geo.vectorio` re-exports every name of this module.
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import shapely
from pyproj import CRS

from fastsam_geo.vectorbase import (
    _OGR_TYPES,
    GEOJSON_SUFFIXES,
    VECTOR_EXTRA,
    Features,
    Table,
    VectorFormatError,
    _from_sql,
    _quote,
    geometries_from_blobs,
)


# ============================================================================ layers (also used to append)
def _layer_info(conn: sqlite3.Connection, layer: str) -> tuple[str, int, list[tuple[str, str]]]:
    """(geometry column, srs_id, [(attribute column, declared type)]) of a feature layer."""
    row = conn.execute(
        "SELECT column_name, srs_id FROM gpkg_geometry_columns WHERE lower(table_name) = lower(?)", (layer,)
    ).fetchone()
    if row is None:
        raise VectorFormatError(f"no feature layer {layer!r}")
    geom, srs_id = row
    cols = [(r[1], r[2] or "") for r in conn.execute(f"PRAGMA table_info({_quote(layer)})")]
    pk = {r[1] for r in conn.execute(f"PRAGMA table_info({_quote(layer)})") if r[5]}
    return geom, int(srs_id), [(n, d) for n, d in cols if n != geom and n not in pk]


# ============================================================================ reading
def _is_geojson(path: Path) -> bool:
    return path.suffix.lower() in GEOJSON_SUFFIXES


def _is_gpkg(path: Path) -> bool:
    if path.suffix.lower() == ".gpkg":
        return True
    try:
        with open(path, "rb") as f:
            return f.read(16) == b"SQLite format 3\x00"
    except OSError:
        return False


def _open_ro(path: Path) -> sqlite3.Connection:
    if not path.is_file():
        raise VectorFormatError(f"{path}: no such file")
    conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    try:
        conn.execute("SELECT count(*) FROM gpkg_contents").fetchone()
    except sqlite3.DatabaseError as exc:
        conn.close()
        raise VectorFormatError(f"{path}: not a GeoPackage ({exc})") from None
    return conn


def list_layers(path: str | os.PathLike[str]) -> list[tuple[str, str | None]]:
    """(name, geometry type) of each layer, as pyogrio names them ("Polygon", ...; None: a table)."""
    p = Path(path)
    if _is_geojson(p):
        feats = _read_geojson(p)  # GDAL's name: the "name" member, else the file's stem
        return [(feats.layer, feats.geometry_type)]
    if not _is_gpkg(p):
        pyogrio = _pyogrio(p)
        return [(str(name), None if kind is None else str(kind)) for name, kind in pyogrio.list_layers(p)]
    conn = _open_ro(p)
    try:
        rows = conn.execute(
            "SELECT c.table_name, g.geometry_type_name, g.z, g.m FROM gpkg_contents c "
            "LEFT JOIN gpkg_geometry_columns g ON lower(g.table_name) = lower(c.table_name) "
            "WHERE c.data_type IN ('features', 'attributes') "
            "ORDER BY c.rowid"
        ).fetchall()
    finally:
        conn.close()
    return [(name, _ogr_type(kind, z, m)) for name, kind, z, m in rows]


def choose_layer(path: str | os.PathLike[str], layer: str | None, option: str, prefer: str | None = None) -> str:
    """The layer to read from ``path``: ``layer`` when given (it must exist), else the only
    feature layer, else ``prefer`` when the file holds it (fastsam-geo's own ``buildings``).
    A file with several feature layers and no choice is refused with their names, so that no
    command silently reads the first one. ``option`` names the flag that picks a layer.

    Raises :class:`VectorFormatError`.
    """
    layers = list_layers(path)
    features = [name for name, kind in layers if kind is not None] or [name for name, _ in layers]
    if not features:
        raise VectorFormatError(f"{path}: the file has no layer")
    if layer is not None:
        names = {n.lower(): n for n, _ in layers}
        if layer.lower() not in names:
            raise VectorFormatError(f"{path}: no layer {layer!r} (layers: {', '.join(features)}); fix {option}")
        return names[layer.lower()]
    if len(features) == 1:
        return features[0]
    if prefer is not None and prefer in features:
        return prefer
    raise VectorFormatError(
        f"{path} holds {len(features)} layers ({', '.join(features)}); name the one to read with {option} NAME"
    )


def footprint_layer(path: str | os.PathLike[str], layer: str | None, option: str) -> str | None:
    """:func:`choose_layer` for footprints (``prefer="buildings"``: fastsam-geo's GeoPackages also
    hold tables), or None when ``path`` cannot be listed (not a vector file: its reader says why).

    Raises :class:`VectorFormatError` for a missing ``layer`` or several layers and no choice.
    """
    try:
        return choose_layer(path, layer, option, prefer="buildings")
    except VectorFormatError as exc:
        if "layer" in str(exc):
            raise
        return None
    except Exception:
        return None


def _ogr_type(kind: str | None, z: int | None, m: int | None) -> str | None:
    """GDAL's name of a GeoPackage geometry type (``z``/``m``: 0 no, 1 yes, 2 optional).

    >>> _ogr_type("POLYGON", 0, 0), _ogr_type("MULTIPOLYGON", 1, 0), _ogr_type(None, None, None)
    ('Polygon', 'MultiPolygon Z', None)
    """
    if kind is None:
        return None
    suffix = ("Z" if z == 1 else "") + ("M" if m == 1 else "")
    name = _OGR_TYPES.get(kind.upper(), "Unknown")
    return f"{name} {suffix}" if suffix else name


def read_features(path: str | os.PathLike[str], layer: str | None = None) -> Features:
    """Read a vector layer (the first when ``layer`` is None): GeoPackage and GeoJSON natively,
    other formats with pyogrio when it is installed. Raises :class:`VectorFormatError`."""
    p = Path(path)
    if _is_geojson(p):
        feats = _read_geojson(p)
        if layer is not None and layer != feats.layer:
            raise VectorFormatError(f"{p}: no layer {layer!r} (a GeoJSON file has one, {feats.layer!r})")
        return feats
    if _is_gpkg(p):
        return _read_gpkg(p, layer)
    return _read_pyogrio(p, layer)


def _gpkg_crs(conn: sqlite3.Connection, srs_id: int) -> CRS | None:
    cols = {r[1] for r in conn.execute("PRAGMA table_info(gpkg_spatial_ref_sys)")}
    wkt2 = ", definition_12_063" if "definition_12_063" in cols else ", NULL"
    row = conn.execute(
        f"SELECT organization, organization_coordsys_id, definition{wkt2} FROM gpkg_spatial_ref_sys "
        "WHERE srs_id = ?",
        (srs_id,),
    ).fetchone()
    if row is None or (srs_id in (-1, 0) and (row[2] or "").strip().lower() == "undefined"):
        return None
    org, code, definition, definition2 = row
    if str(org).upper() == "GDAL" and int(code) == 99999:  # GDAL's "Undefined SRS" of a layer without CRS
        return None
    if str(org).upper() == "EPSG":
        try:
            return CRS.from_epsg(int(code))
        except Exception:  # an EPSG code this PROJ database lacks: the stored WKT
            pass
    for text in (definition2, definition):
        if text and text.strip().lower() != "undefined":
            return CRS.from_user_input(text)
    return None


def _read_gpkg(path: Path, layer: str | None) -> Features:
    layers = list_layers(path)
    if not layers:
        raise VectorFormatError(f"{path}: the GeoPackage has no layer")
    names = {n.lower(): n for n, _ in layers}
    if layer is None:
        layer = layers[0][0]
    elif layer.lower() not in names:
        raise VectorFormatError(f"{path}: no layer {layer!r} (layers: {', '.join(n for n, _ in layers)})")
    layer = names[layer.lower()]
    conn = _open_ro(path)
    try:
        kinds = dict(layers)
        if kinds[layer] is None:  # an attribute table
            cols = [(r[1], r[2] or "") for r in conn.execute(f"PRAGMA table_info({_quote(layer)})") if not r[5]]
            geom_col, crs = None, None
        else:
            geom_col, srs_id, cols = _layer_info(conn, layer)
            crs = _gpkg_crs(conn, srs_id)
        select = ", ".join(_quote(c) for c in ([geom_col] if geom_col else []) + [c for c, _ in cols]) or "1"
        rows = conn.execute(f"SELECT {select} FROM {_quote(layer)} ORDER BY rowid").fetchall()
    finally:
        conn.close()
    offset = 1 if geom_col else 0
    geoms = geometries_from_blobs([r[0] for r in rows]) if geom_col else np.full(len(rows), None, dtype=object)
    table = Table({c: _from_sql([r[i + offset] for r in rows], d) for i, (c, d) in enumerate(cols)}, len(rows))
    return Features(geoms, table, crs, layer, kinds[layer])


def _geojson_crs(doc: Mapping[str, Any]) -> CRS:
    """The CRS of a GeoJSON document: a legacy ``crs`` member, else WGS 84 (RFC 7946).

    >>> _geojson_crs({"crs": {"type": "name", "properties": {"name": "urn:ogc:def:crs:EPSG::32633"}}}).to_epsg()
    32633
    >>> _geojson_crs({}).to_epsg()
    4326
    """
    member = doc.get("crs")
    if not isinstance(member, Mapping):
        return CRS.from_epsg(4326)
    props = member.get("properties") or {}
    if member.get("type") == "name" and props.get("name"):
        crs = CRS.from_user_input(props["name"])
        # GDAL reads CRS84 (WGS 84 in lon/lat order, RFC 7946's) as EPSG:4326, as do geopandas and QGIS
        return CRS.from_epsg(4326) if crs.to_authority() == ("OGC", "CRS84") else crs
    if member.get("type") == "EPSG" and props.get("code"):
        return CRS.from_epsg(int(props["code"]))
    raise VectorFormatError(f"unsupported GeoJSON crs member {json.dumps(member)[:120]}")


def _read_geojson(path: Path) -> Features:
    try:
        with open(path, encoding="utf-8") as f:
            doc = json.load(f)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise VectorFormatError(f"{path}: not a GeoJSON file ({exc})") from None
    if not isinstance(doc, Mapping) or "type" not in doc:
        raise VectorFormatError(f"{path}: not a GeoJSON object")
    if doc["type"] == "FeatureCollection":
        features = doc.get("features") or []
    elif doc["type"] == "Feature":
        features = [doc]
    else:
        features = [{"type": "Feature", "properties": {}, "geometry": doc}]
    geoms = np.empty(len(features), dtype=object)
    try:
        geoms[:] = [shapely.geometry.shape(f["geometry"]) if f.get("geometry") else None for f in features]
    except (KeyError, TypeError, ValueError, AttributeError, shapely.errors.ShapelyError) as exc:
        raise VectorFormatError(f"{path}: invalid GeoJSON geometry ({exc})") from None
    names: dict[str, None] = {}
    for feat in features:
        names.update(dict.fromkeys(feat.get("properties") or {}))
    cols = {k: _json_column([(f.get("properties") or {}).get(k) for f in features]) for k in names}
    kinds = {_OGR_TYPES.get(g.geom_type.upper(), "Unknown") for g in geoms if g is not None}
    kind = kinds.pop() if len(kinds) == 1 else "Unknown"
    return Features(geoms, Table(cols, len(features)), _geojson_crs(doc), str(doc.get("name") or path.stem), kind)


def _json_column(values: list[Any]) -> np.ndarray:
    """A typed column from JSON values (integers with nulls stay an object column, as from a GeoPackage).

    >>> _json_column([1, 2]).dtype, _json_column([1, 2.5, None]).tolist(), _json_column([True, None]).tolist()
    (dtype('int64'), [1.0, 2.5, nan], [True, None])
    """
    present = [v for v in values if v is not None]
    if present and all(isinstance(v, bool) for v in present):
        return np.array(values, bool) if len(present) == len(values) else _objects(values)
    if present and all(isinstance(v, int) and not isinstance(v, bool) for v in present):
        return np.array(values, np.int64) if len(present) == len(values) else _objects(values)
    if present and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in present):
        return np.array([np.nan if v is None else v for v in values], np.float64)
    return _objects(values)


def _objects(values: Iterable[Any]) -> np.ndarray:
    values = list(values)
    out = np.empty(len(values), dtype=object)
    out[:] = values
    return out


def _pyogrio(path: Path) -> Any:
    try:
        import pyogrio
    except ImportError:
        raise VectorFormatError(
            f"{path}: reading {path.suffix or 'this format'} needs GDAL: {VECTOR_EXTRA}, or convert it "
            "to a GeoPackage or GeoJSON"
        ) from None
    return pyogrio


def _read_pyogrio(path: Path, layer: str | None) -> Features:
    pyogrio = _pyogrio(path)
    from pyogrio.raw import read

    meta, _, wkb, fields = read(path, layer=layer)
    geoms = shapely.from_wkb(wkb) if wkb is not None else np.full(len(fields[0]) if fields else 0, None, object)
    crs = CRS.from_user_input(meta["crs"]) if meta.get("crs") else None
    cols = {str(n): np.asarray(v) for n, v in zip(meta["fields"], fields, strict=True)}
    name = layer if layer is not None else str(pyogrio.list_layers(path)[0][0])
    return Features(np.asarray(geoms, dtype=object), Table(cols, len(geoms)), crs, name, meta.get("geometry_type"))
