"""vectorio against GDAL: what it writes, pyogrio/geopandas read identically (no warning), and
what GDAL writes, it reads identically. Real files both ways."""

from __future__ import annotations

import sqlite3
import sys
import warnings
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pyogrio
import pytest
import shapely
from pyproj import CRS

from fastsam_geo import vectorio
from fastsam_geo.vectorio import Features, list_layers, read_features, write_geojson, write_gpkg

UTM = CRS.from_epsg(32633)
LAEA = CRS.from_proj4("+proj=laea +lat_0=45.1 +lon_0=15.2 +datum=WGS84 +units=m +no_defs")


def _geoms() -> np.ndarray:
    g = [shapely.box(500000 + 20 * i, 4649900 + 7 * i, 500010 + 20 * i, 4649910 + 7 * i) for i in range(6)]
    g[2] = shapely.Polygon([(0, 0), (4, 0), (4, 4), (0, 4)], [[(1, 1), (2, 1), (2, 2), (1, 2)]])  # a hole
    return np.array(g, dtype=object)


def _columns(n: int) -> dict[str, object]:
    return {
        "id": np.arange(1, n + 1, dtype=np.int64),
        "score": np.linspace(0.1, 0.9, n),
        "f32": np.linspace(1, 2, n).astype(np.float32),
        "i32": np.arange(n, dtype=np.int32),
        "flag": np.arange(n) % 2 == 0,
        "name": [f"b{i}" if i != 3 else None for i in range(n)],
    }


def _read_strict(path: Path, **kw: object) -> gpd.GeoDataFrame:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        return gpd.read_file(path, **kw)


@pytest.mark.parametrize("crs", [UTM, LAEA], ids=["epsg", "custom-wkt"])
def test_gpkg_written_here_reads_identically_in_gdal(tmp_path: Path, crs: CRS) -> None:
    path = tmp_path / "b.gpkg"
    geoms, cols = _geoms(), _columns(6)
    write_gpkg(path, "buildings", geoms, cols, crs)
    df = _read_strict(path, layer="buildings")
    assert list(df.columns) == [*cols, "geometry"]
    assert df.crs.equals(crs) and (df.crs.to_epsg() == 32633) == (crs is UTM)
    assert all(shapely.equals_exact(np.asarray(df.geometry.values), geoms, 0))
    assert df.id.dtype == np.int64 and df.i32.dtype == np.int32 and df.f32.dtype == np.float32
    assert df.flag.dtype == bool and df.flag.tolist() == list(cols["flag"])
    assert df.score.tolist() == cols["score"].tolist() and df.f32.tolist() == cols["f32"].tolist()
    assert df.name.isna().tolist() == [False, False, False, True, False, False]
    info = pyogrio.read_info(path, layer="buildings")
    assert info["geometry_type"] == "Polygon" and info["features"] == 6 and info["fid_column"] == "fid"
    assert pyogrio.list_layers(path).tolist() == [["buildings", "Polygon"]]
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA application_id").fetchone()[0] == 0x47504B47
        assert conn.execute("PRAGMA user_version").fetchone()[0] == 10200
        org, code = conn.execute(
            "SELECT s.organization, s.organization_coordsys_id FROM gpkg_spatial_ref_sys s "
            "JOIN gpkg_contents c ON c.srs_id = s.srs_id"
        ).fetchone()
        assert (org, code) == ("EPSG", 32633) if crs is UTM else (org == "NONE" and code >= 100000)
        ext = conn.execute("SELECT min_x, min_y, max_x, max_y FROM gpkg_contents").fetchone()
        rtree = conn.execute("SELECT id, minx, maxx, miny, maxy FROM rtree_buildings_geom ORDER BY id").fetchall()
        fids = [r[0] for r in conn.execute("SELECT fid FROM buildings ORDER BY fid")]
    finally:
        conn.close()
    assert ext == pytest.approx(tuple(shapely.total_bounds(geoms)))
    b = shapely.bounds(geoms)
    assert [r[0] for r in rtree] == fids == [1, 2, 3, 4, 5, 6]
    # R-tree boxes are float32, rounded outwards: they must hold each geometry's bounds
    for r, (x0, y0, x1, y1) in zip(rtree, b, strict=True):
        assert r[1] <= x0 and r[2] >= x1 and r[3] <= y0 and r[4] >= y1
    back = read_features(path)
    assert back.crs.equals(crs) and all(shapely.equals_exact(back.geometry, geoms, 0))


def test_empty_and_missing_geometries_and_batches(tmp_path: Path) -> None:
    path = tmp_path / "e.gpkg"
    geoms = np.array([shapely.box(0, 0, 1, 1), shapely.Polygon(), None, shapely.box(5, 5, 6, 7)], dtype=object)
    vectorio.create_layer(path, "buildings", UTM, {"id": "INTEGER"})
    for part in (slice(0, 2), slice(2, 4)):  # two batches, two transactions
        vectorio.append_features(path, "buildings", geoms[part], {"id": np.arange(4)[part]})
    df = _read_strict(path)
    assert df.geometry.isna().tolist() == [False, False, True, False]
    assert df.geometry.iloc[1].is_empty and df.id.tolist() == [0, 1, 2, 3]
    conn = sqlite3.connect(path)
    assert [r[0] for r in conn.execute("SELECT id FROM rtree_buildings_geom ORDER BY id")] == [1, 4]
    assert conn.execute("SELECT min_x, min_y, max_x, max_y FROM gpkg_contents").fetchone() == (0, 0, 6, 7)
    assert conn.execute("SELECT feature_count FROM gpkg_ogr_contents").fetchone() == (4,)
    assert conn.execute("SELECT hex(substr(geom, 1, 4)) FROM buildings WHERE fid = 2").fetchone() == ("47500011",)
    conn.close()
    back = read_features(path)
    assert back.geometry[1].is_empty and back.geometry[2] is None


def test_an_empty_layer_and_gdal_appending_to_it(tmp_path: Path) -> None:
    path = tmp_path / "a.gpkg"
    vectorio.create_layer(path, "buildings", UTM, {"id": "INTEGER", "name": "TEXT"})
    assert len(_read_strict(path)) == 0 and pyogrio.read_info(path)["crs"] == "EPSG:32633"
    write_more = gpd.GeoDataFrame({"id": [7], "name": ["new"]}, geometry=[shapely.box(10, 20, 30, 40)], crs=UTM)
    pyogrio.write_dataframe(write_more, path, layer="buildings", append=True)
    vectorio.append_features(path, "buildings", np.array([shapely.box(1, 2, 3, 4)]), {"id": [8], "name": ["x"]})
    pyogrio.write_dataframe(write_more, path, layer="buildings", append=True)
    conn = sqlite3.connect(path)
    rows = conn.execute("SELECT id, minx, miny, maxx, maxy FROM rtree_buildings_geom ORDER BY id").fetchall()
    assert rows == [(1, 10, 20, 30, 40), (2, 1, 2, 3, 4), (3, 10, 20, 30, 40)]  # GDAL's triggers kept it right
    assert conn.execute("SELECT feature_count FROM gpkg_ogr_contents").fetchone() == (3,)
    conn.close()
    assert _read_strict(path).id.tolist() == [7, 8, 7]


def test_gdal_inserts_into_a_file_written_here(tmp_path: Path) -> None:
    path = tmp_path / "b.gpkg"
    write_gpkg(path, "buildings", _geoms(), _columns(6), UTM)
    row = gpd.GeoDataFrame(
        {k: v[:1] for k, v in gpd.read_file(path).drop(columns="geometry").items()},
        geometry=[shapely.box(600000, 4700000, 600010, 4700020)],
        crs=UTM,
    )
    pyogrio.write_dataframe(row, path, layer="buildings", append=True)
    conn = sqlite3.connect(path)
    assert conn.execute("SELECT minx, miny, maxx, maxy FROM rtree_buildings_geom WHERE id = 7").fetchone() == (
        600000,
        4700000,
        600010,
        4700020,
    )
    conn.close()
    df = _read_strict(path)
    assert len(df) == 7 and pyogrio.read_info(path)["total_bounds"][2:] == (600010, 4700020)
    # and the file still reads here, the new row included
    assert len(read_features(path)) == 7


def _mixed_frame(crs: object) -> gpd.GeoDataFrame:
    multi = shapely.MultiPolygon([shapely.box(0, 0, 1, 1), shapely.box(3, 3, 4, 5)])
    return gpd.GeoDataFrame(
        {
            "n": [1, 2, 3, 4],
            "x": [0.5, np.nan, 2.25, 3.0],
            "t": ["a", None, "ü", "d"],
        },
        geometry=[shapely.box(0, 0, 2, 2), multi, shapely.MultiPolygon(), None],
        crs=crs,
    )


@pytest.mark.parametrize("suffix", [".gpkg", ".geojson"])
def test_reading_what_gdal_wrote(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"mix{suffix}"
    crs = "EPSG:32633" if suffix == ".gpkg" else "EPSG:4326"
    _mixed_frame(crs).to_file(path, layer="mix")
    ref = gpd.read_file(path)
    got = read_features(path)
    assert got.layer == "mix" and list_layers(path) == [(n, t) for n, t in pyogrio.list_layers(path).tolist()]
    assert got.crs.equals(ref.crs) and got.crs.to_epsg() == int(crs.split(":")[1])
    assert list(got.columns.columns) == ["n", "x", "t"]
    assert got.columns.n.tolist() == [1, 2, 3, 4] and got.columns.n.dtype == np.int64
    assert np.array_equal(got.columns.x, ref.x.to_numpy(), equal_nan=True)
    assert got.columns.t.tolist() == ["a", None, "ü", "d"]
    for a, b in zip(got.geometry, ref.geometry, strict=True):
        assert (a is None and b is None) or (a is not None and b is not None and a.equals_exact(b, 0)), (a, b)
    assert got.geometry[1].geom_type == "MultiPolygon" and got.geometry[2].is_empty


def test_gdal_envelopes_iso_wkb_and_integers_with_nulls(tmp_path: Path) -> None:
    """GDAL writes Z geometries as ISO WKB with an x/y/z envelope (type 2), points with none."""
    path = tmp_path / "z.gpkg"
    k = pd.array([1, None], dtype="Int64")  # an INTEGER column with a null
    z = gpd.GeoDataFrame({"k": k}, geometry=[shapely.Polygon([(0, 0, 1), (1, 0, 2), (1, 1, 3)]), None])
    z.set_crs(32633).to_file(path, layer="z")
    pts = gpd.GeoDataFrame({"v": ["p"]}, geometry=[shapely.Point(3, 4)], crs=4326)
    pts.to_file(path, layer="pts")
    conn = sqlite3.connect(path)
    assert conn.execute("SELECT substr(hex(geom), 7, 2) FROM z WHERE fid = 1").fetchone() == ("05",)  # envelope 2
    conn.close()
    assert list_layers(path) == [(n, t) for n, t in pyogrio.list_layers(path).tolist()]
    got = read_features(path, layer="z")
    assert shapely.has_z(got.geometry[0]) and got.geometry[0].equals_exact(z.geometry[0], 0) and got.geometry[1] is None
    assert got.columns.k.tolist() == [1, None]  # an integer column with a null keeps its integers
    p = read_features(path, layer="pts")
    assert p.geometry[0].equals(shapely.Point(3, 4)) and p.crs.to_epsg() == 4326
    with pytest.raises(vectorio.VectorFormatError, match="no layer 'nope'"):
        read_features(path, layer="nope")


@pytest.mark.parametrize("crs", [UTM, CRS.from_epsg(4326), LAEA], ids=["utm", "wgs84", "custom"])
def test_geojson_written_here_reads_identically_in_gdal(tmp_path: Path, crs: CRS) -> None:
    path = tmp_path / "b.geojson"
    geoms, cols = _geoms(), _columns(6)
    cols["score"][1] = np.nan
    write_geojson(path, "buildings", geoms, cols, crs)
    df = _read_strict(path)
    assert df.crs.equals(crs) or (crs is LAEA and df.crs.to_wkt() == LAEA.to_wkt())
    assert all(shapely.equals_exact(np.asarray(df.geometry.values), geoms, 0))
    assert df.id.tolist() == list(cols["id"]) and df.flag.tolist() == list(cols["flag"])
    assert df.score.isna().tolist() == [False, True, False, False, False, False]
    assert pyogrio.list_layers(path).tolist() == [["buildings", "Polygon"]]
    back = read_features(path)
    assert back.crs.equals(crs) and all(shapely.equals_exact(back.geometry, geoms, 0))
    assert back.columns.name.tolist() == cols["name"] and back.columns.flag.tolist() == list(cols["flag"])


def test_other_formats_through_pyogrio_or_one_line_naming_the_extra(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "mix.shp"
    _mixed_frame("EPSG:32633").iloc[:2].to_file(path)
    got = read_features(path)
    assert got.crs.to_epsg() == 32633 and got.columns.n.tolist() == [1, 2] and len(got) == 2
    monkeypatch.setitem(sys.modules, "pyogrio", None)  # as in the light install: not importable
    with pytest.raises(vectorio.VectorFormatError) as info:
        read_features(path)
    assert 'pip install "fastsam-geo[vector]"' in str(info.value) and "\n" not in str(info.value)


def test_features_of_and_take() -> None:
    f = Features.of([shapely.box(0, 0, 1, 1), shapely.box(0, 0, 2, 2)], "EPSG:32633", score=[0.1, 0.2])
    t = f.take(np.array([1]))
    assert len(t) == 1 and t.columns.score.tolist() == [0.2] and t.geometry[0].area == 4.0


@pytest.mark.parametrize("layer", ["it's", 'q"uote', "O'Brien \"north\" sheet"])
def test_layer_names_with_quotes(tmp_path: Path, layer: str) -> None:
    """A layer named after a raster such as ``O'Brien.tif``: triggers, counts and ids all work."""
    from fastsam_geo.output import renumber_ids

    path = tmp_path / "q.gpkg"
    write_gpkg(path, layer, _geoms(), _columns(6), UTM)
    renumber_ids(path, layer, ("bounds",))
    conn = sqlite3.connect(path)
    assert conn.execute("SELECT feature_count FROM gpkg_ogr_contents WHERE table_name = ?", (layer,)).fetchone() == (6,)
    conn.close()
    assert [name for name, _ in pyogrio.list_layers(path)] == [layer]
    df = gpd.read_file(path, layer=layer)
    assert len(df) == 6 and pyogrio.read_info(path, layer=layer)["features"] == 6
    assert len(read_features(path, layer)) == 6
    # GDAL appends through the triggers: the count and the R-tree follow
    pyogrio.write_dataframe(df.iloc[:1], path, layer=layer, append=True)
    assert pyogrio.read_info(path, layer=layer)["features"] == 7 and len(read_features(path, layer)) == 7
