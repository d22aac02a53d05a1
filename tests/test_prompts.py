"""Prompt types, prompt files and the tile-level selection of masks (no model needed)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import shapely
from affine import Affine
from pyproj import Transformer

from fastsam_geo import buildingfilter
from fastsam_geo import prompts as P
from fastsam_geo.errors import PromptError
from fastsam_geo.masks import InstanceMasks
from fastsam_geo.prompts import (
    BoxPrompt,
    PointPrompt,
    Prompts,
    boxes_to_pixels,
    building_filter,
    nms_keep,
    nms_masks,
    points_to_pixels,
    read_prompt_file,
    select_boxes,
    select_masks,
    select_points,
    select_prompts,
    select_text,
)

H, W = 50, 60


def _box(r0: int, r1: int, c0: int, c1: int) -> np.ndarray:
    m = np.zeros((H, W), bool)
    m[r0:r1, c0:c1] = True
    return m


# two adjacent buildings, 1 px apart, and what FastSAM's "everything" makes of them
A = _box(10, 30, 5, 25)
B = _box(10, 30, 26, 46)
A_HALF = _box(10, 30, 5, 15)
BLOCK = _box(8, 32, 3, 48)  # A and B and the ground around them
ROAD = _box(36, 42, 0, 60)


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / (a | b).sum())


def _im(*masks: np.ndarray, scores: list[float] | None = None) -> InstanceMasks:
    return InstanceMasks.from_dense(np.stack(masks), scores=scores)


# ====================================================================== points
def test_click_selects_exactly_the_building_it_is_on():
    im = _im(A, A_HALF, B, ROAD, scores=[0.9, 0.8, 0.85, 0.7])
    sel = select_points(im, cols=[10], rows=[20], labels=[1])
    assert len(sel) == 1
    assert _iou(sel.mask(0), A) == 1.0  # the half is merged into A; B is untouched
    assert sel.scores[0] == pytest.approx(0.9)  # the best of the merged masks
    sel_b = select_points(im, cols=[40], rows=[20], labels=[1])
    assert len(sel_b) == 1 and _iou(sel_b.mask(0), B) == 1.0
    # the result is a crop tight to the object, with a box to match
    assert sel.crops[0].shape == (20, 20) and sel.offsets[0].tolist() == [10, 5]
    assert sel.boxes[0].tolist() == [5, 10, 25, 30]


def test_click_on_the_half_only_still_gives_the_whole_chain():
    im = _im(A_HALF, A, B)
    sel = select_points(im, cols=[7], rows=[12])  # labels default to foreground
    assert len(sel) == 1 and _iou(sel.mask(0), A) == 1.0


def test_a_block_mask_holding_several_buildings_is_not_merged():
    im = _im(A, A_HALF, B, BLOCK)
    sel = select_points(im, cols=[10], rows=[20], labels=[1])
    assert len(sel) == 1 and _iou(sel.mask(0), A) == 1.0
    # with the group rule off: FastSAM's plain union, the largest of the nested chain
    sel = select_points(im, cols=[10], rows=[20], labels=[1], group_cover=None)
    assert len(sel) == 1 and _iou(sel.mask(0), BLOCK) == 1.0
    # a click on the ground between them: the block is the only candidate
    sel = select_points(im, cols=[25], rows=[20], labels=[1])
    assert len(sel) == 1 and _iou(sel.mask(0), BLOCK) == 1.0


def test_click_on_a_roof_facet_gives_the_roof():
    east = _box(10, 30, 15, 25)  # the two facets tile A: A is one object, not a group
    sel = select_points(_im(A_HALF, east, A, B), cols=[20], rows=[20])
    assert len(sel) == 1 and _iou(sel.mask(0), A) == 1.0
    # an eave mask slightly larger than A (A plus a 1 px rim) joins the chain too
    eave = _box(9, 31, 4, 26)
    sel = select_points(_im(A_HALF, east, A, B, eave), cols=[20], rows=[20])
    assert len(sel) == 1 and _iou(sel.mask(0), eave) == 1.0


def test_background_point_excludes_the_candidates_under_it():
    im = _im(A, A_HALF, B, BLOCK, ROAD)
    # (group rule off, so that only the background click can keep the block out)
    assert _iou(select_points(im, cols=[10], rows=[20], group_cover=None).mask(0), BLOCK) == 1.0
    sel = select_points(im, cols=[10, 40], rows=[20, 20], labels=[1, 0], group_cover=None)
    assert len(sel) == 1
    assert _iou(sel.mask(0), A) == 1.0  # the block contains the background click on B: excluded
    eave = _box(9, 31, 4, 26)  # A plus a rim: no group, it would join A's chain ...
    sel = select_points(_im(A, A_HALF, eave), cols=[10, 4], rows=[20, 9], labels=[1, 0])
    assert len(sel) == 1 and _iou(sel.mask(0), A) == 1.0  # ... but the click on its rim excludes it
    # a background point on A's half removes the half, A itself too (it contains the point)
    sel = select_points(im, cols=[20, 7, 40], rows=[20, 12, 20], labels=[1, 0, 0])
    assert len(sel) == 0


def test_two_foreground_points_give_two_objects_even_under_a_block_mask():
    im = _im(A, A_HALF, B, BLOCK)
    sel = select_points(im, cols=[10, 40], rows=[20, 20], labels=[1, 1])
    assert len(sel) == 2
    assert _iou(sel.mask(0), A) == 1.0 and _iou(sel.mask(1), B) == 1.0
    # a semi-detached pair: one mask covers both with no ground between (no group by the cover
    # rule); the two clicks still make two objects
    pair = _box(10, 30, 5, 46)
    sel = select_points(_im(A, B, pair), cols=[10, 40], rows=[20, 20], labels=[1, 1])
    assert [_iou(sel.mask(i), m) for i, m in enumerate((A, B))] == [1.0, 1.0]
    assert _iou(select_points(_im(A, B, pair), cols=[10], rows=[20]).mask(0), pair) == 1.0
    # two clicks on the same building give it once
    sel = select_points(_im(A, B), cols=[10, 20], rows=[20, 25])
    assert len(sel) == 1 and _iou(sel.mask(0), A) == 1.0


def test_partly_overlapping_candidate_is_not_glued_on():
    x = _box(20, 45, 15, 35)  # overlaps A's corner and the ground and B: not nested with A
    im = _im(A_HALF, A, x)
    sel = select_points(im, cols=[20], rows=[25])  # inside A and x
    assert len(sel) == 1
    assert _iou(sel.mask(0), A) == 1.0


def test_point_on_nothing_background_only_and_outside_give_nothing():
    im = _im(A, B)
    assert len(select_points(im, cols=[2], rows=[2], labels=[1])) == 0
    assert len(select_points(im, cols=[10], rows=[20], labels=[0])) == 0
    assert len(select_points(im, cols=[-5, 500], rows=[20, 20], labels=[1, 1])) == 0
    assert len(select_points(InstanceMasks.empty((H, W)), cols=[10], rows=[20])) == 0
    with pytest.raises(PromptError):
        select_points(im, cols=[10], rows=[20], labels=[2])


# ====================================================================== boxes
def test_box_picks_its_building_among_nested_candidates():
    im = _im(BLOCK, A, A_HALF, B)
    sel = select_boxes(im, [(5, 10, 25, 30)])  # A's box (col0, row0, col1, row1)
    assert len(sel) == 1 and _iou(sel.mask(0), A) == 1.0
    sel = select_boxes(im, [(26, 10, 46, 30), (3, 8, 48, 32)])
    assert [_iou(sel.mask(i), m) for i, m in enumerate((B, BLOCK))] == [1.0, 1.0]
    # a slightly loose box still picks A, not its half nor the block
    sel = select_boxes(im, [(3, 9, 27, 31)])
    assert _iou(sel.mask(0), A) == 1.0


def test_box_on_nothing_and_duplicate_boxes():
    im = _im(A, B)
    assert len(select_boxes(im, [(50, 40, 58, 48)])) == 0  # empty ground
    assert len(select_boxes(im, [(500, 500, 600, 600)])) == 0  # off the tile
    assert len(select_boxes(im, [(5, 10, 25, 30), (5, 10, 25, 31)])) == 1


# ====================================================================== reference masks
def test_select_masks_continues_an_object_from_a_neighbouring_tile():
    im = _im(A, B, ROAD)
    # the object as seen by the tile on the left: it reaches 10 px beyond this tile's left edge
    ref = np.zeros((20, 30), bool)
    ref[:, :] = True
    sel = select_masks(im, ref, (10, -5))  # covers cols -5..25 of this tile: A after clipping
    assert len(sel) == 1 and _iou(sel.mask(0), A) == 1.0
    assert len(select_masks(im, ref, (10, -5), min_iou=1.01)) == 0
    assert len(select_masks(im, ref, (200, 200))) == 0


# ====================================================================== text selection
class FakeScorer:
    def __init__(self, scores):
        self.scores = np.asarray(scores, np.float32)
        self.calls = 0

    def score(self, image, masks, text):
        self.calls += 1
        assert image.shape[:2] == masks.shape and len(masks) == self.scores.size
        return self.scores


def test_select_text_threshold_and_top_k_select_every_passing_mask():
    s = np.array([0.31, 0.12, 0.27, 0.29, 0.05, 0.26])
    assert select_text(6, s, threshold=0.25).tolist() == [0, 3, 2, 5]  # four pass, best first
    assert sorted(select_text(6, s, threshold=0.28).tolist()) == [0, 3]
    assert select_text(6, s, top_k=3).tolist() == [0, 3, 2]
    assert select_text(6, s, threshold=0.28, top_k=5).tolist() == [0, 3]
    assert select_text(6, s, top_k=1).tolist() == [0]
    assert select_text(6, s).tolist() == [0, 3, 2, 5]  # the default threshold 0.22
    assert select_text(0, np.zeros(0), top_k=2).tolist() == []
    with pytest.raises(ValueError):
        select_text(5, s)


def test_text_prompt_through_select_prompts_uses_the_scorer_once():
    im = _im(A, B, ROAD, A_HALF)
    scorer = FakeScorer([0.30, 0.28, 0.10, 0.21])
    image = np.zeros((H, W, 3), np.uint8)
    sel = select_prompts(
        im, Prompts(text="a building", text_threshold=0.25), Affine.identity(), image=image, scorer=scorer
    )
    assert scorer.calls == 1
    assert [_iou(sel.mask(i), m) for i, m in enumerate((A, B))] == [1.0, 1.0]
    sel = select_prompts(
        im,
        Prompts(text="roof", text_threshold=None, text_top_k=1),
        Affine.identity(),
        image=image,
        scorer=scorer,
    )
    assert len(sel) == 1 and _iou(sel.mask(0), A) == 1.0
    with pytest.raises(PromptError):
        select_prompts(im, Prompts(text="roof"), Affine.identity())


# ====================================================================== map -> pixels
def test_select_prompts_converts_map_coordinates_with_the_tile_transform():
    t = Affine(0.5, 0, 500_000.0, 0, -0.5, 5_000_000.0)  # 0.5 m pixels
    im = _im(A, B, BLOCK)
    xa, ya = t * (10.5, 20.5)  # pixel centre inside A
    xb, yb = t * (40.5, 20.5)
    pr = Prompts(points=[PointPrompt(xa, ya), PointPrompt(xb, yb, 0)], crs="EPSG:32633")
    sel = select_prompts(im, pr, t)
    assert len(sel) == 1 and _iou(sel.mask(0), A) == 1.0
    x0, y1 = t * (5, 10)
    x1, y0 = t * (25, 30)
    sel = select_prompts(im, Prompts(boxes=[BoxPrompt(x0, y0, x1, y1)]), t)
    assert len(sel) == 1 and _iou(sel.mask(0), A) == 1.0
    assert boxes_to_pixels([BoxPrompt(x0, y0, x1, y1)], t).tolist() == [[5, 10, 25, 30]]
    assert select_prompts(im, Prompts(), t) is im
    both = select_prompts(im, Prompts(points=[PointPrompt(xb, yb)], boxes=[BoxPrompt(x0, y0, x1, y1)]), t)
    assert len(both) == 2
    cols, rows, labels = points_to_pixels([PointPrompt(xa, ya, 0)], t)
    assert (cols.tolist(), rows.tolist(), labels.tolist()) == ([10], [20], [0])


# ====================================================================== prompt types and CRS
def test_prompt_types_validate():
    with pytest.raises(PromptError):
        PointPrompt(0, 0, label=3)
    with pytest.raises(PromptError):
        BoxPrompt(10, 0, 5, 5)
    with pytest.raises(PromptError):
        Prompts(text="x", text_top_k=0)
    assert Prompts(text="  ").mode == "everything"
    assert Prompts(boxes=[BoxPrompt(0, 0, 1, 1)], points=[PointPrompt(0, 0)]).mode == "boxes"


def test_to_crs_lands_where_pyproj_says():
    tr = Transformer.from_crs("EPSG:4326", "EPSG:32633", always_xy=True)
    lon, lat = 15.4321, 47.0712
    pr = Prompts(
        points=[PointPrompt(lon, lat, 0)],
        boxes=[BoxPrompt(lon - 0.01, lat - 0.01, lon + 0.01, lat + 0.01)],
        crs="EPSG:4326",
    )
    out = pr.to_crs("EPSG:32633")
    ex, ey = tr.transform(lon, lat)
    assert out.points[0].x == pytest.approx(ex, abs=1e-6) and out.points[0].y == pytest.approx(ey, abs=1e-6)
    assert out.points[0].label == 0 and out.crs == "EPSG:32633"
    b = out.boxes[0]
    for cx, cy in [
        (lon - 0.01, lat - 0.01),
        (lon + 0.01, lat + 0.01),
        (lon - 0.01, lat + 0.01),
        (lon + 0.01, lat - 0.01),
        (lon, lat - 0.01),
    ]:
        x, y = tr.transform(cx, cy)
        assert b.xmin - 1e-6 <= x <= b.xmax + 1e-6 and b.ymin - 1e-6 <= y <= b.ymax + 1e-6
    assert 1400 < b.width < 1600 and 2100 < b.height < 2300  # 0.02 deg at 47 N
    # a rasterio CRS works as the destination too
    from rasterio.crs import CRS

    out2 = pr.to_crs(CRS.from_epsg(32633))
    assert out2.points[0].x == pytest.approx(ex, abs=1e-6)
    with pytest.raises(PromptError, match="no CRS"):
        Prompts(points=[PointPrompt(0, 0)]).to_crs("EPSG:32633")


# ====================================================================== prompt files
def test_read_prompt_file_points_with_labels_and_polygons(tmp_path):
    gdf = gpd.GeoDataFrame(
        {"label": [1, 0, 1, 1]},
        geometry=[
            shapely.Point(500010, 4999990),
            shapely.Point(500020, 4999980),
            shapely.box(500000, 4999900, 500030, 4999950),
            shapely.box(500100, 4999900, 500110, 4999910),
        ],
        crs="EPSG:32633",
    )
    path = tmp_path / "prompts.gpkg"
    gdf.to_file(path, driver="GPKG")
    pr = read_prompt_file(path)
    assert pr.points == (PointPrompt(500010, 4999990, 1), PointPrompt(500020, 4999980, 0))
    assert pr.boxes == (
        BoxPrompt(500000, 4999900, 500030, 4999950),
        BoxPrompt(500100, 4999900, 500110, 4999910),
    )
    assert pr.crs.to_epsg() == 32633
    assert pr.mode == "boxes"


def test_read_prompt_file_in_4326_and_transform(tmp_path):
    lon, lat = 14.99, 46.5
    gdf = gpd.GeoDataFrame(geometry=[shapely.Point(lon, lat)], crs="EPSG:4326")  # no label field: fg
    path = tmp_path / "clicks.geojson"
    gdf.to_file(path, driver="GeoJSON")
    pr = read_prompt_file(path).to_crs("EPSG:32633")
    x, y = Transformer.from_crs("EPSG:4326", "EPSG:32633", always_xy=True).transform(lon, lat)
    assert pr.points[0].label == 1
    assert (pr.points[0].x, pr.points[0].y) == (pytest.approx(x, abs=1e-6), pytest.approx(y, abs=1e-6))


def test_read_prompt_file_errors_name_the_file(tmp_path):
    with pytest.raises(PromptError, match=r"nope\.gpkg"):
        read_prompt_file(tmp_path / "nope.gpkg")
    lines = tmp_path / "lines.gpkg"
    gpd.GeoDataFrame(geometry=[shapely.LineString([(0, 0), (1, 1)])], crs="EPSG:32633").to_file(lines)
    with pytest.raises(PromptError, match=r"lines\.gpkg.*LineString"):
        read_prompt_file(lines)
    nocrs = tmp_path / "nocrs.shp"  # a shapefile without .prj (GeoJSON is WGS 84 by definition)
    with pytest.warns(UserWarning):
        gpd.GeoDataFrame(geometry=[shapely.Point(0, 0)]).to_file(nocrs)
    with pytest.raises(PromptError, match=r"nocrs\.shp.*no CRS"):
        read_prompt_file(nocrs)
    badlabel = tmp_path / "badlabel.gpkg"
    gpd.GeoDataFrame({"label": [5]}, geometry=[shapely.Point(0, 0)], crs="EPSG:32633").to_file(badlabel)
    with pytest.raises(PromptError, match=r"badlabel\.gpkg.*'label'"):
        read_prompt_file(badlabel)
    other = tmp_path / "other.gpkg"
    gpd.GeoDataFrame({"fg": [0]}, geometry=[shapely.Point(0, 0)], crs="EPSG:32633").to_file(other)
    assert read_prompt_file(other, label_field="fg").points[0].label == 0


# ====================================================================== building filter and NMS
def test_building_filter_keeps_buildings_and_drops_roads_specks_and_blobs():
    yy, xx = np.mgrid[:H, :W]
    disc = (yy - 25) ** 2 + (xx - 30) ** 2 <= 15**2
    ring = disc & ~((yy - 25) ** 2 + (xx - 30) ** 2 <= 12**2)  # a roundabout: low rectangularity
    diag = np.abs(yy - xx) <= 1  # a diagonal track: rectangularity fine, far too elongated
    lshape = _box(5, 35, 5, 15) | _box(25, 35, 5, 40)
    speck = _box(1, 3, 1, 3)
    road = _box(36, 40, 0, 60)  # 4 x 60 px: 15 times as long as wide
    im = _im(A, road, ring, diag, lshape, speck, _box(0, H, 0, W))
    keep = building_filter(im, pixel_area_m2=0.25, max_area_m2=600)  # 0.5 m pixels
    assert keep.tolist() == [True, False, False, False, True, False, False]
    st = P.shape_stats(im)
    assert st["rectangularity"][0] == pytest.approx(1.0)
    assert st["elongation"][1] == pytest.approx(15.0)
    # text scores
    ts = np.array([0.3, 0.3, 0.3, 0.3, 0.1, 0.3, 0.3])
    keep = building_filter(im, pixel_area_m2=0.25, max_area_m2=600, text_scores=ts, min_text_score=0.2)
    assert keep.tolist() == [True, False, False, False, False, False, False]


def test_shape_measures_agree_with_and_without_opencv(monkeypatch: pytest.MonkeyPatch) -> None:
    """The light install (no OpenCV) measures shapes with shapely: the same rectangles and the
    same filter decisions as OpenCV's contours and minAreaRect in the full install."""
    rng = np.random.default_rng(5)
    dense = np.zeros((60, 80, 90), bool)
    yy, xx = np.mgrid[:80, :90]
    for k in range(60):
        cy, cx, ry, rx = rng.integers(10, 70), rng.integers(10, 80), rng.integers(2, 25), rng.integers(2, 25)
        theta = rng.uniform(0, np.pi)
        c, s = np.cos(theta), np.sin(theta)
        u, v = (xx - cx) * c + (yy - cy) * s, -(xx - cx) * s + (yy - cy) * c
        dense[k] = (np.abs(u) <= rx) & (np.abs(v) <= ry) if k % 2 else (u / rx) ** 2 + (v / ry) ** 2 <= 1
        dense[k] &= rng.random((80, 90)) > 0.05 * (k % 3)  # some with holes and specks
    im = InstanceMasks.from_dense(dense)
    assert buildingfilter.cv2 is not None
    fast = P.shape_stats(im)
    keep = building_filter(im, pixel_area_m2=0.25, max_area_m2=600)
    monkeypatch.setattr(buildingfilter, "cv2", None)
    slow = P.shape_stats(im)
    # Two rectangles of (nearly) the same area may both be minimal (mask 54 here: 28 x 12 and
    # 28.28 x 11.88 px); each library picks one, so the elongations may differ a little.
    np.testing.assert_allclose(fast["rectangularity"], slow["rectangularity"], rtol=1e-3)
    np.testing.assert_allclose(fast["elongation"], slow["elongation"], rtol=0.05)
    assert (building_filter(im, pixel_area_m2=0.25, max_area_m2=600) == keep).all()


def test_nms_drops_duplicates_by_score_and_parts_inside_the_building():
    a_dup = _box(10, 30, 5, 24)  # IoU 0.95 with A, higher score
    im = _im(A, a_dup, A_HALF, B, ROAD, scores=[0.8, 0.9, 0.95, 0.7, 0.6])
    keep = nms_keep(im)
    assert keep.tolist() == [False, True, False, True, True]
    kept = nms_masks(im)
    assert [_iou(kept.mask(i), m) for i, m in enumerate((a_dup, B, ROAD))] == [1.0, 1.0, 1.0]
    # without the near-duplicate, A stays and its half goes, whatever the half's score
    keep = nms_keep(_im(A, A_HALF, B, scores=[0.5, 0.99, 0.5]))
    assert keep.tolist() == [True, False, True]
    assert nms_keep(InstanceMasks.empty((H, W))).tolist() == []


def test_nms_keeps_buildings_inside_a_block_and_roofs_over_their_facets():
    # the block holds A and B with ground between them: it is the group, they are the buildings
    keep = nms_keep(_im(BLOCK, A, A_HALF, B, scores=[0.99, 0.8, 0.8, 0.8]))
    assert keep.tolist() == [False, True, False, True]
    # two roof facets tile their roof: the roof is the building
    east = _box(10, 30, 15, 25)
    keep = nms_keep(_im(A, A_HALF, east, B, scores=[0.5, 0.9, 0.9, 0.5]))
    assert keep.tolist() == [True, False, False, True]
    # with the group rule off, the largest wins (the plain containment rule)
    keep = nms_keep(_im(BLOCK, A, A_HALF, B), group_cover=None)
    assert keep.tolist() == [True, False, False, False]
    assert len(nms_masks(InstanceMasks.empty((H, W)))) == 0


def test_nms_compares_pixels_only_for_overlapping_boxes(monkeypatch):
    n_side = 40
    shape = (n_side * 6, n_side * 6)
    crops, offsets = [], []
    for i in range(n_side):
        for j in range(n_side):
            crops.append(np.ones((4, 4), bool))
            offsets.append((i * 6, j * 6))
    im = InstanceMasks(crops, np.asarray(offsets), np.ones(len(crops)), np.zeros((len(crops), 4)), shape)
    calls = []
    real = buildingfilter._intersection  # nms_keep's room since issue 22: patch it where it is used
    monkeypatch.setattr(buildingfilter, "_intersection", lambda *a: calls.append(1) or real(*a))
    keep = nms_keep(im)
    assert keep.all() and len(calls) == 0  # 1600 disjoint masks: no pixel work at all
    # one mask over a 3 x 3 patch of them: 9 pixel comparisons, not 1600
    big = InstanceMasks([np.ones((16, 16), bool)], np.array([[0, 0]]), np.ones(1), np.zeros((1, 4)), shape)
    keep = nms_keep(InstanceMasks.concatenate([im, big]))
    assert len(calls) == 9
    assert keep[:-1].all() and not keep[-1]  # it holds 9 disjoint masks and ground between them: a group


# ====================================================================== messages a user reads
def test_prompt_file_label_errors_show_plain_values(tmp_path: Path) -> None:
    """A bad label reads as the user wrote it (7, an empty cell), not as a numpy repr."""
    seven, null = tmp_path / "seven.gpkg", tmp_path / "null.gpkg"
    pt = shapely.Point(500010, 4999990)
    gpd.GeoDataFrame({"label": [7]}, geometry=[pt], crs="EPSG:32633").to_file(seven)
    gpd.GeoDataFrame({"label": [1.0, None]}, geometry=[pt, pt], crs="EPSG:32633").to_file(null)
    with pytest.raises(PromptError) as bad:
        read_prompt_file(seven)
    assert "field 'label' is 7;" in str(bad.value) and "np." not in str(bad.value), bad.value
    with pytest.raises(PromptError) as bad:
        read_prompt_file(null)
    assert "feature 1: field 'label' is empty (null);" in str(bad.value) and "nan" not in str(bad.value), bad.value
    with pytest.raises(PromptError, match=r"got 7\.$"):
        PointPrompt(1.0, 2.0, np.int64(7))  # type: ignore[arg-type]


def test_geojson_without_crs_in_projected_coordinates_names_the_file_and_the_fix(tmp_path: Path) -> None:
    """A GeoJSON without a "crs" member is WGS 84 by definition: UTM numbers in it are a wrong CRS,
    told with the file's name and how to set the right one, not as a failed transformation."""
    path = tmp_path / "clicks.geojson"
    feature = '{"type": "Feature", "properties": {}, "geometry": {"type": "Point", "coordinates": [500120, 4649880]}}'
    path.write_text(f'{{"type": "FeatureCollection", "features": [{feature}]}}')
    with pytest.raises(PromptError) as bad:
        read_prompt_file(path)
    text = str(bad.value)
    for must in (str(path), "(500120, 4649880)", "WGS 84", 'without a "crs" member', "ogr2ogr -a_srs"):
        assert must in text, (must, text)
    assert "\n" not in text


def test_prompt_with_a_missing_cache_dir_says_so_and_creates_nothing(tmp_path: Path) -> None:
    """`prompt` only reads the mask cache: a --cache-dir that does not exist is one line (no
    such folder; run extract first), exit 1, and the folder is not created."""
    from fastsam_geo.synthetic import write_scene

    write_scene(tmp_path / "s.tif", 64, seed=3)  # 500000-500032 E, 4649968-4650000 N
    before = sorted(tmp_path.rglob("*"))
    x, y = 500016.0, 4649984.0  # inside the raster
    repo = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": str(repo), "YOLO_OFFLINE": "1", "HF_HUB_OFFLINE": "1"}
    args = ["prompt", "s.tif", "q.gpkg", "--point", f"{x},{y}", "--cache-dir", "newcache/sub", "--tta", "1"]
    r = subprocess.run(
        [sys.executable, "-m", "fastsam_geo", *args], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300
    )
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert r.returncode == 1 and "Traceback" not in r.stderr and len(lines) == 1, r.stderr
    for must in ("Error: --cache-dir newcache/sub: no such folder", "fastsam-geo extract s.tif", "--cache-dir"):
        assert must in lines[0], (must, lines[0])
    assert sorted(tmp_path.rglob("*")) == before
