"""Sheets as one surface: --mosaic on sheets cut from real imagery gives the uncut raster's buildings.

A 1024 x 1024 px crop (its densest part) of the real Banepa mosaic (../shared/data/real/banepa/) is cut into 4
sheets of 512 px; `extract --mosaic` over the sheets must find the buildings that an
extraction of the uncut crop finds (F1 >= 0.99), including those on the sheet edges, and
say which sheets each polygon lies on. Rasters that cannot form a mosaic are refused with
one line naming the files.
"""

from __future__ import annotations

from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import rasterio
import shapely
from click.testing import CliRunner
from rasterio.windows import Window

from fastsam_geo.cli import main
from fastsam_geo.errors import RasterError
from fastsam_geo.evaluate import evaluate
from fastsam_geo.mosaic import write_vrt

REPO = Path(__file__).resolve().parents[1]
BANEPA = REPO.parent / "shared" / "data" / "real" / "banepa" / "banepa_west.tif"
WEIGHTS = REPO / "weights" / "fastsam-geo-town-n.pt"
CROP = Window(1024, 1024, 1024, 1024)


def _write(path: Path, data: np.ndarray, profile: dict, transform: object) -> Path:
    p = {**profile, "width": data.shape[2], "height": data.shape[1], "transform": transform}
    p.update(compress="deflate", photometric="RGB", tiled=True, blockxsize=256, blockysize=256)
    p.pop("jpeg_quality", None)
    with rasterio.open(path, "w", **p) as ds:
        ds.write(data)
    return path


@pytest.fixture(scope="module")
def sheets(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Path]]:
    """(uncut crop, its 4 sheets) of the real Banepa imagery; skips when ../shared is absent."""
    if not BANEPA.exists():
        pytest.skip(f"real imagery not available: {BANEPA} is absent (it is never committed)")
    d = tmp_path_factory.mktemp("sheets")
    with rasterio.open(BANEPA) as ds:
        prof = ds.profile
        whole = _write(d / "uncut.tif", ds.read(window=CROP), prof, ds.window_transform(CROP))
        out = []
        for r in range(2):
            for c in range(2):
                w = Window(CROP.col_off + 512 * c, CROP.row_off + 512 * r, 512, 512)
                out.append(_write(d / f"sheet_{r}{c}.tif", ds.read(window=w), prof, ds.window_transform(w)))
    return whole, out


def test_mosaic_of_sheets_finds_the_uncut_rasters_buildings(sheets, tmp_path: Path) -> None:
    whole, parts = sheets
    run = ["-q", "extract", "-w", str(WEIGHTS), "--tile-size", "256", "--overlap", "32", "--no-cache", "--tta", "1"]
    res = CliRunner().invoke(main, [*run, str(whole), str(tmp_path / "uncut.gpkg")])
    assert res.exit_code == 0, res.output
    res = CliRunner().invoke(main, [*run, *map(str, parts), str(tmp_path / "mosaic.gpkg"), "--mosaic"])
    assert res.exit_code == 0, res.output
    uncut = gpd.read_file(tmp_path / "uncut.gpkg", layer="buildings")
    mosaic = gpd.read_file(tmp_path / "mosaic.gpkg", layer="buildings")
    assert len(uncut) >= 20
    scores = evaluate(mosaic, uncut)
    assert scores.f1 >= 0.99, scores
    # Buildings on the sheet edges: one polygon that lies on two (or four) sheets.
    with rasterio.open(parts[0]) as ds:
        x_edge, y_edge = ds.bounds.right, ds.bounds.bottom
    edges = [shapely.LineString([(x_edge, -90), (x_edge, 90)]), shapely.LineString([(-180, y_edge), (180, y_edge)])]
    on_edge_uncut = uncut[uncut.crosses(edges[0]) | uncut.crosses(edges[1])]
    on_edge = mosaic[mosaic.sheets.str.contains(";")]
    assert len(on_edge) == len(on_edge_uncut) >= 3
    assert evaluate(on_edge, on_edge_uncut).f1 >= 0.99
    names = {p.name for p in parts}
    assert all(set(s.split(";")) <= names for s in mosaic.sheets)
    assert not list(tmp_path.glob(".*.vrt"))  # the mosaic VRT is not left behind


def test_rasters_that_cannot_form_a_mosaic_are_refused_naming_them(sheets, tmp_path: Path) -> None:
    whole, parts = sheets
    with rasterio.open(parts[1]) as ds:
        prof, data, t = ds.profile, ds.read(), ds.transform
    shifted = _write(tmp_path / "shifted.tif", data, prof, t * rasterio.Affine.translation(0.5, 0))
    coarse = _write(tmp_path / "coarse.tif", data[:, ::2, ::2], prof, t * rasterio.Affine.scale(2))
    other_crs = tmp_path / "utm.tif"
    _write(other_crs, data, {**prof, "crs": "EPSG:32645"}, rasterio.Affine(0.15, 0, 340000, 0, -0.15, 3058000))
    edited = data.copy()
    edited[:, :50, :50] = 0
    overlap_t = t * rasterio.Affine.translation(-256, 0)  # half over sheet_00, with other pixels
    overlapping = _write(tmp_path / "overlap.tif", edited, prof, overlap_t)
    cases = [
        (shifted, "pixel grids are not aligned"),
        (coarse, "other resolution"),
        (other_crs, "other CRS"),
        (overlapping, "overlap with different pixels"),
    ]
    for bad, why in cases:
        with pytest.raises(RasterError, match=why) as err:
            write_vrt([parts[0], bad], tmp_path / "m.vrt")
        assert bad.name in str(err.value) and "\n" not in str(err.value)
        res = CliRunner().invoke(main, ["extract", str(parts[0]), str(bad), str(tmp_path / "o.gpkg"), "--mosaic"])
        assert res.exit_code == 1 and why in res.output and res.output.count("\n") == 1, res.output
        assert not (tmp_path / "o.gpkg").exists() and not list(tmp_path.glob(".*.vrt"))
    # Overlap with the same pixels is fine.
    with rasterio.open(whole) as ds:
        w = Window(256, 0, 512, 512)
        same = _write(tmp_path / "same.tif", ds.read(window=w), prof, ds.window_transform(w))
    assert len(write_vrt([parts[0], parts[1], same], tmp_path / "ok.vrt")) == 3


def test_a_mosaic_reads_the_same_pixels_every_time(tmp_path: Path) -> None:
    """GDAL 3.10 reads a VRT's sources on several threads; a resampled read of a window across the sheet
    seams then gave other pixels now and then (1-2 of 40 reads under load), and a mosaic other polygons
    from run to run. The reader reads VRTs on one thread."""
    import hashlib

    from fastsam_geo.raster import RasterSource
    from fastsam_geo.synthetic import write_scene

    scene = write_scene(tmp_path / "s.tif", 1024, seed=3)
    with rasterio.open(scene.raster) as ds:
        quads = [
            _write(tmp_path / f"q{r}{c}.tif", ds.read(window=w), ds.profile, ds.window_transform(w))
            for r in range(2)
            for c in range(2)
            for w in [Window(512 * c, 512 * r, 512, 512)]
        ]
    write_vrt(quads, tmp_path / "all.vrt")
    with RasterSource(tmp_path / "all.vrt", gsd=0.25) as src:  # 0.5 m sheets read 2x finer: resampled
        seen = {hashlib.sha256(src.read(Window(900, 900, 1024, 1024))[0].tobytes()).hexdigest() for _ in range(40)}
    assert len(seen) == 1
