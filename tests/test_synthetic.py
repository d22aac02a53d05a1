"""Seeded synthetic scenes: determinism, sound truth footprints, pixels that show the buildings."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import rasterio
import shapely
from geopandas.testing import assert_geodataframe_equal
from rasterio.features import rasterize
from rasterio.windows import Window
from shapely.geometry import box

from fastsam_geo.synthetic import ScenePlan, plan_scene, render_block, write_scene

pytestmark = pytest.mark.filterwarnings("ignore:Use `@` matmul:PendingDeprecationWarning")


@pytest.fixture(scope="module")
def big_plan() -> ScenePlan:
    """The plan of a 2048 px scene (no pixels drawn, nothing written)."""
    return plan_scene(2048, 2048, seed=11)


def test_same_seed_same_files(tmp_path: Path) -> None:
    a = write_scene(tmp_path / "a" / "town.tif", 256, seed=7)
    b = write_scene(tmp_path / "b" / "town.tif", 256, seed=7)
    assert a.raster.read_bytes() == b.raster.read_bytes()
    assert_geodataframe_equal(a.truth, b.truth)
    assert len(a.truth) > 0
    ga = gpd.read_file(a.raster.with_name("town_buildings.gpkg"), layer="buildings")
    gb = gpd.read_file(b.raster.with_name("town_buildings.gpkg"), layer="buildings")
    assert_geodataframe_equal(ga, gb)
    # The GeoPackage holds the same footprints as the returned frame, in the raster's CRS.
    assert ga.crs == a.truth.crs
    assert shapely.equals_exact(ga.geometry.values, a.truth.geometry.values, tolerance=1e-6).all()
    with rasterio.open(a.raster) as ds:
        assert ds.crs == a.truth.crs
        assert ds.count == 3 and ds.dtypes == ("uint8",) * 3
        assert (ds.width, ds.height) == (256, 256)
        assert ds.transform.a == 0.5 and ds.transform.e == -0.5


def test_different_seed_differs(tmp_path: Path) -> None:
    plan_a, plan_b = plan_scene(256, 256, seed=1), plan_scene(256, 256, seed=2)
    win = Window(0, 0, 256, 256)
    assert not np.array_equal(render_block(plan_a, win), render_block(plan_b, win))
    assert [b.polygon.wkb for b in plan_a.footprints] != [b.polygon.wkb for b in plan_b.footprints]


def test_plan_is_deterministic(big_plan: ScenePlan) -> None:
    again = plan_scene(2048, 2048, seed=11)
    for mine, theirs in ((big_plan.buildings, again.buildings), (big_plan.footprints, again.footprints)):
        assert len(mine) == len(theirs)
        assert all(
            x.polygon.equals_exact(y.polygon, 0) and x.shape == y.shape
            for x, y in zip(mine, theirs, strict=True)
        )
    np.testing.assert_array_equal(again.trees, big_plan.trees)


def test_truth_footprints_are_valid_and_do_not_overlap(big_plan: ScenePlan) -> None:
    polys = np.array([b.polygon for b in big_plan.footprints], dtype=object)
    assert len(polys) > 200
    assert shapely.is_valid(polys).all()
    assert (shapely.area(polys) > 0).all()
    left, right = shapely.STRtree(polys).query(polys, predicate="intersects")
    other = left != right
    overlap = shapely.area(shapely.intersection(polys[left[other]], polys[right[other]]))
    assert (overlap == 0).all(), "two truth footprints overlap"
    # The buildings as placed keep a gap between them: they do not even touch.
    placed = np.array([b.polygon for b in big_plan.buildings], dtype=object)
    left, right = shapely.STRtree(placed).query(placed, predicate="intersects")
    assert (left == right).all(), "two buildings touch or overlap"
    # Courtyard buildings have holes; L-shapes and rectangles exist too.
    assert sum(len(p.interiors) > 0 for p in polys) >= 3
    assert {b.shape for b in big_plan.footprints} >= {"rect", "L", "court"}


def test_truth_footprints_lie_inside_the_raster(big_plan: ScenePlan) -> None:
    extent = box(0, 0, big_plan.width, big_plan.height)
    polys = np.array([b.polygon for b in big_plan.footprints], dtype=object)
    assert shapely.contains(extent, polys).all()
    # The truth is what the raster shows: the placed buildings clipped to the extent (slivers
    # under 30 px dropped), no more and no less.
    placed = shapely.union_all([b.polygon for b in big_plan.buildings])
    visible = shapely.area(shapely.intersection(placed, extent))
    truth = shapely.area(polys).sum()
    assert truth <= visible + 1.0
    assert truth > 0.995 * visible
    # Buildings crossing the raster border exist, so the clipping is exercised.
    assert any(not extent.contains(b.polygon) for b in big_plan.buildings)


def test_rendered_buildings_stand_out_from_their_surroundings() -> None:
    plan = plan_scene(512, 512, seed=4)
    img = render_block(plan, Window(0, 0, 512, 512)).astype(np.float64)
    assert img.shape == (3, 512, 512)
    checked = 0
    for b in plan.buildings:
        poly = b.polygon
        if not box(0, 0, 512, 512).contains(poly.buffer(8)):
            continue
        # Masks drawn independently of synthetic.py (GDAL's rasterizer, pixel-centre rule).
        inner = rasterize([poly.buffer(-1.5)], out_shape=(512, 512)).astype(bool)
        ring = rasterize([poly.buffer(6).difference(poly.buffer(2))], out_shape=(512, 512)).astype(bool)
        if not inner.any():
            continue
        diff = np.abs(img[:, inner].mean(axis=1) - img[:, ring].mean(axis=1)).sum()
        assert diff > 20, f"building {poly.wkt[:60]}... blends into the ground ({diff:.1f})"
        checked += 1
    assert checked >= 10


@pytest.mark.parametrize(("block_w", "block_h"), [(256, 256), (97, 61)])
def test_rendering_block_by_block_equals_rendering_at_once(block_w: int, block_h: int) -> None:
    plan = plan_scene(512, 512, seed=3)
    whole = render_block(plan, Window(0, 0, 512, 512))
    parts = np.zeros_like(whole)
    for r0 in range(0, 512, block_h):
        for c0 in range(0, 512, block_w):
            win = Window(c0, r0, min(block_w, 512 - c0), min(block_h, 512 - r0))
            parts[:, r0 : r0 + win.height, c0 : c0 + win.width] = render_block(plan, win)
    np.testing.assert_array_equal(parts, whole)


def test_noise_and_roads_are_continuous_across_blocks() -> None:
    """The parts of a scene without buildings or trees are block-invariant already."""
    plan = plan_scene(384, 384, seed=9)
    empty = dataclasses.replace(plan, buildings=[], footprints=[], trees=plan.trees[:0])
    whole = render_block(empty, Window(0, 0, 384, 384))
    parts = np.zeros_like(whole)
    for r0 in (0, 128, 256):
        for c0 in (0, 192):
            parts[:, r0 : r0 + 128, c0 : c0 + 192] = render_block(empty, Window(c0, r0, 192, 128))
    np.testing.assert_array_equal(parts, whole)


REPO = Path(__file__).resolve().parents[1]
FSG = [sys.executable, "-m", "fastsam_geo"]
ENV = {
    **os.environ,
    "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep),
    "YOLO_OFFLINE": "1",
    "HF_HUB_OFFLINE": "1",
}


@pytest.mark.parametrize(
    ("args", "must"),
    [
        (["--crs", "EPSG:2263"], ("--crs EPSG:2263", "US survey foot", "metre", "local UTM zone", "EPSG:32618")),
        (["--crs", "+proj=utm +zone=33 +datum=WGS84 +units=km"], ("kilometre", "metre", "UTM")),
        (["--seed", "-1"], ("--seed -1", "0 or more")),
        (["--pixel-size", "1e7"], ("--pixel-size 10000000", "above 0 and below 1000000 m")),
        (["--pixel-size", "0"], ("--pixel-size 0", "above 0 and below 1000000 m")),
    ],
    ids=["feet", "kilometres", "negative-seed", "pixel-too-large", "pixel-zero"],
)
def test_sample_refuses_bad_values_in_one_line(tmp_path: Path, args: list[str], must: tuple[str, ...]) -> None:
    """A CRS not in metres (--pixel-size is in metres), a negative seed and a ground resolution
    out of range: exit 1, one ``Error:`` line naming the option, the allowed values and the fix,
    no traceback, no file."""
    r = subprocess.run(
        [*FSG, "sample", "s.tif", "--size", "65", *args], capture_output=True, text=True, env=ENV, cwd=tmp_path
    )
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert r.returncode == 1, r.stderr
    assert "Traceback" not in r.stderr and len(lines) == 1 and lines[0].startswith("Error: "), r.stderr
    for m in must:
        assert m in lines[0], (m, lines[0])
    assert list(tmp_path.iterdir()) == []
