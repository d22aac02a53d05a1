"""Vector I/O of the light install: GeoPackage 1.2 and GeoJSON without GDAL, pandas or geopandas.

Only the standard library (``sqlite3``, ``json``, ``struct``), numpy, shapely 2 and pyproj:

- :func:`create_layer`, :func:`append_features` and :func:`write_gpkg` write a GeoPackage 1.2
  feature layer in plain sqlite3, as GDAL writes it (the same core tables, column types, R-tree
  index and triggers, ``gpkg_ogr_contents``), so GDAL, QGIS and pyogrio read it without a
  warning and can append to it.
- :func:`write_geojson` writes a FeatureCollection (with the legacy ``crs`` member that GDAL
  writes, so a projected layer reads back in its CRS).
- :func:`list_layers` and :func:`read_features` (in :mod:`fastsam_geo.vectorread`) read any
  GeoPackage (any envelope, ISO or extended WKB) and GeoJSON natively; other formats
  (Shapefile, FlatGeobuf, ...) go through pyogrio when it is installed
  (``pip install "fastsam-geo[vector]"``).

The column tables, format constants and geometry blobs shared by reading and writing live in
:mod:`fastsam_geo.vectorbase`. This module is the one to import: it re-exports every name of
both, so ``from fastsam_geo.vectorio import read_features, Features`` keeps working.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
from collections.abc import Iterator, Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import shapely
from pyproj import CRS

# Reading and the shared vocabulary have modules of their own; every name they took from here stays
# importable from here (F401: re-exported, not all used in this module).
from fastsam_geo.vectorbase import (  # noqa: F401
    _ENVELOPE_BYTES,
    _OGR_TYPES,
    APPLICATION_ID,
    GEOJSON_SUFFIXES,
    USER_VERSION,
    VECTOR_EXTRA,
    Features,
    Table,
    VectorFormatError,
    _as_array,
    _blob_wkb,
    _from_sql,
    _plain_number,
    _py,
    _quote,
    _sql_values,
    column_type,
    geometries_from_blobs,
    gpkg_blobs,
    sql_type,
)
from fastsam_geo.vectorread import (  # noqa: F401
    _geojson_crs,
    _gpkg_crs,
    _is_geojson,
    _is_gpkg,
    _json_column,
    _layer_info,
    _objects,
    _ogr_type,
    _open_ro,
    _pyogrio,
    _read_geojson,
    _read_gpkg,
    _read_pyogrio,
    choose_layer,
    footprint_layer,
    list_layers,
    read_features,
)


# ============================================================================ geometry blobs in SQL
def _st_funcs(conn: sqlite3.Connection) -> None:
    """Register ST_IsEmpty and ST_MinX..ST_MaxY (what GDAL provides for the R-tree triggers)."""

    def envelope(blob: bytes | None) -> tuple[float, float, float, float] | None:
        if blob is None or _blob_empty(blob):
            return None
        g = shapely.from_wkb(_blob_wkb(blob))
        x0, y0, x1, y1 = shapely.bounds(g).tolist()
        return x0, x1, y0, y1

    conn.create_function("ST_IsEmpty", 1, lambda b: None if b is None else int(_blob_empty(b)), deterministic=True)
    for i, name in enumerate(("ST_MinX", "ST_MaxX", "ST_MinY", "ST_MaxY")):
        conn.create_function(name, 1, lambda b, i=i: (e := envelope(b)) and e[i], deterministic=True)


def _blob_empty(blob: bytes) -> bool:
    return bool(bytes(blob[3:4])[0] & 0x10) or bool(shapely.is_empty(shapely.from_wkb(_blob_wkb(blob))))


# ============================================================================ GeoPackage writing
_WGS84_WKT = (
    'GEOGCS["WGS 84",DATUM["WGS_1984",SPHEROID["WGS 84",6378137,298.257223563,AUTHORITY["EPSG","7030"]],'
    'AUTHORITY["EPSG","6326"]],PRIMEM["Greenwich",0,AUTHORITY["EPSG","8901"]],UNIT["degree",0.0174532925199433,'
    'AUTHORITY["EPSG","9122"]],AXIS["Latitude",NORTH],AXIS["Longitude",EAST],AUTHORITY["EPSG","4326"]]'
)
_CORE_DDL = """
CREATE TABLE IF NOT EXISTS gpkg_spatial_ref_sys (srs_name TEXT NOT NULL,srs_id INTEGER NOT NULL PRIMARY KEY,
organization TEXT NOT NULL,organization_coordsys_id INTEGER NOT NULL,definition  TEXT NOT NULL,description TEXT);
CREATE TABLE IF NOT EXISTS gpkg_contents (table_name TEXT NOT NULL PRIMARY KEY,data_type TEXT NOT NULL,
identifier TEXT UNIQUE,description TEXT DEFAULT '',last_change DATETIME NOT NULL DEFAULT
(strftime('%Y-%m-%dT%H:%M:%fZ','now')),min_x DOUBLE, min_y DOUBLE,max_x DOUBLE, max_y DOUBLE,srs_id INTEGER,
CONSTRAINT fk_gc_r_srs_id FOREIGN KEY (srs_id) REFERENCES gpkg_spatial_ref_sys(srs_id));
CREATE TABLE IF NOT EXISTS gpkg_ogr_contents(table_name TEXT NOT NULL PRIMARY KEY,feature_count INTEGER DEFAULT NULL);
CREATE TABLE IF NOT EXISTS gpkg_geometry_columns (table_name TEXT NOT NULL,column_name TEXT NOT NULL,
geometry_type_name TEXT NOT NULL,srs_id INTEGER NOT NULL,z TINYINT NOT NULL,m TINYINT NOT NULL,
CONSTRAINT pk_geom_cols PRIMARY KEY (table_name, column_name),CONSTRAINT uk_gc_table_name UNIQUE (table_name),
CONSTRAINT fk_gc_tn FOREIGN KEY (table_name) REFERENCES gpkg_contents(table_name),
CONSTRAINT fk_gc_srs FOREIGN KEY (srs_id) REFERENCES gpkg_spatial_ref_sys (srs_id));
CREATE TABLE IF NOT EXISTS gpkg_extensions (table_name TEXT,column_name TEXT,extension_name TEXT NOT NULL,
definition TEXT NOT NULL,scope TEXT NOT NULL,CONSTRAINT ge_tce UNIQUE (table_name, column_name, extension_name));
INSERT OR IGNORE INTO gpkg_spatial_ref_sys VALUES ('Undefined Cartesian SRS', -1, 'NONE', -1, 'undefined',
'undefined Cartesian coordinate reference system');
INSERT OR IGNORE INTO gpkg_spatial_ref_sys VALUES ('Undefined geographic SRS', 0, 'NONE', 0, 'undefined',
'undefined geographic coordinate reference system');
"""
# The R-tree and feature-count triggers as GDAL writes them for GeoPackage 1.2 ({t}: table, {g}: geometry
# column, both inside double-quoted identifiers; {tl}: the table name as a single-quoted string literal).
_TRIGGERS = (
    'CREATE TRIGGER "rtree_{t}_{g}_insert" AFTER INSERT ON "{t}" WHEN (new."{g}" NOT NULL AND NOT '
    'ST_IsEmpty(NEW."{g}")) BEGIN INSERT OR REPLACE INTO "rtree_{t}_{g}" VALUES (NEW."fid",ST_MinX(NEW."{g}"), '
    'ST_MaxX(NEW."{g}"),ST_MinY(NEW."{g}"), ST_MaxY(NEW."{g}")); END',
    'CREATE TRIGGER "rtree_{t}_{g}_update1" AFTER UPDATE OF "{g}" ON "{t}" WHEN OLD."fid" = NEW."fid" AND '
    '(NEW."{g}" NOTNULL AND NOT ST_IsEmpty(NEW."{g}")) BEGIN INSERT OR REPLACE INTO "rtree_{t}_{g}" VALUES '
    '(NEW."fid",ST_MinX(NEW."{g}"), ST_MaxX(NEW."{g}"),ST_MinY(NEW."{g}"), ST_MaxY(NEW."{g}")); END',
    'CREATE TRIGGER "rtree_{t}_{g}_update2" AFTER UPDATE OF "{g}" ON "{t}" WHEN OLD."fid" = NEW."fid" AND '
    '(NEW."{g}" ISNULL OR ST_IsEmpty(NEW."{g}")) BEGIN DELETE FROM "rtree_{t}_{g}" WHERE id = OLD."fid"; END',
    'CREATE TRIGGER "rtree_{t}_{g}_update3" AFTER UPDATE ON "{t}" WHEN OLD."fid" != NEW."fid" AND '
    '(NEW."{g}" NOTNULL AND NOT ST_IsEmpty(NEW."{g}")) BEGIN DELETE FROM "rtree_{t}_{g}" WHERE id = OLD."fid"; '
    'INSERT OR REPLACE INTO "rtree_{t}_{g}" VALUES (NEW."fid",ST_MinX(NEW."{g}"), ST_MaxX(NEW."{g}"),'
    'ST_MinY(NEW."{g}"), ST_MaxY(NEW."{g}")); END',
    'CREATE TRIGGER "rtree_{t}_{g}_update4" AFTER UPDATE ON "{t}" WHEN OLD."fid" != NEW."fid" AND '
    '(NEW."{g}" ISNULL OR ST_IsEmpty(NEW."{g}")) BEGIN DELETE FROM "rtree_{t}_{g}" WHERE id IN '
    '(OLD."fid", NEW."fid"); END',
    'CREATE TRIGGER "rtree_{t}_{g}_delete" AFTER DELETE ON "{t}" WHEN old."{g}" NOT NULL BEGIN DELETE FROM '
    '"rtree_{t}_{g}" WHERE id = OLD."fid"; END',
    'CREATE TRIGGER "trigger_insert_feature_count_{t}" AFTER INSERT ON "{t}" BEGIN UPDATE gpkg_ogr_contents SET '
    "feature_count = feature_count + 1 WHERE lower(table_name) = lower({tl}); END",
    'CREATE TRIGGER "trigger_delete_feature_count_{t}" AFTER DELETE ON "{t}" BEGIN UPDATE gpkg_ogr_contents SET '
    "feature_count = feature_count - 1 WHERE lower(table_name) = lower({tl}); END",
)


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def srs_id_for(conn: sqlite3.Connection, crs: CRS | None) -> int:
    """The ``srs_id`` of ``crs`` in a GeoPackage, adding its row when missing: the EPSG code when
    pyproj identifies one, else a custom id >= 100000 holding the WKT; None: undefined (-1)."""
    if crs is None:
        return -1
    epsg = crs.to_epsg(min_confidence=90)
    if epsg == 4326:
        conn.execute(
            "INSERT OR IGNORE INTO gpkg_spatial_ref_sys VALUES ('WGS 84 geodetic', 4326, 'EPSG', 4326, ?, "
            "'longitude/latitude coordinates in decimal degrees on the WGS 84 spheroid')",
            (_WGS84_WKT,),
        )
        return 4326
    if epsg is not None:
        row = conn.execute(
            "SELECT srs_id FROM gpkg_spatial_ref_sys WHERE upper(organization) = 'EPSG' AND "
            "organization_coordsys_id = ?",
            (epsg,),
        ).fetchone()
        if row:
            return int(row[0])
        official = CRS.from_epsg(epsg)
        taken = conn.execute("SELECT 1 FROM gpkg_spatial_ref_sys WHERE srs_id = ?", (epsg,)).fetchone()
        srs_id = epsg if not taken else _free_srs_id(conn)
        conn.execute(
            "INSERT INTO gpkg_spatial_ref_sys VALUES (?, ?, 'EPSG', ?, ?, NULL)",
            (official.name, srs_id, epsg, _wkt1(official)),
        )
        return srs_id
    wkt = _wkt1(crs)
    for sid, definition in conn.execute("SELECT srs_id, definition FROM gpkg_spatial_ref_sys WHERE srs_id >= 100000"):
        if definition == wkt:
            return int(sid)
    srs_id = _free_srs_id(conn)
    conn.execute("INSERT INTO gpkg_spatial_ref_sys VALUES (?, ?, 'NONE', ?, ?, NULL)", (crs.name, srs_id, srs_id, wkt))
    return srs_id


def _free_srs_id(conn: sqlite3.Connection) -> int:
    (top,) = conn.execute("SELECT max(srs_id) FROM gpkg_spatial_ref_sys").fetchone()
    return max(100000, int(top or 0) + 1)


def _wkt1(crs: CRS) -> str:
    """WKT1 as GDAL writes in GeoPackage 1.2 (WKT2 when a CRS has no WKT1 form)."""
    return crs.to_wkt("WKT1_GDAL") or crs.to_wkt()


def _connect(path: str | os.PathLike[str]) -> sqlite3.Connection:
    conn = sqlite3.connect(os.fspath(path), isolation_level=None)
    _st_funcs(conn)
    return conn


@contextlib.contextmanager
def _transaction(path: str | os.PathLike[str], begin: str = "BEGIN") -> Iterator[sqlite3.Connection]:
    """A connection to ``path`` inside one transaction: committed at the end, rolled back on any
    exception (Ctrl-C included), closed either way."""
    conn = _connect(path)
    try:
        conn.execute(begin)
        yield conn
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    finally:
        conn.close()


def create_layer(
    path: str | os.PathLike[str],
    layer: str,
    crs: Any,
    schema: Mapping[str, str],
    geometry_type: str = "POLYGON",
    geometry_column: str = "geom",
) -> None:
    """Create a GeoPackage 1.2 (or add to one) an empty feature layer ``layer`` with attribute
    columns ``schema`` (name -> GeoPackage type, see :func:`sql_type`) and its R-tree."""
    crs = None if crs is None else CRS.from_user_input(crs)
    t, g = layer, geometry_column
    cols = "".join(f", {_quote(k)} {v}" for k, v in schema.items())
    with _transaction(path) as conn:
        if conn.execute("PRAGMA application_id").fetchone()[0] == 0:
            conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
            conn.execute(f"PRAGMA user_version = {USER_VERSION}")
        for statement in _CORE_DDL.split(";"):
            if statement.strip():
                conn.execute(statement)
        srs_id = srs_id_for(conn, crs)
        conn.execute(
            f'CREATE TABLE {_quote(t)} ( "fid" INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL, {_quote(g)} '
            f"{geometry_type.upper()}{cols})"
        )
        conn.execute(
            "INSERT INTO gpkg_contents (table_name, data_type, identifier, description, last_change, srs_id) "
            "VALUES (?, 'features', ?, '', ?, ?)",
            (t, t, _now(), srs_id),
        )
        conn.execute("INSERT INTO gpkg_ogr_contents VALUES (?, 0)", (t,))
        kind = geometry_type.upper()
        conn.execute("INSERT INTO gpkg_geometry_columns VALUES (?, ?, ?, ?, 0, 0)", (t, g, kind, srs_id))
        conn.execute(
            "INSERT INTO gpkg_extensions VALUES (?, ?, 'gpkg_rtree_index', "
            "'http://www.geopackage.org/spec120/#extension_rtree', 'write-only')",
            (t, g),
        )
        conn.execute(f"CREATE VIRTUAL TABLE {_quote(f'rtree_{t}_{g}')} USING rtree(id, minx, maxx, miny, maxy)")
        literal = "'" + t.replace("'", "''") + "'"
        for sql in _TRIGGERS:
            sql = sql.replace("{tl}", literal)  # before {t}: the literal is escaped its own way
            conn.execute(sql.replace("{t}", t.replace('"', '""')).replace("{g}", g.replace('"', '""')))


def append_features(
    path: str | os.PathLike[str], layer: str, geoms: np.ndarray, columns: Mapping[str, Any]
) -> int:
    """Append rows to a feature layer in one transaction: rows, R-tree entries, extent and count.

    The layer's triggers (R-tree, feature count) call spatial functions plain SQLite lacks, and
    one ``executemany`` per table is faster than a trigger per row: they are set aside for the
    batch and put back in the same transaction, so GDAL finds them as it wrote them.
    """
    geoms = np.asarray(geoms, dtype=object).reshape(-1)
    n = len(geoms)
    if n == 0:
        return 0
    with _transaction(path, "BEGIN IMMEDIATE") as conn:
        geom_col, srs_id, attrs = _layer_info(conn, layer)
        names = [c for c, _ in attrs if c in columns]
        values = [_sql_values(columns[c]) for c in names]
        (seq,) = conn.execute(
            f"SELECT max(coalesce((SELECT seq FROM sqlite_sequence WHERE name = ?), 0), "
            f"coalesce((SELECT max(fid) FROM {_quote(layer)}), 0))",
            (layer,),
        ).fetchone()
        fids = range(int(seq) + 1, int(seq) + n + 1)
        blobs = gpkg_blobs(geoms, srs_id)
        triggers = conn.execute(
            "SELECT name, sql FROM sqlite_master WHERE type = 'trigger' AND tbl_name = ?", (layer,)
        ).fetchall()
        for name, _ in triggers:
            conn.execute(f"DROP TRIGGER {_quote(name)}")
        cols = ", ".join(_quote(c) for c in ["fid", geom_col, *names])
        marks = ", ".join("?" * (len(names) + 2))
        conn.executemany(
            f"INSERT INTO {_quote(layer)} ({cols}) VALUES ({marks})", zip(fids, blobs, *values, strict=True)
        )
        _index_rows(conn, layer, geom_col, fids, geoms)
        conn.execute(
            "UPDATE gpkg_ogr_contents SET feature_count = feature_count + ? WHERE lower(table_name) = lower(?)",
            (n, layer),
        )
        for _, sql in triggers:
            conn.execute(sql)
    return n


def _index_rows(conn: sqlite3.Connection, layer: str, geom_col: str, fids: range, geoms: np.ndarray) -> None:
    """R-tree rows of the non-empty geometries and the layer's extent in ``gpkg_contents``."""
    bounds = shapely.bounds(geoms)
    ok = np.isfinite(bounds).all(axis=1)
    fid = np.asarray(fids, dtype=np.int64)[ok]
    b = bounds[ok]
    rows = zip(fid.tolist(), b[:, 0].tolist(), b[:, 2].tolist(), b[:, 1].tolist(), b[:, 3].tolist(), strict=True)
    conn.executemany(f"INSERT OR REPLACE INTO {_quote(f'rtree_{layer}_{geom_col}')} VALUES (?, ?, ?, ?, ?)", rows)
    if not ok.any():
        return
    x0, y0 = b[:, 0].min(), b[:, 1].min()
    x1, y1 = b[:, 2].max(), b[:, 3].max()
    conn.execute(
        "UPDATE gpkg_contents SET min_x = min(coalesce(min_x, ?1), ?1), min_y = min(coalesce(min_y, ?2), ?2), "
        "max_x = max(coalesce(max_x, ?3), ?3), max_y = max(coalesce(max_y, ?4), ?4), last_change = ?5 "
        "WHERE lower(table_name) = lower(?6)",
        (float(x0), float(y0), float(x1), float(y1), _now(), layer),
    )


def write_gpkg(
    path: str | os.PathLike[str],
    layer: str,
    geoms: np.ndarray,
    columns: Mapping[str, Any],
    crs: Any,
    geometry_type: str = "POLYGON",
    schema: Mapping[str, str] | None = None,
) -> None:
    """Create ``layer`` (types from the columns' dtypes unless ``schema`` is given) and write the rows."""
    schema = dict(schema) if schema is not None else {k: column_type(v) for k, v in columns.items()}
    create_layer(path, layer, crs, schema, geometry_type)
    append_features(path, layer, geoms, columns)


# ============================================================================ GeoJSON and other writers
def geojson_crs_member(crs: CRS | None) -> dict[str, Any] | None:
    """The legacy ``crs`` member GDAL writes (none for WGS 84; the WKT for a CRS without EPSG code).

    >>> geojson_crs_member(CRS.from_epsg(32633))["properties"]["name"]
    'urn:ogc:def:crs:EPSG::32633'
    >>> geojson_crs_member(CRS.from_epsg(4326)) is None
    True
    """
    if crs is None:
        return None
    epsg = crs.to_epsg(min_confidence=90)
    if epsg == 4326:
        return None
    name = f"urn:ogc:def:crs:EPSG::{epsg}" if epsg is not None else crs.to_wkt()
    return {"type": "name", "properties": {"name": name}}


def write_geojson(
    path: str | os.PathLike[str], layer: str, geoms: np.ndarray, columns: Mapping[str, Any], crs: Any
) -> None:
    """A FeatureCollection of ``geoms`` with ``columns`` as properties (NaN written as null)."""
    crs = None if crs is None else CRS.from_user_input(crs)
    names = list(columns)
    values = [_sql_values(columns[n]) for n in names]
    head: dict[str, Any] = {"type": "FeatureCollection", "name": layer}
    member = geojson_crs_member(crs)
    if member is not None:
        head["crs"] = member
    with open(path, "w", encoding="utf-8") as f:
        f.write(json.dumps(head, ensure_ascii=False)[:-1] + ',\n"features": [\n')
        # GEOS writes coordinates that read back bit for bit, ten times faster than json.dumps(mapping(g))
        texts = shapely.to_geojson(np.asarray(geoms, dtype=object))
        for i, (g, *vals) in enumerate(zip(texts, *values, strict=True)):
            props = json.dumps(dict(zip(names, vals, strict=True)), ensure_ascii=False, allow_nan=False)
            f.write(f'{"," if i else ""}{{"type": "Feature", "properties": {props}, "geometry": {g or "null"}}}\n')
        f.write("]\n}\n")


def write_with_pyogrio(
    path: str | os.PathLike[str],
    layer: str,
    geoms: np.ndarray,
    columns: Mapping[str, Any],
    crs: Any,
    driver: str,
    geometry_type: str = "Polygon",
) -> None:
    """Write a layer in a format of GDAL's (FlatGeobuf, ...) with pyogrio's array API (no geopandas)."""
    pyogrio = _pyogrio(Path(path))
    crs = None if crs is None else CRS.from_user_input(crs)
    fields = list(columns)
    data = [_as_array(columns[k]) for k in fields]
    pyogrio.raw.write(
        os.fspath(path),
        shapely.to_wkb(np.asarray(geoms, dtype=object)),
        data,
        fields,
        layer=layer,
        driver=driver,
        geometry_type=geometry_type,
        crs=None if crs is None else crs.to_wkt(),
    )


def iter_chunks(n: int, size: int) -> Iterator[slice]:
    """Slices of ``range(n)`` of at most ``size`` items.

    >>> [(s.start, s.stop) for s in iter_chunks(5, 2)]
    [(0, 2), (2, 4), (4, 5)]
    """
    for start in range(0, n, size):
        yield slice(start, min(n, start + size))
