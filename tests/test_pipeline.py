"""The whole engine with an oracle segmenter: tiles, vectorize, seam merge, write.

With the true masks of each tile the pipeline must give back the truth: any loss is the
pipeline's fault (seams cut, duplicates in overlaps, wrong georeferencing).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import geopandas as gpd
import numpy as np
import pyogrio
import pytest
import rasterio
import rasterio.features
import shapely
from affine import Affine
from pyproj import Geod
from rasterio.enums import ColorInterp
from rasterio.windows import Window

from fastsam_geo.errors import Cancelled, OutputError, RasterError
from fastsam_geo.evaluate import evaluate, seam_lines
from fastsam_geo.oracle import TruthSegmenter
from fastsam_geo.output import read_run_tables
from fastsam_geo.pipeline import extract_buildings
from fastsam_geo.raster import RasterSource
from fastsam_geo.synthetic import Scene, render_block, write_scene
from fastsam_geo.tiling import TileGrid


def run_oracle(raster: Path, truth: gpd.GeoDataFrame, out: Path, tile: int = 256, overlap: int = 32, **kw: object):
    summary = extract_buildings(
        raster,
        out,
        segmenter=TruthSegmenter(truth),
        tile_size=tile,
        overlap=overlap,
        building_filter=False,
        overwrite=True,
        **kw,
    )
    with RasterSource(raster) as src:
        grid = TileGrid(src.info.width, src.info.height, tile, overlap, src.info.transform)
    pred = gpd.read_file(out, layer="buildings")
    return summary, pred, evaluate(pred, truth, seams=seam_lines(grid))


def test_oracle_on_a_synthetic_scene_gives_back_the_truth(tmp_path: Path) -> None:
    scene = write_scene(tmp_path / "town.tif", 1024, seed=11)
    summary, pred, scores = run_oracle(scene.raster, scene.truth, tmp_path / "out.gpkg")
    assert scores.f1 >= 0.99, scores
    assert scores.seam_total >= 20  # the test means something only if many buildings cross seams
    assert scores.seam_score == 1.0, scores
    assert summary.seam_merged > 0
    assert summary.tiles_total == summary.tiles_processed == 25
    assert pred.crs == scene.truth.crs
    assert {"id", "score", "area_m2", "tile_ids", "seam_merged", "prompt"} <= set(pred.columns)
    assert pred.id.is_unique
    assert shapely.is_valid(pred.geometry.values).all()
    # Courtyards keep their holes.
    assert (shapely.get_num_interior_rings(pred.geometry.values) > 0).any()
    # area_m2 is the true ground area (UTM shrinks by 0.9996 on the central meridian).
    assert np.allclose(pred.area_m2, pred.geometry.area / 0.9996**2, rtol=2e-3)


def _spacenet_truth(mask_path: Path) -> gpd.GeoDataFrame:
    """Footprints from a real building mask: its connected components, vectorised."""
    with rasterio.open(mask_path) as ds:
        mask = ds.read(1) > 0
        geoms = [
            shapely.geometry.shape(g)
            for g, _ in rasterio.features.shapes(mask.astype(np.uint8), mask=mask, transform=ds.transform)
        ]
        return gpd.GeoDataFrame(geometry=geoms, crs=ds.crs)


def test_oracle_on_real_spacenet_imagery_in_epsg4326(spacenet_chips, tmp_path: Path) -> None:
    """Real WorldView-2 chips of Rio, geographic CRS: the pipeline returns the real footprints."""
    seam_total = 0
    for image, mask in spacenet_chips:
        truth = _spacenet_truth(mask)
        if len(truth) == 0:
            continue
        out = tmp_path / f"{image.stem}.gpkg"
        _, pred, scores = run_oracle(image, truth, out, tile=128, overlap=32, simplify_px=0, min_area_m2=0)
        assert scores.f1 >= 0.99, (image.name, scores)
        if scores.seam_total:
            assert scores.seam_score == 1.0, (image.name, scores)
        seam_total += scores.seam_total
        assert pred.crs.to_epsg() == 4326
        # area_m2 against the geodesic area on the WGS84 ellipsoid.
        geod = Geod(ellps="WGS84")
        geodesic = np.array([abs(geod.geometry_area_perimeter(g)[0]) for g in pred.geometry])
        assert np.allclose(pred.area_m2, geodesic, rtol=0.01)
    assert seam_total > 10


def _write(path: Path, data: np.ndarray, transform: Affine, crs: str | None, **profile: object) -> Path:
    count, h, w = data.shape
    prof = {"driver": "GTiff", "width": w, "height": h, "count": count, "dtype": data.dtype, "transform": transform}
    if crs:
        prof["crs"] = crs
    prof.update(profile)
    with rasterio.open(path, "w", **prof) as ds:
        ds.write(data)
    return path


@pytest.fixture(scope="module")
def rgb(scene: Scene) -> tuple[np.ndarray, Affine]:
    with rasterio.open(scene.raster) as ds:
        return ds.read(), ds.transform


@pytest.mark.parametrize("kind", ["gray_uint16", "four_band", "float32", "nodata_border"])
def test_raster_variants_run_end_to_end(kind: str, rgb, scene: Scene, tmp_path: Path) -> None:
    data, t = rgb
    if kind == "gray_uint16":
        arr = (data.mean(0, keepdims=True) * 200).astype(np.uint16)
        path = _write(tmp_path / "g.tif", arr, t, "EPSG:32633")
    elif kind == "four_band":
        # Blue, green, red, near-infrared: the colour interpretation says which band is red.
        nir = (255 - data[1:2]).astype(np.uint8)
        path = _write(tmp_path / "b4.tif", np.concatenate([data[::-1], nir]), t, "EPSG:32633", photometric="MINISBLACK")
        with rasterio.open(path, "r+") as ds:
            ds.colorinterp = [ColorInterp.blue, ColorInterp.green, ColorInterp.red, ColorInterp.undefined]
        with RasterSource(path) as src:
            assert src.bands == (3, 2, 1)
            img, nodata = src.read(Window(0, 0, 50, 40))
        assert nodata is None and (img == data[:, :40, :50].transpose(1, 2, 0)).all()
    elif kind == "float32":
        path = _write(tmp_path / "f.tif", data.astype(np.float32) / 255.0, t, "EPSG:32633")
    else:
        arr = data.copy()
        arr[:, :, :100] = 0
        arr[:, -60:, :] = 0
        path = _write(tmp_path / "nd.tif", arr, t, "EPSG:32633", nodata=0)
    _, pred, scores = run_oracle(path, scene.truth, tmp_path / "out.gpkg")
    if kind == "nodata_border":
        # Nothing is made up where there is no data: no polygon reaches into the border.
        left = t.c + 100 * t.a
        assert (pred.geometry.bounds.minx >= left - 1e-6).all()
        inside = scene.truth[scene.truth.geometry.bounds.minx > left + 1]
        inside = inside[inside.geometry.bounds.miny > t.f + (768 - 60) * t.e + 1]
        assert evaluate(pred, inside).recall >= 0.99
    else:
        assert scores.f1 >= 0.99, scores


def test_epsg4326_raster_gives_true_square_metres(rgb, tmp_path: Path) -> None:
    """A raster in degrees (0.5 m pixels at 45° N): area_m2 within 1 % of the geodesic area."""
    data, _ = rgb
    deg_x, deg_y = 0.5 / 78846.8, 0.5 / 111132.0
    t = Affine(deg_x, 0, 12.0, 0, -deg_y, 45.0)
    path = _write(tmp_path / "ll.tif", data, t, "EPSG:4326")
    geoms = [
        shapely.box(12.0 + c * deg_x, 45.0 - (r + h) * deg_y, 12.0 + (c + w) * deg_x, 45.0 - r * deg_y)
        for c, r, w, h in [(100, 100, 40, 30), (300, 400, 80, 20), (220, 230, 60, 60)]
    ]
    truth = gpd.GeoDataFrame(geometry=geoms, crs="EPSG:4326")
    _, pred, scores = run_oracle(path, truth, tmp_path / "ll.gpkg")
    assert scores.f1 == 1.0
    geod = Geod(ellps="WGS84")
    geodesic = np.array([abs(geod.geometry_area_perimeter(g)[0]) for g in pred.geometry])
    assert np.allclose(pred.area_m2, geodesic, rtol=0.01)
    assert np.allclose(sorted(pred.area_m2), sorted([20 * 15, 40 * 10, 30 * 30]), rtol=0.01)


@pytest.mark.parametrize("suffix,driver", [(".geojson", "GeoJSON"), (".fgb", "FlatGeobuf")])
def test_other_output_formats(suffix: str, driver: str, scene: Scene, tmp_path: Path) -> None:
    out = tmp_path / f"b{suffix}"
    summary, pred, scores = run_oracle(scene.raster, scene.truth, out)
    assert pyogrio.read_info(out)["driver"] == driver
    assert scores.f1 >= 0.99
    assert len(pred) == summary.buildings


def test_geopackage_records_ledger_and_metadata(scene: Scene, tmp_path: Path) -> None:
    out = tmp_path / "b.gpkg"
    run_oracle(scene.raster, scene.truth, out)
    assert [list(x) for x in pyogrio.list_layers(out)] == [["buildings", "Polygon"]]  # the one layer users meet
    meta, ledger = read_run_tables(out)
    assert len(ledger) == 16 and set(ledger.status) == {"done"}
    assert meta["tile_size"] == "256" and meta["crs"] == "EPSG:32633"
    assert pyogrio.read_info(out)["layer_metadata"]["crs"] == "EPSG:32633"  # GDAL (ogrinfo, QGIS) reads it too


class _Boom:
    """A segmenter that fails on its third call."""

    def __init__(self, truth: gpd.GeoDataFrame) -> None:
        self.inner = TruthSegmenter(truth)

    def segment(self, tiles):
        if self.inner.calls == 2:
            raise RuntimeError("model crashed")
        return self.inner.segment(tiles)


def test_failed_run_leaves_no_output_and_no_staging_file(scene: Scene, tmp_path: Path) -> None:
    out = tmp_path / "b.gpkg"
    with pytest.raises(RuntimeError, match="model crashed"):
        extract_buildings(
            scene.raster,
            out,
            segmenter=_Boom(scene.truth),
            tile_size=256,
            overlap=32,
            batch_size=1,
            building_filter=False,
        )
    # Only the resume ledger stays (hidden): a crash can be resumed.
    assert [p.name for p in tmp_path.iterdir()] == [".b.gpkg.resume.sqlite"]


def test_failed_run_keeps_the_previous_output(scene: Scene, tmp_path: Path) -> None:
    out = tmp_path / "b.gpkg"
    out.write_bytes(b"previous result")
    with pytest.raises(RuntimeError):
        extract_buildings(
            scene.raster,
            out,
            segmenter=_Boom(scene.truth),
            tile_size=256,
            overlap=32,
            batch_size=1,
            overwrite=True,
            building_filter=False,
        )
    assert out.read_bytes() == b"previous result"
    assert sorted(p.name for p in tmp_path.iterdir()) == [".b.gpkg.resume.sqlite", "b.gpkg"]


def test_cancel_stops_and_writes_nothing(scene: Scene, tmp_path: Path) -> None:
    seen: list[tuple[int, int]] = []
    out = tmp_path / "b.gpkg"
    with pytest.raises(Cancelled, match=r"cancelled after 3 of 9 tiles.*--resume"):
        extract_buildings(
            scene.raster,
            out,
            segmenter=TruthSegmenter(scene.truth),
            tile_size=300,
            overlap=32,
            batch_size=1,
            building_filter=False,
            progress=lambda d, t: seen.append((d, t)),
            cancel=lambda: len(seen) >= 3,
        )
    assert seen == [(1, 9), (2, 9), (3, 9)]
    assert [p.name for p in tmp_path.iterdir()] == [".b.gpkg.resume.sqlite"]


def test_existing_output_is_refused_without_overwrite(scene: Scene, tmp_path: Path) -> None:
    out = tmp_path / "b.gpkg"
    out.write_bytes(b"keep me")
    with pytest.raises(OutputError, match="exists; pass --overwrite"):
        extract_buildings(scene.raster, out, segmenter=TruthSegmenter(scene.truth))
    assert out.read_bytes() == b"keep me"


@pytest.mark.parametrize("case", ["text_file", "no_crs", "missing"])
def test_bad_input_is_one_clear_error_and_no_output(case: str, tmp_path: Path) -> None:
    raster = tmp_path / "in.tif"
    if case == "text_file":
        raster.write_text("this is not a raster\n")
        match = "cannot be read as a raster"
    elif case == "no_crs":
        _write(raster, np.zeros((3, 64, 64), np.uint8), Affine(0.5, 0, 0, 0, -0.5, 0), None)
        match = "has no CRS"
    else:
        match = "no such file"
    out = tmp_path / "out.gpkg"
    with pytest.raises(RasterError, match=match) as err:
        extract_buildings(raster, out, segmenter=TruthSegmenter(gpd.GeoDataFrame(geometry=[], crs=3857)))
    message = str(err.value)
    assert str(raster) in message and "\n" not in message
    assert not out.exists()


def test_all_nodata_raster_is_refused(tmp_path: Path) -> None:
    raster = _write(
        tmp_path / "empty.tif", np.zeros((3, 300, 300), np.uint8), Affine(0.5, 0, 0, 0, -0.5, 0), "EPSG:32633", nodata=0
    )
    with pytest.raises(RasterError, match="nodata"):
        extract_buildings(
            raster, tmp_path / "o.gpkg", segmenter=TruthSegmenter(gpd.GeoDataFrame(geometry=[], crs=3857))
        )
    assert not (tmp_path / "o.gpkg").exists()


def test_core_modules_do_not_import_heavy_dependencies() -> None:
    code = (
        "import sys; import fastsam_geo, fastsam_geo.tiling, fastsam_geo.vectorize, fastsam_geo.merge, "
        "fastsam_geo.raster, fastsam_geo.output, fastsam_geo.evaluate, fastsam_geo.pipeline, fastsam_geo.segment; "
        "heavy = [m for m in ('torch', 'ultralytics', 'open_clip', 'qgis') if m in sys.modules]; "
        "print(heavy); sys.exit(1 if heavy else 0)"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stdout + res.stderr


def test_reading_a_tile_equals_rendering_it(scene: Scene) -> None:
    """The raster reader returns exactly the pixels written (no stretch for 8-bit)."""
    with RasterSource(scene.raster) as src:
        img, nodata = src.read(Window(100, 200, 64, 48))
    expected = render_block(scene.plan, Window(100, 200, 64, 48)).transpose(1, 2, 0)
    assert nodata is None
    assert (img == expected).all()


class _Counting:
    """Counts the tiles a segmenter is asked for."""

    def __init__(self, inner: TruthSegmenter) -> None:
        self.inner = inner
        self.tiles = 0

    def segment(self, tiles):
        self.tiles += len(tiles)
        return self.inner.segment(tiles)


def test_reprompting_cached_tiles_runs_no_inference(scene: Scene, tmp_path: Path) -> None:
    from fastsam_geo.prompts import PointPrompt, Prompts

    seg = _Counting(TruthSegmenter(scene.truth))
    cache = tmp_path / "cache"
    common = dict(segmenter=seg, tile_size=256, overlap=32, cache_dir=cache, building_filter=False, overwrite=True)
    extract_buildings(scene.raster, tmp_path / "all.gpkg", **common)
    assert seg.tiles == 16
    # Click on three buildings: answered from the cache, no tile reaches the model.
    picks = scene.truth.geometry.values[[3, 40, 77]]
    pts = tuple(PointPrompt(p.x, p.y, 1) for p in shapely.point_on_surface(picks))
    summary = extract_buildings(
        scene.raster, tmp_path / "picked.gpkg", prompts=Prompts(points=pts, crs="EPSG:32633"), **common
    )
    assert seg.tiles == 16
    picked = gpd.read_file(tmp_path / "picked.gpkg", layer="buildings")
    assert summary.mode == "points" and len(picked) == 3
    assert evaluate(picked, scene.truth.iloc[[3, 40, 77]]).f1 == 1.0


def test_box_and_point_on_a_building_across_a_seam_give_one_whole_object(scene: Scene, tmp_path: Path) -> None:
    """Prompts on buildings cut by tile seams: each comes out once and whole."""
    from fastsam_geo.prompts import BoxPrompt, PointPrompt, Prompts

    with RasterSource(scene.raster) as src:
        grid = TileGrid(src.info.width, src.info.height, 256, 32, src.info.transform)
    seams = shapely.MultiLineString([list(line.coords) for line in seam_lines(grid)])
    truth = scene.truth.geometry.values
    crossing = np.flatnonzero(shapely.intersects(truth, seams) & (shapely.area(truth) > 150))[:4]
    assert len(crossing) == 4
    seg = TruthSegmenter(scene.truth)
    common = dict(segmenter=seg, tile_size=256, overlap=32, building_filter=False, overwrite=True)
    boxes = tuple(BoxPrompt(*truth[i].buffer(1.0).bounds) for i in crossing[:2])
    points = tuple(PointPrompt(p.x, p.y) for p in shapely.point_on_surface(truth[crossing[2:]]))
    for name, prompts in (("boxes", Prompts(boxes=boxes)), ("points", Prompts(points=points))):
        out = tmp_path / f"{name}.gpkg"
        extract_buildings(scene.raster, out, prompts=prompts, **common)
        pred = gpd.read_file(out, layer="buildings")
        expected = scene.truth.iloc[crossing[:2] if name == "boxes" else crossing[2:]]
        scores = evaluate(pred, expected, seams=seam_lines(grid))
        assert len(pred) == 2 and scores.f1 == 1.0 and scores.seam_score == 1.0, (name, scores)
        assert scores.mean_iou > 0.85


def test_holes_smaller_than_a_building_are_filled_courtyards_kept(tmp_path: Path) -> None:
    """A mask's hole under the smallest building area (a tank on a roof) is filled; a courtyard
    stays; with the building filter off the masks come out as they are."""
    scene = write_scene(tmp_path / "town.tif", 512, seed=3)
    with rasterio.open(scene.raster) as ds:
        x0, _, _, y1 = ds.bounds
        crs = ds.crs
    roof = shapely.Polygon(
        shapely.box(x0 + 20, y1 - 40, x0 + 40, y1 - 28).exterior.coords,
        [shapely.box(x0 + 30, y1 - 35, x0 + 31, y1 - 34).exterior.coords],  # 1 m2: a water tank
    )
    block = shapely.Polygon(
        shapely.box(x0 + 60, y1 - 60, x0 + 90, y1 - 30).exterior.coords,
        [shapely.box(x0 + 70, y1 - 50, x0 + 80, y1 - 40).exterior.coords],  # 100 m2: a courtyard
    )
    truth = gpd.GeoDataFrame(geometry=[roof, block], crs=crs)
    holes = {}
    for flt in (True, False):
        out = tmp_path / f"b_{flt}.gpkg"
        extract_buildings(scene.raster, out, segmenter=TruthSegmenter(truth), building_filter=flt, overwrite=True)
        pred = gpd.read_file(out, layer="buildings").sort_values("area_m2").reset_index(drop=True)
        assert len(pred) == 2
        holes[flt] = [len(g.interiors) for g in pred.geometry]
    assert holes == {True: [0, 1], False: [1, 1]}
