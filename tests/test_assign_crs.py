"""A raster without a CRS: the error suggests a CRS that fits its coordinates, and
``extract --assign-crs`` (``extract_buildings(assign_crs=...)``) reads it as if it had that CRS."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.windows import Window

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "sample_tiles" / "town_s7_1024.tif"
FSG = [sys.executable, "-m", "fastsam_geo", "-q"]
ENV = {**os.environ, "YOLO_OFFLINE": "1", "YOLO_VERBOSE": "False"}


def _crop(path: Path, crs: bool) -> Path:
    """The sample tile's 384 x 384 px north-west corner, with or without its CRS."""
    with rasterio.open(SAMPLE) as ds:
        window = Window(0, 0, 384, 384)
        profile = {**ds.profile, "width": 384, "height": 384, "transform": ds.window_transform(window)}
        data = ds.read(window=window)
    if not crs:
        profile.pop("crs", None)
    with rasterio.open(path, "w", **profile) as out:
        out.write(data)
    return path


def _polygons(gpkg: Path) -> tuple[int, int, list[str]]:
    con = sqlite3.connect(gpkg)
    try:
        n = con.execute("SELECT count(*) FROM buildings").fetchone()[0]
        srs = con.execute("SELECT srs_id FROM gpkg_geometry_columns WHERE table_name = 'buildings'").fetchone()[0]
        wkb = sorted(r[0].hex() for r in con.execute("SELECT geom FROM buildings"))
    finally:
        con.close()
    return n, srs, wkb


@pytest.mark.model
def test_assign_crs_reads_a_raster_without_one(tmp_path: Path) -> None:
    nocrs = _crop(tmp_path / "nocrs.tif", crs=False)
    ref = _crop(tmp_path / "ref.tif", crs=True)
    out = tmp_path / "out.gpkg"
    common = ["--tile-size", "384", "--overlap", "0", "--no-cache"]

    r = subprocess.run([*FSG, "extract", str(nocrs), str(out), *common], capture_output=True, text=True, env=ENV)
    errors = [line for line in r.stderr.splitlines() if line.startswith("Error:")]
    assert r.returncode == 1 and len(errors) == 1 and "Traceback" not in r.stderr, r.stderr
    # metres of a projected CRS: a projected example, to be checked; never the degrees' EPSG:4326
    assert "has no CRS" in errors[0] and "--assign-crs EPSG:32633" in errors[0] and "check" in errors[0]
    assert not out.exists()

    r = subprocess.run(
        [*FSG, "extract", str(nocrs), str(out), *common, "--assign-crs", "EPSG:32633"],
        capture_output=True,
        text=True,
        env=ENV,
    )
    assert r.returncode == 0, r.stderr
    r = subprocess.run([*FSG, "extract", str(ref), str(tmp_path / "ref.gpkg"), *common], capture_output=True, env=ENV)
    assert r.returncode == 0
    n, srs, wkb = _polygons(out)
    assert srs == 32633 and n > 5
    assert (n, srs, wkb) == _polygons(tmp_path / "ref.gpkg")  # as if the file had the CRS
    with rasterio.open(nocrs) as ds:
        assert ds.crs is None  # the file is not touched

    r = subprocess.run(
        [*FSG, "extract", str(nocrs), str(tmp_path / "bad.gpkg"), *common, "--assign-crs", "EPSG:nope"],
        capture_output=True,
        text=True,
        env=ENV,
    )
    assert r.returncode == 1 and "assigned CRS 'EPSG:nope' is not a CRS" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "bad.gpkg").exists()


def test_a_raster_in_degrees_is_told_epsg_4326(tmp_path: Path) -> None:
    from affine import Affine

    from fastsam_geo.errors import RasterError
    from fastsam_geo.raster import RasterSource

    path = tmp_path / "deg.tif"
    transform = Affine(1e-5, 0, 9.52, 0, -1e-5, 45.41)
    profile = {"driver": "GTiff", "width": 64, "height": 64, "count": 3, "dtype": "uint8", "transform": transform}
    with rasterio.open(path, "w", **profile) as ds:
        ds.write(np.zeros((3, 64, 64), np.uint8))
    with pytest.raises(RasterError, match=r"deg\.tif: raster has no CRS; .*degrees.*-a_srs EPSG:4326"):
        RasterSource(path)
    with RasterSource(path, assign_crs="EPSG:4326") as src:
        assert src.info.crs.to_epsg() == 4326 and src.info.is_geographic


def test_assign_crs_over_the_files_own_crs_is_said(tmp_path: Path) -> None:
    """--assign-crs replaces a CRS the file has (as gdal_translate -a_srs): EPSG:32634 over EPSG:32633 moved
    every building 600 km with exit 0 and nothing said. It still runs, and says so once; the same CRS is
    not worth a word."""
    raster = _crop(tmp_path / "own.tif", crs=True)
    args = ["--tile-size", "384", "--overlap", "0", "--tta", "1", "--no-cache"]
    cmd = [sys.executable, "-m", "fastsam_geo", "extract", str(raster)]
    other = subprocess.run([*cmd, str(tmp_path / "a.gpkg"), *args, "--assign-crs", "EPSG:32634"],
                           capture_output=True, text=True, env=ENV, timeout=300)  # fmt: skip
    assert other.returncode == 0, other.stderr
    said = [ln for ln in other.stderr.splitlines() if "has its own CRS" in ln]
    assert len(said) == 1 and "EPSG:32633" in said[0] and "EPSG:32634" in said[0], other.stderr
    same = subprocess.run([*cmd, str(tmp_path / "b.gpkg"), *args, "--assign-crs", "EPSG:32633"],
                          capture_output=True, text=True, env=ENV, timeout=300)  # fmt: skip
    assert same.returncode == 0 and "has its own CRS" not in same.stderr, same.stderr
