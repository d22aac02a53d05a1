"""Vector I/O of the light install: GeoPackage 1.2 and GeoJSON without GDAL, pandas or geopandas.

Only the standard library (``sqlite3``, ``json``, ``struct``), numpy, shapely 2 and pyproj:

- :class:`GpkgWriter` writes a GeoPackage 1.2 feature layer in plain sqlite3, as GDAL writes
  it (the same core tables, column types, R-tree index and triggers, ``gpkg_ogr_contents``),
  so GDAL, QGIS and pyogrio read it without a warning and can append to it.
- :func:`write_geojson` writes a FeatureCollection (with the legacy ``crs`` member that GDAL
  writes, so a projected layer reads back in its CRS).
- :func:`list_layers` and :func:`read_features` read any GeoPackage (any envelope, ISO or
  extended WKB) and GeoJSON natively; other formats (Shapefile, FlatGeobuf, ...) go through
  pyogrio when it is installed (``pip install "fastsam-geo[vector]"``).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import sqlite3
import struct
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import shapely
from pyproj import CRS

VECTOR_EXTRA = 'pip install "fastsam-geo[vector]"'
APPLICATION_ID = 0x47504B47  # "GPKG"
USER_VERSION = 10200  # GeoPackage 1.2: what the GDAL of QGIS 3.22 reads without warnings
GEOJSON_SUFFIXES = (".geojson", ".json")
_ENVELOPE_BYTES = {0: 0, 1: 32, 2: 48, 3: 48, 4: 64}
_OGR_TYPES = {
    "GEOMETRY": "Unknown",
    "POINT": "Point",
    "LINESTRING": "LineString",
    "POLYGON": "Polygon",
    "MULTIPOINT": "MultiPoint",
    "MULTILINESTRING": "MultiLineString",
    "MULTIPOLYGON": "MultiPolygon",
    "GEOMETRYCOLLECTION": "GeometryCollection",
}


class VectorFormatError(ValueError):
    """A vector file that cannot be read (not a GeoPackage/GeoJSON, no such layer, ...)."""


# ============================================================================ tables
class Table:
    """Columns of equal length by name, read as attributes or items (a pandas-free frame).

    >>> t = Table({"tile_id": np.array(["a", "b"], dtype=object), "objects": np.array([3, 0])})
    >>> len(t), int(t.objects.sum()), list(t["tile_id"]), t.rows()[1]
    (2, 3, ['a', 'b'], {'tile_id': 'b', 'objects': 0})
    """

    def __init__(self, columns: Mapping[str, Any] | None = None, length: int | None = None) -> None:
        self.columns: dict[str, np.ndarray] = {k: _as_array(v) for k, v in (columns or {}).items()}
        self._len = length if length is not None else len(next(iter(self.columns.values()), ()))

    def __len__(self) -> int:
        return self._len

    def __getitem__(self, name: str) -> np.ndarray:
        return self.columns[name]

    def __getattr__(self, name: str) -> np.ndarray:
        try:
            return self.__dict__["columns"][name]
        except KeyError:
            raise AttributeError(name) from None

    def get(self, name: str, default: Any = None) -> Any:
        """The column ``name``, or ``default`` when there is none."""
        return self.columns.get(name, default)

    def __contains__(self, name: object) -> bool:
        return name in self.columns

    def __repr__(self) -> str:
        return f"Table({len(self)} rows: {', '.join(self.columns)})"

    def rows(self) -> list[dict[str, Any]]:
        """The rows as dicts of Python values (numpy scalars converted)."""
        names = list(self.columns)
        cols = [[_py(v) for v in self.columns[n]] for n in names]
        return [dict(zip(names, vals, strict=True)) for vals in zip(*cols, strict=True)]


def _as_array(values: Any) -> np.ndarray:
    """A 1-D numpy array of a column; strings and mixed values as an object array.

    >>> _as_array(["a", None]).dtype, _as_array([1, 2]).dtype, _as_array(np.array([True])).dtype
    (dtype('O'), dtype('int64'), dtype('bool'))
    """
    if isinstance(values, np.ndarray):
        return values.astype(object) if values.dtype.kind == "U" else values
    values = list(values)
    arr = np.asarray(values) if values and all(_plain_number(v) for v in values) else None
    if arr is not None and arr.dtype.kind in "biuf":
        return arr
    out = np.empty(len(values), dtype=object)
    out[:] = values
    return out


def _sql_values(values: Any) -> list[Any]:
    """A column as Python values for sqlite3 / json (NaN as None), vectorised for numeric arrays.

    >>> _sql_values(np.array([0.5, np.nan])), _sql_values(np.array([True])), _sql_values(["a", np.int64(2)])
    ([0.5, None], [True], ['a', 2])
    """
    arr = _as_array(values)
    if arr.dtype.kind in "biu":
        return arr.tolist()
    if arr.dtype.kind == "f":
        out = arr.astype(object)
        out[np.isnan(arr)] = None
        return [v if v is None else float(v) for v in out.tolist()]
    return [_py(v) for v in arr]


def _plain_number(v: Any) -> bool:
    return isinstance(v, (bool, int, float, np.bool_, np.integer, np.floating))


def _py(v: Any) -> Any:
    """A Python scalar for sqlite3/json: numpy types converted, NaN to None.

    >>> _py(np.float32(0.5)), _py(np.int64(3)), _py(np.bool_(True)), _py(float("nan"))
    (0.5, 3, True, None)
    """
    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, float) and math.isnan(v):
        return None
    return v


@dataclass
class Features:
    """A vector layer in memory: geometries, attribute columns and the CRS."""

    geometry: np.ndarray
    columns: Table
    crs: CRS | None
    layer: str = ""
    geometry_type: str | None = None

    def __len__(self) -> int:
        return len(self.geometry)

    @classmethod
    def of(cls, geoms: Sequence[Any] | np.ndarray, crs: Any = None, **columns: Any) -> Features:
        """Features from geometries, a CRS (anything pyproj reads; None: none) and columns.

        >>> f = Features.of([shapely.box(0, 0, 1, 1)], "EPSG:32633", score=[0.5])
        >>> len(f), f.crs.to_epsg(), f.columns.score.tolist()
        (1, 32633, [0.5])
        """
        arr = np.empty(len(geoms), dtype=object)
        arr[:] = list(geoms)
        crs = None if crs is None else CRS.from_user_input(crs)
        return cls(arr, Table(columns, len(arr)), crs)

    def take(self, index: np.ndarray) -> Features:
        """The rows at ``index`` (an integer or boolean array)."""
        cols = Table({k: v[index] for k, v in self.columns.columns.items()})
        geoms = self.geometry[index]
        return Features(geoms, Table(cols.columns, len(geoms)), self.crs, self.layer, self.geometry_type)


# ============================================================================ columns
def sql_type(dtype: Any) -> str:
    """The GeoPackage column type GDAL writes for a numpy dtype (or a dtype name like ``"str"``).

    >>> [sql_type(t) for t in ("int64", "int32", "int16", "float64", "float32", "bool", "str", object)]
    ['INTEGER', 'MEDIUMINT', 'SMALLINT', 'REAL', 'FLOAT', 'BOOLEAN', 'TEXT', 'TEXT']
    """
    if dtype in ("str", str):
        return "TEXT"
    dt = np.dtype(dtype)
    if dt.kind == "b":
        return "BOOLEAN"
    if dt.kind in "iu":
        if dt.itemsize == 1 or (dt.itemsize == 2 and dt.kind == "i"):
            return "SMALLINT"
        return "MEDIUMINT" if dt.itemsize == 2 or (dt.itemsize == 4 and dt.kind == "i") else "INTEGER"
    if dt.kind == "f":
        return "FLOAT" if dt.itemsize == 4 else "REAL"
    return "TEXT"


def column_type(values: Any) -> str:
    """The GeoPackage type of a column of values (an array's dtype, else from its values).

    >>> column_type(np.array([1.5], np.float32)), column_type(["a", None]), column_type([True, False])
    ('FLOAT', 'TEXT', 'BOOLEAN')
    """
    return sql_type(_as_array(values).dtype)


def _from_sql(values: list[Any], decl: str) -> np.ndarray:
    """A column read from SQLite, typed by its declared GeoPackage type.

    >>> _from_sql([1, None], "INTEGER").tolist(), _from_sql([1.5, None], "REAL").tolist()
    ([1, None], [1.5, nan])
    >>> _from_sql([1, 0], "BOOLEAN").tolist(), _from_sql([2], "MEDIUMINT").dtype
    ([True, False], dtype('int32'))
    """
    decl = decl.upper().split("(")[0].strip()
    has_null = any(v is None for v in values)
    if decl in ("REAL", "FLOAT", "DOUBLE"):
        return np.array([np.nan if v is None else v for v in values], np.float32 if decl == "FLOAT" else np.float64)
    ints = {"BOOLEAN": bool, "TINYINT": np.int8, "SMALLINT": np.int16, "MEDIUMINT": np.int32}
    if (decl in ints or "INT" in decl) and not has_null and all(isinstance(v, int) for v in values):
        return np.array(values, dtype=ints.get(decl, np.int64))
    if decl == "BOOLEAN":
        values = [None if v is None else bool(v) for v in values]
    out = np.empty(len(values), dtype=object)
    out[:] = values
    return out


# ============================================================================ geometry blobs
def gpkg_blobs(geoms: np.ndarray, srs_id: int) -> list[bytes | None]:
    """GeoPackage binary geometries: GP header (little-endian, envelope [minx, maxx, miny, maxy])
    and WKB; empty geometries flagged empty without envelope, missing ones None.

    >>> b = gpkg_blobs(np.array([shapely.box(0, 0, 2, 1), shapely.Polygon(), None]), 4326)
    >>> b[0][:4], struct.unpack("<i4d", b[0][4:40]), b[1][:4], b[2]
    (b'GP\\x00\\x03', (4326, 0.0, 2.0, 0.0, 1.0), b'GP\\x00\\x11', None)
    """
    geoms = np.asarray(geoms, dtype=object)
    wkb = shapely.to_wkb(geoms, byte_order=1)
    bounds = shapely.bounds(geoms)
    empty = shapely.is_empty(geoms)
    out: list[bytes | None] = []
    for w, (x0, y0, x1, y1), e in zip(wkb, bounds.tolist(), empty.tolist(), strict=True):
        if w is None:
            out.append(None)
        elif e:
            out.append(struct.pack("<2sBBi", b"GP", 0, 0x11, srs_id) + w)
        else:
            out.append(struct.pack("<2sBBi4d", b"GP", 0, 0x03, srs_id, x0, x1, y0, y1) + w)
    return out


def _blob_wkb(blob: bytes | memoryview | None) -> bytes | None:
    """The WKB of a GeoPackage binary geometry (any envelope type; either byte order).

    >>> _blob_wkb(gpkg_blobs(np.array([shapely.Point(1, 2)]), 0)[0]).hex()
    '0101000000000000000000f03f0000000000000040'
    """
    if blob is None:
        return None
    b = bytes(blob)
    if len(b) < 8 or b[:2] != b"GP":
        raise VectorFormatError("not a GeoPackage geometry blob (no 'GP' magic)")
    flags = b[3]
    if flags & 0x20:
        raise VectorFormatError("extended GeoPackage geometry blobs (a vendor extension) are not supported")
    envelope = (flags >> 1) & 0x07
    if envelope not in _ENVELOPE_BYTES:
        raise VectorFormatError(f"invalid GeoPackage envelope type {envelope}")
    return b[8 + _ENVELOPE_BYTES[envelope] :]


def geometries_from_blobs(blobs: Sequence[bytes | memoryview | None]) -> np.ndarray:
    """Shapely geometries of GeoPackage blobs (None stays None).

    >>> geometries_from_blobs(gpkg_blobs(np.array([shapely.box(0, 0, 1, 1), None]), 0))[0].area
    1.0
    """
    wkbs = np.empty(len(blobs), dtype=object)
    wkbs[:] = [_blob_wkb(b) for b in blobs]
    return shapely.from_wkb(wkbs) if len(wkbs) else np.empty(0, dtype=object)


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


def _quote(name: str) -> str:
    """An SQL identifier in double quotes.

    >>> _quote('a"b')
    '"a""b"'
    """
    return '"' + name.replace('"', '""') + '"'


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
