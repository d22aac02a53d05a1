"""What vector reading and writing share: format constants, :class:`VectorFormatError`, the
column tables (:class:`Table`, :class:`Features`), the GeoPackage column types and geometry blobs.

Standard library, numpy, shapely 2 and pyproj only (the light install). :mod:`fastsam_geo.vectorio`
re-exports every name of this module.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
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


# ============================================================================ SQL names
def _quote(name: str) -> str:
    """An SQL identifier in double quotes.

    >>> _quote('a"b')
    '"a""b"'
    """
    return '"' + name.replace('"', '""') + '"'
