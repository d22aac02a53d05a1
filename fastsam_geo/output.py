"""Write building polygons: GeoPackage (default), GeoJSON or FlatGeobuf, never half-written.

:class:`VectorWriter` appends final polygons to a staging GeoPackage beside the output
as they arrive (memory stays flat), and only :meth:`VectorWriter.commit` moves the
result into place (``os.replace``), so a failed or cancelled run never leaves a half
file where the output should be. GeoPackage outputs also get a ``fastsam_geo_tiles``
table (the tile ledger) and a ``fastsam_geo_metadata`` table (parameters, weights and
their sha256, so a result can be traced to the exact model file).
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import tempfile
import uuid
from collections.abc import Mapping, Sequence
from functools import lru_cache
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pyogrio
import shapely
from pyproj import CRS, Transformer

from fastsam_geo.errors import OutputError

DRIVERS = {".gpkg": "GPKG", ".geojson": "GeoJSON", ".json": "GeoJSON", ".fgb": "FlatGeobuf"}
LAYER = "buildings"
# GeoPackage 1.2: read without warnings by the GDAL of QGIS 3.22 (GDAL 3.6 warns on 1.4).
GPKG_OPTIONS = {"dataset_options": {"VERSION": "1.2"}}


def driver_for(path: str | os.PathLike[str]) -> str:
    """The OGR driver for an output path, from its extension.

    >>> driver_for("out/buildings.gpkg"), driver_for("b.fgb")
    ('GPKG', 'FlatGeobuf')
    """
    ext = Path(path).suffix.lower()
    if ext not in DRIVERS:
        raise OutputError(f"{path}: unknown output format {ext or '(no extension)'!r}; use .gpkg, .geojson or .fgb.")
    return DRIVERS[ext]


def check_output(path: str | os.PathLike[str], overwrite: bool = False) -> Path:
    """Refuse an output that exists (without ``overwrite``) or whose folder is not writable."""
    out = Path(path)
    driver_for(out)
    if out.exists() and not overwrite:
        raise OutputError(f"{out} exists; pass --overwrite (overwrite=True) to replace it.")
    folder = out.parent if str(out.parent) else Path(".")
    if not folder.is_dir():
        raise OutputError(f"{folder}: output folder does not exist; create it first (mkdir -p {folder}).")
    try:  # a real probe: permissions, read-only file systems, quotas (os.access says yes to root)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=f".{out.name}.", suffix=".probe"):
            pass
    except OSError as exc:
        raise OutputError(
            f"{folder}: output folder is not writable ({exc.strerror}); choose another output path."
        ) from None
    return out


def local_equal_area(lon: float, lat: float) -> CRS:
    """Lambert azimuthal equal-area CRS centred on ``(lon, lat)``: true areas nearby."""
    return CRS.from_proj4(f"+proj=laea +lat_0={lat:.6f} +lon_0={lon:.6f} +datum=WGS84 +units=m +no_defs")


@lru_cache(maxsize=16)
def _to_lonlat(wkt: str) -> Transformer:
    return Transformer.from_crs(CRS.from_wkt(wkt), "EPSG:4326", always_xy=True)


@lru_cache(maxsize=64)
def _to_equal_area(wkt: str, lon: int, lat: int) -> Transformer:
    return Transformer.from_crs(CRS.from_wkt(wkt), local_equal_area(lon, lat), always_xy=True)


def area_m2(geoms: np.ndarray | Sequence[object], crs: CRS | str | object) -> np.ndarray:
    """True area in square metres, whatever the CRS (geographic CRSs included).

    Geometries are projected to a Lambert equal-area CRS centred on their extent. A
    10 m UTM square on the central meridian covers 100.08 m² on the ground (UTM's
    scale factor there is 0.9996):

    >>> sq = shapely.box(500000, 4649900, 500010, 4649910)
    >>> float(area_m2(np.array([sq]), "EPSG:32633")[0].round(2))
    100.08
    """
    geoms = np.asarray(geoms, dtype=object)
    if geoms.size == 0:
        return np.zeros(0)
    wkt = CRS.from_user_input(crs).to_wkt()
    xmin, ymin, xmax, ymax = shapely.total_bounds(geoms)
    lon, lat = _to_lonlat(wkt).transform((xmin + xmax) / 2, (ymin + ymax) / 2)
    # An equal-area projection keeps areas wherever it is centred: a centre rounded to
    # the degree lets one transformer serve a whole run.
    proj = _to_equal_area(wkt, round(lon), round(lat))
    projected = shapely.transform(geoms, lambda xy: np.column_stack(proj.transform(xy[:, 0], xy[:, 1])))
    return shapely.area(projected)


def write_attribute_tables(path: Path, tables: Mapping[str, pd.DataFrame]) -> None:
    """Add non-spatial tables to a GeoPackage in one SQLite transaction.

    They are GeoPackage *attribute* tables (registered in ``gpkg_contents``), which GDAL,
    QGIS and pyogrio list and read as layers. One transaction instead of one GDAL open per
    table: the tile ledger and metadata cost ~1 ms, not ~7 ms each.
    """
    sql_types = {"i": "INTEGER", "u": "INTEGER", "b": "BOOLEAN", "f": "REAL"}
    conn = sqlite3.connect(path)
    try:
        with conn:
            for name, table in tables.items():
                cols = [str(c) for c in table.columns]
                decl = ", ".join(f'"{c}" {sql_types.get(table[c].dtype.kind, "TEXT")}' for c in cols)
                conn.execute(f'DROP TABLE IF EXISTS "{name}"')
                conn.execute(f'CREATE TABLE "{name}" (fid INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL, {decl})')
                marks = ", ".join("?" for _ in cols)
                rows = [
                    tuple(v.item() if hasattr(v, "item") else v for v in row) for row in table.itertuples(index=False)
                ]
                conn.executemany(
                    f'INSERT INTO "{name}" ({", ".join(chr(34) + c + chr(34) for c in cols)}) VALUES ({marks})', rows
                )
                conn.execute("DELETE FROM gpkg_contents WHERE table_name = ?", (name,))
                conn.execute(
                    "INSERT INTO gpkg_contents (table_name, data_type, identifier, last_change) "
                    "VALUES (?, 'attributes', ?, strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))",
                    (name, name),
                )
    finally:
        conn.close()


def renumber_ids(path: Path, layer: str, order_by: Sequence[str]) -> None:
    """Set ``id`` of a GeoPackage layer to 1..N in the order of ``order_by`` (ties: by fid).

    ``"bounds"`` in ``order_by`` stands for the bounding box (from the layer's R-tree:
    minx, maxy descending, maxx, miny). One SQL statement; GDAL's R-tree triggers call
    spatial functions plain SQLite lacks, so they are set aside for it (the geometry does
    not change, so the index stays right) and put back in the same transaction.
    """
    conn = sqlite3.connect(path)
    try:
        with conn:
            (geom,) = conn.execute(
                "SELECT column_name FROM gpkg_geometry_columns WHERE table_name = ?", (layer,)
            ).fetchone()
            rtree = f"rtree_{layer}_{geom}"
            keys = []
            for k in order_by:
                keys += ["t.minx", "t.maxy DESC", "t.maxx", "t.miny"] if k == "bounds" else [f'b."{k}"']
            triggers = conn.execute(
                "SELECT name, sql FROM sqlite_master WHERE type = 'trigger' AND tbl_name = ?", (layer,)
            ).fetchall()
            for name, _ in triggers:
                conn.execute(f'DROP TRIGGER "{name}"')
            conn.execute("CREATE TEMP TABLE _fastsam_order (f INTEGER PRIMARY KEY, n INTEGER)")
            conn.execute(
                f"INSERT INTO _fastsam_order SELECT b.fid, ROW_NUMBER() OVER (ORDER BY {', '.join(keys)}, b.fid) "
                f'FROM "{layer}" b LEFT JOIN "{rtree}" t ON t.id = b.fid'
            )
            conn.execute(f'UPDATE "{layer}" SET id = (SELECT n FROM _fastsam_order WHERE f = "{layer}".fid)')
            conn.execute("DROP TABLE _fastsam_order")
            for _, sql in triggers:
                conn.execute(sql)
    finally:
        conn.close()


class VectorWriter:
    """Incremental, atomic writer of the ``buildings`` layer.

    Polygons go to a staging GeoPackage beside the output, ``FLUSH_ROWS`` at a time.

    >>> import tempfile
    >>> d = tempfile.mkdtemp()
    >>> with VectorWriter(f"{d}/b.gpkg", "EPSG:32633") as w:
    ...     n = w.write(np.array([shapely.box(500000, 4649900, 500010, 4649910)]), {"score": [0.9]})
    ...     path = w.commit()
    >>> df = gpd.read_file(path, layer="buildings")
    >>> int(df.id[0]), float(df.area_m2[0]), df.crs.to_epsg()
    (1, 100.08, 32633)
    """

    FLUSH_ROWS = 5000

    def __init__(
        self,
        output: str | os.PathLike[str],
        crs: object,
        *,
        overwrite: bool = False,
        layer: str = LAYER,
    ) -> None:
        self.output = check_output(output, overwrite)
        self.driver = driver_for(self.output)
        self.crs = CRS.from_user_input(crs)
        self.layer = layer
        self.count = 0
        self._buffer: list[gpd.GeoDataFrame] = []
        self._buffered = 0
        self._staging = self.output.with_name(f".{self.output.name}.{uuid.uuid4().hex[:8]}.partial.gpkg")
        self._done = False

    def __enter__(self) -> VectorWriter:
        return self

    def __exit__(self, exc_type: object, *exc: object) -> None:
        if not self._done:
            self.abort()

    @property
    def staging_path(self) -> Path:
        """Where polygons go until :meth:`commit`."""
        return self._staging

    def write(self, geoms: np.ndarray, columns: Mapping[str, Sequence[object] | np.ndarray]) -> int:
        """Append polygons with their attribute columns; ``id`` and ``area_m2`` are added here.

        Rows are buffered and written ``FLUSH_ROWS`` at a time (each GeoPackage append opens
        the file: per tile that cost more than tracing the masks).
        """
        geoms = np.asarray(geoms, dtype=object)
        n = len(geoms)
        if n == 0:
            return 0
        data: dict[str, object] = {"id": np.arange(self.count + 1, self.count + n + 1, dtype=np.int64)}
        data.update({k: list(v) if not isinstance(v, np.ndarray) else v for k, v in columns.items()})
        data["area_m2"] = np.round(area_m2(geoms, self.crs), 2)
        self._buffer.append(gpd.GeoDataFrame(data, geometry=list(geoms), crs=self.crs))
        self._buffered += n
        self.count += n
        if self._buffered >= self.FLUSH_ROWS:
            self.flush()
        return n

    def flush(self) -> None:
        """Write the buffered rows to the staging GeoPackage."""
        if not self._buffer:
            return
        gdf = self._buffer[0] if len(self._buffer) == 1 else pd.concat(self._buffer, ignore_index=True)
        self._buffer, self._buffered = [], 0
        append = self._staging.exists()
        pyogrio.write_dataframe(
            gdf,
            self._staging,
            layer=self.layer,
            driver="GPKG",
            append=append,
            geometry_type="Polygon",
            promote_to_multi=False,
            **({} if append else GPKG_OPTIONS),
        )

    def commit(
        self,
        tables: Mapping[str, pd.DataFrame] | None = None,
        empty_schema: Mapping[str, str] | None = None,
        order_by: Sequence[str] | None = None,
    ) -> Path:
        """Finish: add tables (GeoPackage only), convert if needed, move into place.

        ``order_by``: renumber ``id`` 1..N by these columns (``"bounds"`` stands for the
        polygon's bounding box), so that ids do not depend on the order rows arrived in.
        """
        try:
            self.flush()
            if order_by and self._staging.exists():
                renumber_ids(self._staging, self.layer, order_by)
            if not self._staging.exists():
                schema = {"id": "int64", **dict(empty_schema or {}), "area_m2": "float64"}
                empty = gpd.GeoDataFrame({k: pd.Series(dtype=v) for k, v in schema.items()}, geometry=[], crs=self.crs)
                pyogrio.write_dataframe(
                    empty, self._staging, layer=self.layer, driver="GPKG", geometry_type="Polygon", **GPKG_OPTIONS
                )
            if self.driver == "GPKG":
                write_attribute_tables(self._staging, tables or {})
                final_tmp = self._staging
            else:
                final_tmp = self.output.with_name(f".{self.output.name}.{uuid.uuid4().hex[:8]}.tmp{self.output.suffix}")
                gdf = pyogrio.read_dataframe(self._staging, layer=self.layer)
                gdf = gdf.sort_values("id", kind="stable") if "id" in gdf.columns else gdf
                pyogrio.write_dataframe(gdf, final_tmp, layer=self.layer, driver=self.driver, geometry_type="Polygon")
            os.replace(final_tmp, self.output)
        except Exception:
            self.abort()
            raise
        self._done = True
        if self._staging.exists():
            self._staging.unlink()
        return self.output

    def abort(self) -> None:
        """Drop the staging file: nothing is left where the output should be."""
        self._done = True
        for p in (
            self._staging,
            Path(f"{self._staging}-journal"),
            Path(f"{self._staging}-wal"),
            Path(f"{self._staging}-shm"),
        ):
            with contextlib.suppress(FileNotFoundError):
                p.unlink()
