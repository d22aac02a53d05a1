"""Write building polygons: GeoPackage (default), GeoJSON or FlatGeobuf, never half-written.

:class:`VectorWriter` appends final polygons to a staging GeoPackage beside the output
as they arrive (memory stays flat), and only :meth:`VectorWriter.commit` moves the
result into place (``os.replace``), so a failed or cancelled run never leaves a half
file where the output should be. GeoPackage outputs also record the run (parameters,
weights and their sha256, so a result can be traced to the exact model file) and the tile
table in the GeoPackage metadata extension (:func:`write_run_tables`): the buildings stay
the one layer QGIS and geopandas meet.
"""

from __future__ import annotations

import contextlib
import errno
import os
import sqlite3
import tempfile
import uuid
from collections.abc import Iterator, Mapping, Sequence
from functools import lru_cache
from pathlib import Path

import numpy as np
import shapely
from pyproj import CRS, Transformer

from fastsam_geo import vectorio
from fastsam_geo.errors import OutputError

DRIVERS = {".gpkg": "GPKG", ".geojson": "GeoJSON", ".json": "GeoJSON", ".fgb": "FlatGeobuf"}
LAYER = "buildings"
TILE_COLUMNS = ("tile_id", "status", "objects", "error")


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
    """Refuse a vector output that exists (without ``overwrite``), whose folder is not writable
    or whose extension names no vector format (see :func:`guard_output` for any file)."""
    out = Path(path)
    _check_name(out)
    if driver_for(out) not in ("GPKG", "GeoJSON"):
        _need_pyogrio(out)
    return guard_output(out, (), overwrite)


def _check_name(out: Path) -> None:
    if "\x00" in str(out) or "\n" in str(out):
        raise OutputError(f"{str(out)!r}: an output name cannot hold a NUL or newline character; rename it.")
    if out.is_dir():
        raise OutputError(f"{out} is a folder; give a file name, e.g. {out / 'buildings.gpkg'}.")


def guard_output(
    path: str | os.PathLike[str], inputs: Sequence[object] = (), overwrite: bool = False
) -> Path:
    """The one guard of every output path of every command (a GeoPackage, a trained .pt, an
    .onnx, a sample raster): never one of ``inputs`` (whatever ``overwrite`` says), an existing
    file only with ``overwrite``, a folder that exists and can be written to (a real probe:
    permissions, read-only file systems, quotas). Raises :class:`OutputError` (one line).

    >>> import tempfile
    >>> d = Path(tempfile.mkdtemp()); (d / "a.pt").write_bytes(b"x")
    1
    >>> guard_output(d / "b.pt", [d / "a.pt"]).name
    'b.pt'
    >>> guard_output(d / "a.pt", [d / "a.pt"], overwrite=True)
    Traceback (most recent call last):
    ...
    fastsam_geo.errors.OutputError: ...a.pt is also an input (...a.pt); write the output to another file...
    """
    out = Path(path)
    _check_name(out)
    refuse_input_as_output(out, inputs)
    if (out.exists() or out.is_symlink()) and not overwrite:
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


@contextlib.contextmanager
def staged_file(path: str | os.PathLike[str]) -> Iterator[Path]:
    """A staging path beside ``path`` (same folder, so the final move is atomic) that becomes
    ``path`` only when the block ends without an error: a failure or Ctrl-C leaves neither a
    half-written file nor the staging file, and an existing ``path`` stays as it was.

    >>> import tempfile
    >>> d = Path(tempfile.mkdtemp())
    >>> with staged_file(d / "m.pt") as tmp:
    ...     _ = tmp.write_bytes(b"model")
    >>> (d / "m.pt").read_bytes(), sorted(p.name for p in d.iterdir())
    (b'model', ['m.pt'])
    """
    out = Path(path)
    tmp = out.with_name(f".{out.name}.{uuid.uuid4().hex[:8]}.part{out.suffix}")
    try:
        yield tmp
        os.replace(tmp, out)
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink()


def same_file(a: str | os.PathLike[str], b: str | os.PathLike[str]) -> bool:
    """True when two paths name one file: the same path spelled differently, a symlink to
    it, or a hard link (same device and inode). A path that does not exist is compared
    by its resolved spelling.

    >>> import tempfile
    >>> d = Path(tempfile.mkdtemp()); (d / "a.tif").write_bytes(b"x"); os.link(d / "a.tif", d / "b.tif")
    1
    >>> same_file(d / "a.tif", d / "b.tif"), same_file(d / "a.tif", f"{d}/./a.tif"), same_file(d / "a.tif", d / "c")
    (True, True, False)
    """
    try:
        return os.path.samefile(a, b)
    except (OSError, ValueError):
        try:
            return Path(a).resolve() == Path(b).resolve()
        except (OSError, RuntimeError, ValueError):  # a symlink loop
            return os.path.abspath(a) == os.path.abspath(b)


def refuse_input_as_output(output: str | os.PathLike[str], inputs: Sequence[object]) -> None:
    """Raise :class:`OutputError` when ``output`` is one of ``inputs`` (rasters, their VRT
    sources, prompt files, weights), whatever the flags: an input is never overwritten."""
    for item in inputs:
        if item is None:
            continue
        text = os.fspath(item) if isinstance(item, (str, os.PathLike)) else str(item)
        if text.startswith("/vsi") or "://" in text:
            continue
        if same_file(output, text):
            out = Path(output)
            other = out.stem + ("_buildings.gpkg" if out.suffix.lower() in DRIVERS else f"_new{out.suffix}")
            raise OutputError(
                f"{output} is also an input ({text}); write the output to another file, e.g. {out.with_name(other)}."
            )


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


def keep_area(
    geoms: np.ndarray, index: np.ndarray, crs: object, min_m2: float, max_m2: float = float("inf")
) -> tuple[np.ndarray, np.ndarray]:
    """The polygons (and their source indexes) whose true area lies in ``[min_m2, max_m2]``.

    >>> g = np.array([shapely.box(500000, 4649900, 500002, 4649902), shapely.box(500000, 4649900, 500010, 4649910)])
    >>> kept, idx = keep_area(g, np.array([0, 1]), "EPSG:32633", 12.0)
    >>> idx.tolist()
    [1]
    """
    geoms = np.asarray(geoms, dtype=object)
    if geoms.size == 0 or (min_m2 <= 0 and max_m2 == float("inf")):
        return geoms, np.asarray(index)
    area = area_m2(geoms, crs)
    ok = (area >= min_m2) & (area <= max_m2)
    return geoms[ok], np.asarray(index)[ok]


TILES_DOMAIN = "FASTSAM_GEO_TILES"
"""GDAL metadata domain of the tile table (one item, ``tiles``: a JSON list of rows)."""

_GPKG_METADATA_DDL = """
CREATE TABLE IF NOT EXISTS gpkg_metadata (
  id INTEGER CONSTRAINT m_pk PRIMARY KEY ASC NOT NULL, md_scope TEXT NOT NULL DEFAULT 'dataset',
  md_standard_uri TEXT NOT NULL, mime_type TEXT NOT NULL DEFAULT 'text/xml', metadata TEXT NOT NULL DEFAULT '');
CREATE TABLE IF NOT EXISTS gpkg_metadata_reference (
  reference_scope TEXT NOT NULL, table_name TEXT, column_name TEXT, row_id_value INTEGER,
  timestamp DATETIME NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ','now')), md_file_id INTEGER NOT NULL,
  md_parent_id INTEGER, CONSTRAINT crmr_mfi_fk FOREIGN KEY (md_file_id) REFERENCES gpkg_metadata(id),
  CONSTRAINT crmr_mpi_fk FOREIGN KEY (md_parent_id) REFERENCES gpkg_metadata(id));
"""
_EXT = "http://www.geopackage.org/spec120/#extension_metadata"


def _gdal_metadata_xml(items: Mapping[str, str], tiles: str) -> str:
    """GDAL's PAM XML: the run metadata in the default domain, the tile table in its own."""
    import xml.etree.ElementTree as ET

    root = ET.Element("GDALMultiDomainMetadata")
    md = ET.SubElement(root, "Metadata")
    for k, v in items.items():
        ET.SubElement(md, "MDI", key=str(k)).text = str(v)
    ET.SubElement(ET.SubElement(root, "Metadata", domain=TILES_DOMAIN), "MDI", key="tiles").text = tiles
    return ET.tostring(root, encoding="unicode")


def _need_pyogrio(out: Path) -> None:
    """FlatGeobuf is written by GDAL: without pyogrio, say which extra to install, before any work."""
    try:
        import pyogrio  # noqa: F401
    except ImportError:
        raise OutputError(
            f"{out}: writing {driver_for(out)} needs GDAL: {vectorio.VECTOR_EXTRA}, or write a .gpkg or .geojson."
        ) from None


def _metadata_items(meta: object) -> dict[str, str]:
    """Run metadata given as a dict or as a key/value table (dict of columns, Table, DataFrame).

    >>> _metadata_items({"a": 1}), _metadata_items({"key": ["a"], "value": ["b"]})
    ({'a': '1'}, {'a': 'b'})
    """
    if meta is None:
        return {}
    if isinstance(meta, Mapping) and not ("key" in meta and "value" in meta):
        return {str(k): str(v) for k, v in meta.items()}
    keys, values = meta["key"], meta["value"]  # type: ignore[index]
    return {str(k): str(v) for k, v in zip(list(keys), list(values), strict=True)}


def _tile_rows(tiles: object) -> list[dict[str, object]]:
    """The tile table as a list of row dicts (given as rows, a Table or a DataFrame)."""
    if tiles is None:
        return []
    if isinstance(tiles, vectorio.Table):
        return tiles.rows()
    if hasattr(tiles, "to_dict"):  # a pandas DataFrame, where pandas is installed
        tiles = tiles.to_dict(orient="records")  # type: ignore[union-attr]
    return [{k: vectorio._py(v) for k, v in dict(r).items()} for r in tiles]  # type: ignore[union-attr]


def write_run_tables(path: Path, tables: Mapping[str, object], layer: str = LAYER) -> None:
    """Store the run metadata and the tile table in the GeoPackage *metadata extension*
    (``gpkg_metadata``, referenced to ``layer``), in GDAL's own format, in one transaction.

    Why not attribute tables: GDAL, QGIS, pyogrio and geopandas list every table registered in
    ``gpkg_contents`` as a layer (QGIS then asks which to add; geopandas warns), and with
    GDAL's default ``LIST_ALL_TABLES=AUTO`` they list unregistered tables too. Metadata is
    what the extension is for: the buildings stay the one layer, ``ogrinfo`` and QGIS's layer
    properties show the run metadata, and :func:`read_run_tables` gives both back.

    ``tables`` holds ``fastsam_geo_metadata`` (a dict, or key/value columns) and
    ``fastsam_geo_tiles`` (rows: a list of dicts, a :class:`~fastsam_geo.vectorio.Table` or a DataFrame).
    """
    import json

    items = _metadata_items(tables.get("fastsam_geo_metadata"))
    rows = _tile_rows(tables.get("fastsam_geo_tiles"))
    tiles_json = json.dumps(rows, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    conn = sqlite3.connect(path)
    try:
        with conn:
            conn.executescript(_GPKG_METADATA_DDL)
            for name in ("gpkg_metadata", "gpkg_metadata_reference"):
                conn.execute(
                    "INSERT INTO gpkg_extensions (table_name, column_name, extension_name, definition, scope) "
                    "SELECT ?, NULL, 'gpkg_metadata', ?, 'read-write' WHERE NOT EXISTS "
                    "(SELECT 1 FROM gpkg_extensions WHERE table_name = ? AND extension_name = 'gpkg_metadata')",
                    (name, _EXT, name),
                )
            cur = conn.execute(
                "INSERT INTO gpkg_metadata (md_scope, md_standard_uri, mime_type, metadata) "
                "VALUES ('dataset', 'http://gdal.org', 'text/xml', ?)",
                (_gdal_metadata_xml(items, tiles_json),),
            )
            conn.execute(
                "INSERT INTO gpkg_metadata_reference (reference_scope, table_name, md_file_id) VALUES ('table', ?, ?)",
                (layer, cur.lastrowid),
            )
    finally:
        conn.close()


def read_run_tables(path: str | os.PathLike[str], layer: str = LAYER) -> tuple[dict[str, str], vectorio.Table]:
    """The run metadata (a dict) and the tile table (a :class:`~fastsam_geo.vectorio.Table` of
    tile_id, status, objects, error) of an output GeoPackage written by fastsam-geo; empty when it has none."""
    import json
    import xml.etree.ElementTree as ET

    conn = sqlite3.connect(f"file:{os.fspath(path)}?mode=ro", uri=True)
    try:
        rows = conn.execute(
            "SELECT m.metadata FROM gpkg_metadata m JOIN gpkg_metadata_reference r ON r.md_file_id = m.id "
            "WHERE r.reference_scope = 'table' AND r.table_name = ? AND m.md_standard_uri = 'http://gdal.org'",
            (layer,),
        ).fetchall()
    except sqlite3.OperationalError:
        rows = []
    finally:
        conn.close()
    meta: dict[str, str] = {}
    tiles: list[dict[str, object]] = []
    for (xml,) in rows:
        for md in ET.fromstring(xml).iter("Metadata"):
            for mdi in md.iter("MDI"):
                if md.get("domain") == TILES_DOMAIN and mdi.get("key") == "tiles":
                    tiles.extend(json.loads(mdi.text or "[]"))
                elif md.get("domain") is None:
                    meta[str(mdi.get("key"))] = mdi.text or ""
    cols = {c: vectorio._json_column([t.get(c) for t in tiles]) for c in TILE_COLUMNS}
    return meta, vectorio.Table(cols, len(tiles))


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
            q = vectorio._quote
            rtree = f"rtree_{layer}_{geom}"
            keys = []
            for k in order_by:
                keys += ["t.minx", "t.maxy DESC", "t.maxx", "t.miny"] if k == "bounds" else [f"b.{q(k)}"]
            triggers = conn.execute(
                "SELECT name, sql FROM sqlite_master WHERE type = 'trigger' AND tbl_name = ?", (layer,)
            ).fetchall()
            for name, _ in triggers:
                conn.execute(f"DROP TRIGGER {q(name)}")
            conn.execute("CREATE TEMP TABLE _fastsam_order (f INTEGER PRIMARY KEY, n INTEGER)")
            conn.execute(
                f"INSERT INTO _fastsam_order SELECT b.fid, ROW_NUMBER() OVER (ORDER BY {', '.join(keys)}, b.fid) "
                f"FROM {q(layer)} b LEFT JOIN {q(rtree)} t ON t.id = b.fid"
            )
            conn.execute(f"UPDATE {q(layer)} SET id = (SELECT n FROM _fastsam_order WHERE f = {q(layer)}.fid)")
            conn.execute("DROP TABLE _fastsam_order")
            for _, sql in triggers:
                conn.execute(sql)
    finally:
        conn.close()


@contextlib.contextmanager
def _write_errors(output: Path) -> Iterator[None]:
    """Turn a full disk or a read-only folder met while writing into one OutputError line."""
    from fastsam_geo.errors import describe_os_error

    try:
        yield
    except OutputError:
        raise
    except Exception as exc:  # OSError, sqlite3 and pyogrio errors alike
        message = describe_os_error(exc, output)
        if message is None and _nearly_full(output.parent):
            # GDAL reports a full disk as whatever failed next ("no such table: gpkg_contents")
            message = describe_os_error(OSError(errno.ENOSPC, "No space left on device"), output)
        if message is None:
            raise
        raise OutputError(message) from None


def _nearly_full(folder: Path, margin: int = 256 << 10) -> bool:
    """True when the file system of ``folder`` has less than ``margin`` bytes left."""
    try:
        st = os.statvfs(folder if str(folder) else ".")
    except OSError:
        return False
    return st.f_bavail * st.f_frsize < margin


class VectorWriter:
    """Incremental, atomic writer of the ``buildings`` layer.

    Polygons go to a staging GeoPackage beside the output, ``FLUSH_ROWS`` at a time.

    >>> import tempfile
    >>> d = tempfile.mkdtemp()
    >>> with VectorWriter(f"{d}/b.gpkg", "EPSG:32633") as w:
    ...     n = w.write(np.array([shapely.box(500000, 4649900, 500010, 4649910)]), {"score": [0.9]})
    ...     path = w.commit()
    >>> f = vectorio.read_features(path, layer="buildings")
    >>> int(f.columns.id[0]), float(f.columns.area_m2[0]), f.crs.to_epsg()
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
        self._buffer: list[tuple[np.ndarray, dict[str, np.ndarray]]] = []
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

        Rows are buffered and written ``FLUSH_ROWS`` at a time, one transaction per batch.
        """
        geoms = np.asarray(geoms, dtype=object)
        n = len(geoms)
        if n == 0:
            return 0
        data: dict[str, np.ndarray] = {"id": np.arange(self.count + 1, self.count + n + 1, dtype=np.int64)}
        data.update({k: vectorio._as_array(v) for k, v in columns.items()})
        data["area_m2"] = np.round(area_m2(geoms, self.crs), 2)
        self._buffer.append((geoms, data))
        self._buffered += n
        self.count += n
        if self._buffered >= self.FLUSH_ROWS:
            self.flush()
        return n

    def flush(self) -> None:
        """Write the buffered rows to the staging GeoPackage (the layer is made on the first flush)."""
        if not self._buffer:
            return
        batch, self._buffer, self._buffered = self._buffer, [], 0
        geoms = np.concatenate([g for g, _ in batch])
        names = list(batch[0][1])
        cols = {k: np.concatenate([vectorio._as_array(d[k]) for _, d in batch]) for k in names}
        with _write_errors(self.output):
            if not self._staging.exists():
                schema = {k: vectorio.column_type(v) for k, v in cols.items()}
                vectorio.create_layer(self._staging, self.layer, self.crs, schema, "POLYGON")
            vectorio.append_features(self._staging, self.layer, geoms, cols)

    def commit(
        self,
        tables: Mapping[str, object] | None = None,
        empty_schema: Mapping[str, str] | None = None,
        order_by: Sequence[str] | None = None,
    ) -> Path:
        """Finish: add tables (GeoPackage only), convert if needed, move into place.

        ``order_by``: renumber ``id`` 1..N by these columns (``"bounds"`` stands for the
        polygon's bounding box), so that ids do not depend on the order rows arrived in.
        """
        try:
            with _write_errors(self.output):
                self._commit(tables, empty_schema, order_by)
        except BaseException:
            self.abort()
            raise
        self._done = True
        if self._staging.exists():
            self._staging.unlink()
        return self.output

    def _commit(
        self,
        tables: Mapping[str, object] | None,
        empty_schema: Mapping[str, str] | None,
        order_by: Sequence[str] | None,
    ) -> None:
        self.flush()
        if order_by and self._staging.exists():
            renumber_ids(self._staging, self.layer, order_by)
        if not self._staging.exists():
            schema = {"id": "int64", **dict(empty_schema or {}), "area_m2": "float64"}
            types = {k: vectorio.sql_type(v) for k, v in schema.items()}
            vectorio.create_layer(self._staging, self.layer, self.crs, types, "POLYGON")
        if self.driver == "GPKG":
            write_run_tables(self._staging, tables or {}, self.layer)
            os.replace(self._staging, self.output)
            return
        final_tmp = self.output.with_name(f".{self.output.name}.{uuid.uuid4().hex[:8]}.tmp{self.output.suffix}")
        try:
            feats = vectorio.read_features(self._staging, layer=self.layer)
            if "id" in feats.columns:
                feats = feats.take(np.argsort(feats.columns.id, kind="stable"))
            cols = feats.columns.columns
            if self.driver == "GeoJSON":
                vectorio.write_geojson(final_tmp, self.layer, feats.geometry, cols, self.crs)
            else:
                vectorio.write_with_pyogrio(final_tmp, self.layer, feats.geometry, cols, self.crs, self.driver)
            os.replace(final_tmp, self.output)
        finally:
            final_tmp.unlink(missing_ok=True)

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
