"""Scoring footprints against truth: matching, counts, reprojection, the seam score, errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import shapely
from affine import Affine
from shapely.geometry import LineString, Polygon, box

from fastsam_geo.errors import FastSAMGeoError
from fastsam_geo.evaluate import Scores, evaluate, match_buildings, pooled, seam_lines
from fastsam_geo.synthetic import plan_scene, truth_frame
from fastsam_geo.tiling import TileGrid
from fastsam_geo.vectorio import Features

pytestmark = pytest.mark.filterwarnings("ignore:Use `@` matmul:PendingDeprecationWarning")

CRS = "EPSG:32633"
X0, Y0 = 500000.0, 4650000.0
UTM = Affine(0.5, 0.0, X0, 0.0, -0.5, Y0)


def frame(geoms: list, crs: str | None = CRS) -> gpd.GeoDataFrame:
    return gpd.GeoDataFrame({"id": np.arange(len(geoms))}, geometry=geoms, crs=crs)


def sq(x: float, y: float, size: float = 10.0) -> Polygon:
    """A square building with its lower-left corner at ``(X0 + x, Y0 - 100 + y)``."""
    return box(X0 + x, Y0 - 100 + y, X0 + x + size, Y0 - 100 + y + size)


TRUTH = [sq(0, 0), sq(20, 0), sq(40, 0), sq(60, 0), sq(0, 30, 16)]


# --------------------------------------------------------------------------- matching and counts
def test_perfect_prediction() -> None:
    s = evaluate(frame(TRUTH), frame(TRUTH))
    assert (s.tp, s.fp, s.fn) == (5, 0, 0)
    assert s.precision == s.recall == s.f1 == 1.0
    assert s.mean_iou == pytest.approx(1.0)
    assert s.seam_score is None and s.seam_total == 0


def test_shifted_missing_and_extra_predictions() -> None:
    pred = [
        sq(2, 0),  # shifted 2 m: IoU 80 / 120 = 0.667 -> match
        sq(25, 0),  # shifted 5 m: IoU 50 / 150 = 0.333 -> FP (and truth 1 is an FN)
        sq(40, 0),  # exact
        # truth 3 and 4 missing
        sq(200, 200),  # extra, far away
        sq(60, 12),  # extra, near truth 3 but not touching it
    ]
    s = evaluate(frame(pred), frame(TRUTH))
    assert (s.tp, s.fp, s.fn) == (2, 3, 3)
    assert s.precision == pytest.approx(2 / 5)
    assert s.recall == pytest.approx(2 / 5)
    assert s.f1 == pytest.approx(2 / 5)
    assert s.mean_iou == pytest.approx((80 / 120 + 1.0) / 2)
    matches = match_buildings(pred, TRUTH)
    assert [(p, t) for p, t, _ in matches] == [(2, 2), (0, 0)]
    assert matches[1][2] == pytest.approx(80 / 120)


def test_iou_threshold_is_inclusive_and_configurable() -> None:
    truth = [box(0, 0, 10, 10)]
    half = [box(0, 0, 10, 5)]  # IoU exactly 0.5
    assert [(p, t) for p, t, _ in match_buildings(half, truth, iou_threshold=0.5)] == [(0, 0)]
    assert match_buildings(half, truth, iou_threshold=0.51) == []
    shifted = [box(2, 0, 12, 10)]  # IoU 0.667
    assert evaluate(frame(shifted), frame(truth), iou_threshold=0.7).tp == 0
    assert evaluate(frame(shifted), frame(truth), iou_threshold=0.6).tp == 1


def test_matching_is_one_to_one() -> None:
    truth = [sq(0, 0)]
    pred = [sq(1, 0), sq(0, 0)]  # both IoU >= 0.5 with the one truth building
    s = evaluate(frame(pred), frame(truth))
    assert (s.tp, s.fp, s.fn) == (1, 1, 0)
    # The best pair wins whatever the input order.
    assert match_buildings(pred, truth) == [(1, 0, 1.0)]
    assert match_buildings(pred[::-1], truth) == [(0, 0, 1.0)]
    # One big prediction over two truth buildings matches at most one of them.
    truth2 = [box(0, 0, 10, 10), box(10, 0, 20, 10)]
    big = [box(0, 0, 20, 10)]
    assert len(match_buildings(big, truth2, iou_threshold=0.5)) == 1


def test_greedy_takes_pairs_by_descending_iou() -> None:
    truth = [box(0, 0, 10, 10), box(12, 0, 22, 10)]
    pred = [
        box(1, 0, 11, 10),  # IoU 0.818 with truth 0 (listed first, but the exact one wins)
        box(0, 0, 10, 10),  # IoU 1.0 with truth 0
        box(11, 0, 21, 10),  # IoU 0.818 with truth 1
    ]
    got = [(p, t, round(iou, 3)) for p, t, iou in match_buildings(pred, truth)]
    assert got == [(1, 0, 1.0), (2, 1, 0.818)]


def test_invalid_and_null_geometries_do_not_break_scoring() -> None:
    bowtie = Polygon([(X0, Y0 - 100), (X0 + 10, Y0 - 90), (X0 + 10, Y0 - 100), (X0, Y0 - 90)])
    assert not bowtie.is_valid
    pred = frame([bowtie, None, sq(20, 0), Polygon()])
    s = evaluate(pred, frame(TRUTH[:2]))
    # Null and empty predictions are ignored; the bow-tie (two triangles) has IoU 0.5 with truth 0.
    assert (s.tp, s.fp, s.fn) == (2, 0, 0)


# --------------------------------------------------------------------------- empty inputs
def test_empty_inputs() -> None:
    empty = frame([])
    s = evaluate(empty, frame(TRUTH))
    assert (s.tp, s.fp, s.fn) == (0, 0, 5)
    assert s.precision == s.recall == s.f1 == s.mean_iou == 0.0
    s = evaluate(frame(TRUTH), empty)
    assert (s.tp, s.fp, s.fn) == (0, 5, 0)
    assert s.f1 == 0.0
    s = evaluate(empty, empty, seams=[LineString([(X0, Y0), (X0, Y0 - 100)])])
    assert (s.tp, s.fp, s.fn, s.f1) == (0, 0, 0, 0.0)
    assert s.seam_total == 0 and s.seam_score is None
    assert match_buildings([], []) == []
    assert match_buildings(TRUTH, []) == []


def test_an_empty_truth_file_is_refused_unless_it_may_mean_no_building(tmp_path: Path) -> None:
    """evaluate refuses an empty truth file (F1 against nothing); calibrate and train read the same
    file as a raster without buildings (a negative), as make_real.sh's Rio chips img58 and img59."""
    from fastsam_geo.evaluate import load_footprints

    path = tmp_path / "none.gpkg"
    gpd.GeoDataFrame(geometry=gpd.GeoSeries([], crs="EPSG:32633")).to_file(path, layer="buildings")
    with pytest.raises(FastSAMGeoError, match="has no footprints"):
        load_footprints(path, "truth")
    assert len(load_footprints(path, "truth", allow_empty=True)) == 0


def test_scores_as_dict() -> None:
    d = evaluate(frame(TRUTH), frame(TRUTH), seams=[]).as_dict()
    assert set(d) == {
        "tp",
        "fp",
        "fn",
        "precision",
        "recall",
        "f1",
        "mean_iou",
        "seam_total",
        "seam_single",
        "seam_score",
        "away_total",
        "away_single",
        "away_score",
        "pixel_precision",
        "pixel_recall",
        "pixel_f1",
        "truth_outside",
        "merged",
        "split",
        "missed",
        "unmapped",
    }
    assert d["tp"] == 5 and d["pixel_f1"] is None and d["seam_score"] is None
    assert isinstance(evaluate(frame(TRUTH), frame(TRUTH)), Scores)


# --------------------------------------------------------------------------- CRS and files
def test_prediction_in_another_crs_is_reprojected() -> None:
    truth = frame(TRUTH)
    pred = truth.to_crs("EPSG:4326")
    assert pred.crs.to_epsg() == 4326
    s = evaluate(pred, truth)
    assert (s.tp, s.fp, s.fn) == (5, 0, 0)
    assert s.mean_iou > 0.999


def test_files_are_read(tmp_path: Path) -> None:
    truth_path = tmp_path / "truth.gpkg"
    pred_path = tmp_path / "pred.geojson"
    frame(TRUTH).to_file(truth_path, layer="buildings", driver="GPKG")
    frame([sq(2, 0), sq(40, 0)]).to_crs("EPSG:4326").to_file(pred_path, driver="GeoJSON")
    s = evaluate(pred_path, str(truth_path))
    assert (s.tp, s.fp, s.fn) == (2, 0, 3)


def test_missing_file_raises(tmp_path: Path) -> None:
    truth_path = tmp_path / "truth.gpkg"
    frame(TRUTH).to_file(truth_path, driver="GPKG")
    with pytest.raises(FastSAMGeoError, match=r"no_such_pred\.gpkg") as info:
        evaluate(tmp_path / "no_such_pred.gpkg", truth_path)
    assert "\n" not in str(info.value)
    with pytest.raises(FastSAMGeoError, match=r"missing_truth\.gpkg"):
        evaluate(truth_path, tmp_path / "missing_truth.gpkg")


def test_file_without_crs_raises(tmp_path: Path) -> None:
    truth_path = tmp_path / "truth.gpkg"
    frame(TRUTH).to_file(truth_path, driver="GPKG")
    no_crs = tmp_path / "no_crs_pred.gpkg"
    with pytest.warns(UserWarning, match="crs"):
        frame(TRUTH, crs=None).to_file(no_crs, driver="GPKG")
    with pytest.raises(FastSAMGeoError, match=r"no_crs_pred\.gpkg.*no CRS") as info:
        evaluate(no_crs, truth_path)
    assert isinstance(info.value, ValueError)
    assert "\n" not in str(info.value)
    with pytest.raises(FastSAMGeoError, match="no CRS"):
        evaluate(frame(TRUTH), frame(TRUTH, crs=None))


def test_unreadable_file_raises(tmp_path: Path) -> None:
    junk = tmp_path / "junk_pred.gpkg"
    junk.write_text("not a geopackage")
    with pytest.raises(FastSAMGeoError, match=r"junk_pred\.gpkg") as info:
        evaluate(junk, frame(TRUTH))
    assert "\n" not in str(info.value)


# --------------------------------------------------------------------------- seams
def test_seam_lines_of_a_grid() -> None:
    # 200 x 100 px, tiles of 128 with 28 overlap: columns start at 0 and 72, the core boundary
    # lies at column 100; one row only, so no horizontal seam.
    grid = TileGrid(200, 100, tile_size=128, overlap=28, transform=UTM)
    lines = seam_lines(grid)
    assert [list(line.coords) for line in lines] == [[(X0 + 50.0, Y0), (X0 + 50.0, Y0 - 50.0)]]
    # 1000 x 600 px with 256 / 32: column cuts 240, 464, 688, 836 and row cuts 240, 412.
    grid = TileGrid(1000, 600, tile_size=256, overlap=32, transform=UTM)
    lines = seam_lines(grid)
    xs = [line.coords[0][0] - X0 for line in lines[:4]]
    ys = [Y0 - line.coords[0][1] for line in lines[4:]]
    assert xs == [120.0, 232.0, 344.0, 418.0]
    assert ys == [120.0, 206.0]
    for line in lines[:4]:  # vertical, spanning the raster
        (x_a, y_a), (x_b, y_b) = line.coords
        assert x_a == x_b and (y_a, y_b) == (Y0, Y0 - 300.0)
    for line in lines[4:]:  # horizontal
        (x_a, y_a), (x_b, y_b) = line.coords
        assert y_a == y_b and (x_a, x_b) == (X0, X0 + 500.0)
    assert seam_lines(TileGrid(100, 100, tile_size=256, overlap=32, transform=UTM)) == []


SEAM = [LineString([(X0 + 50.0, Y0), (X0 + 50.0, Y0 - 200.0)])]
ON_SEAM = box(X0 + 40, Y0 - 30, X0 + 60, Y0 - 10)  # 20 x 20, crosses x = X0 + 50
OFF_SEAM = box(X0, Y0 - 30, X0 + 10, Y0 - 20)


def test_building_split_at_a_seam_scores_zero_and_merged_scores_one() -> None:
    truth = frame([ON_SEAM, OFF_SEAM])
    left = box(X0 + 40, Y0 - 30, X0 + 50, Y0 - 10)
    right = box(X0 + 50, Y0 - 30, X0 + 60, Y0 - 10)
    split = evaluate(frame([left, right, OFF_SEAM]), truth, seams=SEAM)
    assert (split.seam_total, split.seam_single, split.seam_score) == (1, 0, 0.0)
    assert (split.tp, split.fp, split.fn) == (2, 1, 0)  # a half has IoU 0.5: one TP, one FP
    merged = evaluate(frame([ON_SEAM, OFF_SEAM]), truth, seams=SEAM)
    assert (merged.seam_total, merged.seam_single, merged.seam_score) == (1, 1, 1.0)
    # Only the off-seam building found: the seam building is missed, not single.
    missed = evaluate(frame([OFF_SEAM]), truth, seams=SEAM)
    assert (missed.seam_total, missed.seam_single, missed.seam_score) == (1, 0, 0.0)


@pytest.mark.parametrize(
    ("sliver_width", "single"),
    [(3.0, False), (1.0, True)],  # a second piece covering 15 % splits it; one covering 5 % does not
)
def test_a_second_piece_over_ten_percent_counts_as_split(sliver_width: float, single: bool) -> None:
    main = box(X0 + 40, Y0 - 30, X0 + 60 - sliver_width, Y0 - 10)
    sliver = box(X0 + 60 - sliver_width, Y0 - 30, X0 + 60, Y0 - 10)
    s = evaluate(frame([main, sliver]), frame([ON_SEAM]), seams=SEAM)
    assert s.tp == 1
    assert (s.seam_total, s.seam_single) == (1, int(single))


def test_duplicate_predictions_are_not_single() -> None:
    dup = box(X0 + 41, Y0 - 30, X0 + 60, Y0 - 10)
    s = evaluate(frame([ON_SEAM, dup]), frame([ON_SEAM]), seams=SEAM)
    assert (s.tp, s.fp) == (1, 1)
    assert (s.seam_total, s.seam_single) == (1, 0)


def test_seam_score_on_a_synthetic_town_matches_a_brute_force_oracle() -> None:
    """Cut every truth footprint by the tile cores (what a tiler without stitching does) and
    compare the seam counts with a plain-loop oracle."""
    plan = plan_scene(600, 600, seed=2)
    grid = TileGrid(600, 600, tile_size=256, overlap=32, transform=UTM)
    truth = truth_frame(plan, UTM, CRS)
    # Only the footprints inside the raster: a tiler can only cut what it sees.
    truth = truth[truth.within(box(X0, Y0 - 300.0, X0 + 300.0, Y0))].reset_index(drop=True)
    seams = seam_lines(grid)
    cores = [box(*grid.core_bounds(i)) for i in range(len(grid))]
    pieces: list = []
    piece_of: list[list[float]] = []
    for poly in truth.geometry:
        fractions = []
        for core in cores:
            part = poly.intersection(core)
            if part.area > 0:
                pieces.append(part)
                fractions.append(part.area / poly.area)
        piece_of.append(fractions)
    crossing = [any(poly.intersects(line) for line in seams) for poly in truth.geometry]
    single = [
        sum(f >= 0.5 for f in fr) == 1 and sum(f > 0.1 for f in fr) == 1
        for fr, cross in zip(piece_of, crossing, strict=True)
        if cross
    ]
    away_single = [
        sum(f >= 0.5 for f in fr) == 1 and sum(f > 0.1 for f in fr) == 1
        for fr, cross in zip(piece_of, crossing, strict=True)
        if not cross
    ]
    tp = sum(any(f >= 0.5 for f in fr) for fr in piece_of)
    assert sum(crossing) >= 5 and not all(single)

    cut = evaluate(frame(pieces), truth, seams=seams)
    assert (cut.seam_total, cut.seam_single) == (sum(crossing), sum(single))
    assert cut.seam_score == pytest.approx(sum(single) / sum(crossing))
    # Away from the seams nothing was cut: every building there is one piece.
    assert (cut.away_total, cut.away_single) == (len(away_single), sum(away_single)) == (len(away_single),) * 2
    assert cut.away_score == 1.0
    assert (cut.tp, cut.fp, cut.fn) == (tp, len(pieces) - tp, len(truth) - tp)

    whole = evaluate(truth, truth, seams=seams)
    assert (whole.seam_total, whole.seam_single, whole.seam_score) == (sum(crossing), sum(crossing), 1.0)
    # Stitched pieces (union per building) come back whole.
    stitched = shapely.union_all(pieces).geoms
    assert evaluate(frame(list(stitched)), truth, seams=seams).seam_score == 1.0


def test_real_spacenet_footprints_match_themselves_across_crs(
    spacenet_chips: list[tuple[Path, Path]],
) -> None:
    """Footprints polygonized from real SpaceNet building masks (EPSG:4326) score F1 = 1 against
    themselves in UTM 23S, and drop to the expected counts when half of them are removed."""
    import rasterio
    from rasterio.features import shapes

    geoms: list = []
    for _, mask_path in spacenet_chips:
        with rasterio.open(mask_path) as ds:
            mask = ds.read(1)
            crs = ds.crs
            geoms += [
                shapely.geometry.shape(g)
                for g, v in shapes(mask, mask=mask > 0, transform=ds.transform)
                if v > 0
            ]
    if not geoms:
        pytest.skip("the SpaceNet masks hold no building")
    truth = gpd.GeoDataFrame(geometry=geoms, crs=crs).to_crs("EPSG:32723")
    pred = gpd.GeoDataFrame(geometry=geoms, crs=crs)
    s = evaluate(pred, truth)
    assert (s.tp, s.fp, s.fn) == (len(geoms), 0, 0)
    assert s.mean_iou > 0.999
    s = evaluate(pred.iloc[::2], truth)
    assert (s.tp, s.fp, s.fn) == (len(pred.iloc[::2]), 0, len(geoms) - len(pred.iloc[::2]))


# --------------------------------------------------------------------------- on a raster's footprint
def _mosaic(path: Path, hole: bool = True) -> Path:
    """A 200 x 200 px, 0.5 m raster at (X0, Y0) whose left-bottom quarter is masked (a mosaic hole)."""
    import rasterio

    data = np.full((3, 200, 200), 120, np.uint8)
    with rasterio.open(path, "w", driver="GTiff", width=200, height=200, count=3, dtype="uint8", crs=CRS,
                       transform=UTM, photometric="RGB") as dst:
        dst.write(data)
        mask = np.full((200, 200), 255, np.uint8)
        if hole:
            mask[100:, :100] = 0
        dst.write_mask(mask)
    return path


def test_only_truth_on_the_rasters_valid_pixels_counts(tmp_path: Path) -> None:
    from fastsam_geo.evaluate import evaluate_on_raster, raster_footprint

    raster = _mosaic(tmp_path / "mosaic.tif")
    area, crs = raster_footprint(raster)
    assert crs.to_string() == CRS and area.area == pytest.approx(100 * 100 * 0.75, rel=0.01)
    on = [sq(60, 60), sq(80, 10)]  # on valid pixels (the raster spans 100 m from (X0, Y0 - 100))
    in_hole = [sq(10, 10), sq(25, 30)]  # in the masked quarter
    beyond = [box(X0 + 500, Y0 - 50, X0 + 510, Y0 - 40)]  # another part of the city
    half = [box(X0 + 95, Y0 - 50, X0 + 105, Y0 - 40)]  # half on the raster: counts
    truth = frame(on + in_hole + beyond + half)
    pred = frame(on + half + [sq(60, 30)])  # one false positive
    s = evaluate_on_raster(pred, truth, raster)
    assert (s.tp, s.fp, s.fn, s.truth_outside) == (3, 1, 0, 3)
    assert s.f1 == pytest.approx(2 * 0.75 * 1.0 / 1.75)
    # pixel F1: 300 m² of truth found, 100 m² extra (the half building counts its valid half: 50 m²)
    assert s.pixel_recall == pytest.approx(1.0) and s.pixel_precision == pytest.approx(250 / 350, abs=0.01)
    # without the footprint every building of the city counts as missed
    assert evaluate(pred, truth).fn == 3
    # the same in another CRS
    s4326 = evaluate_on_raster(pred.to_crs("EPSG:4326"), truth.to_crs("EPSG:4326"), raster)
    assert (s4326.tp, s4326.fp, s4326.fn) == (3, 1, 0)


def test_cli_per_source_table(tmp_path: Path) -> None:
    import json

    from click.testing import CliRunner

    from fastsam_geo.cli import main

    a = _mosaic(tmp_path / "a.tif")
    b = _mosaic(tmp_path / "b.tif", hole=False)
    truth = tmp_path / "truth.gpkg"
    frame([sq(60, 60), sq(80, 10), sq(10, 10)]).to_file(truth, layer="buildings")
    pred = tmp_path / "pred.gpkg"
    frame([sq(60, 60)]).to_file(pred, layer="buildings")
    r = CliRunner().invoke(main, ["evaluate", "--pair", str(pred), str(truth), str(a), "--pair", str(pred),
                                  str(truth), str(b)])
    assert r.exit_code == 0, r.output
    lines = r.output.splitlines()
    assert lines[0].split()[:3] == ["source", "truth", "TP"]
    assert lines[1].split()[:5] == ["a", "2", "1", "0", "1"]  # (10, 10) lies in a's hole
    assert lines[2].split()[:5] == ["b", "3", "1", "0", "2"]
    assert lines[3].startswith("all (pooled)") and lines[3].split()[2:7] == ["5", "2", "0", "3", "1.000"]
    r = CliRunner().invoke(main, ["evaluate", str(pred), str(truth), "--raster", str(a), "--json"])
    got = json.loads(r.output)
    assert got["fn"] == 1 and got["truth_outside"] == 1 and got["pixel_f1"] == pytest.approx(2 / 3, abs=0.01)
    r = CliRunner().invoke(main, ["evaluate", str(pred)])
    assert r.exit_code == 1 and "give both PRED and TRUTH" in r.output


def test_a_shapefile_without_pyogrio_names_the_extra(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """In the light install (pyogrio not importable) a Shapefile is one line naming the extra."""
    import sys

    shp = tmp_path / "truth.shp"
    frame(TRUTH).to_file(shp)
    assert evaluate(shp, shp).f1 == 1.0  # with pyogrio: read through it
    monkeypatch.setitem(sys.modules, "pyogrio", None)
    with pytest.raises(FastSAMGeoError, match=r'truth\.shp.*pip install "fastsam-geo\[vector\]"') as info:
        evaluate(shp, shp)
    assert "\n" not in str(info.value)


def test_merged_and_split_buildings_are_counted() -> None:
    truth = Features.of([box(0, 0, 10, 10), box(10, 0, 20, 10), box(40, 0, 50, 10), box(60, 0, 70, 10)], "EPSG:32633")
    pred = Features.of(
        [box(0, 0, 20, 10), box(40, 0, 44, 10), box(44, 0, 47, 10), box(47, 0, 50, 10), box(60, 0, 70, 10)],
        "EPSG:32633",
    )
    s = evaluate(pred, truth)
    assert (s.merged, s.split, s.tp) == (2, 1, 2)  # the merger still matches one at IoU 0.5
    both = pooled([s, s])
    assert (both.merged, both.split) == (4, 2)


def test_missed_and_unmapped_are_counted() -> None:
    """A building no prediction touches is missed; a prediction on no mapped building is unmapped (a sliver
    over 10 % of a building, or a prediction with 10 % of its area on one, is neither)."""
    truth = Features.of([box(0, 0, 10, 10), box(20, 0, 30, 10), box(40, 0, 50, 10)], "EPSG:32633")
    pred = Features.of(
        [box(0, 0, 10, 10), box(40, 0, 42, 10), box(60, 0, 70, 10), box(29.5, 0, 35, 10), box(48, 0, 58, 10)],
        "EPSG:32633",
    )
    s = evaluate(pred, truth)
    assert (s.missed, s.unmapped) == (1, 2)  # (20..30) missed; (60..70) and (29.5..35) unmapped
    assert (pooled([s, s]).missed, pooled([s, s]).unmapped) == (2, 4)


def test_overlapping_outlines_count_their_shared_area_once() -> None:
    """Three copies of one sliver over 6 % of a building cover 6 %, not 18 %: the building is
    missed. Two truth outlines drawn twice over 8 % of one prediction leave it unmapped."""
    truth = Features.of([box(0, 0, 10, 10), box(50, 0, 50.8, 10), box(50, 0, 50.8, 10)], "EPSG:32633")
    sliver = box(0, 0, 0.6, 10)
    pred = Features.of([sliver, sliver, sliver, box(50, 0, 60, 10)], "EPSG:32633")
    s = evaluate(pred, truth)
    assert (s.missed, s.unmapped) == (1, 1)  # the building; the wide outline (the slivers lie on it)


def test_away_from_seams_pools_only_sources_with_seams() -> None:
    """The share found as one polygon away from the seams (what the seam score compares with)
    pools the sources that have seams: a one-tile raster has none to compare."""
    truth = Features.of([box(0, 0, 10, 10), box(20, 0, 30, 10), box(40, 0, 50, 10)], "EPSG:32633")
    pred = Features.of([box(0, 0, 10, 10), box(20, 0, 25, 10), box(25, 0, 30, 10), box(40, 0, 50, 10)], "EPSG:32633")
    seam = [LineString([(45, -5), (45, 20)])]
    s = evaluate(pred, truth, seams=seam)
    assert (s.seam_total, s.seam_single, s.away_total, s.away_single) == (1, 1, 2, 1)
    assert s.away_score == 0.5
    no_seam = evaluate(pred, truth, seams=[])
    assert (no_seam.seam_total, no_seam.away_total, no_seam.seam_score) == (0, 3, None)
    both = pooled([s, no_seam])
    assert (both.away_total, both.away_single, both.away_score) == (2, 1, 0.5)


# --------------------------------------------------------------------------- refusals and names (the probe)
FSG = [sys.executable, "-m", "fastsam_geo"]
ENV = {**os.environ, "YOLO_OFFLINE": "1", "HF_HUB_OFFLINE": "1", "YOLO_VERBOSE": "False"}


def run_evaluate(*args: object) -> subprocess.CompletedProcess[str]:
    """``fastsam-geo evaluate ARGS`` in a subprocess (its stderr as a user sees it)."""
    return subprocess.run([*FSG, "evaluate", *map(str, args)], capture_output=True, text=True, timeout=120, env=ENV)


def one_line_error(r: subprocess.CompletedProcess[str], *parts: str) -> str:
    """The one ``Error:`` line of a refused run (exit code 1, no traceback), holding every one of ``parts``."""
    assert r.returncode == 1, (r.stdout, r.stderr)
    assert "Traceback" not in r.stderr, r.stderr
    lines = [line for line in r.stderr.splitlines() if line.startswith("Error:")]
    assert len(lines) == 1, r.stderr
    for part in parts:
        assert part in lines[0], lines[0]
    return lines[0]


def test_projected_coordinates_in_a_geographic_crs_are_refused(tmp_path: Path) -> None:
    """A GeoJSON without a "crs" member is read as WGS 84: UTM metres in it are not degrees."""
    from fastsam_geo.evaluate import load_footprints

    features = [{"type": "Feature", "properties": {}, "geometry": shapely.geometry.mapping(g)} for g in TRUTH]
    no_crs = tmp_path / "utm_no_crs.geojson"
    no_crs.write_text(json.dumps({"type": "FeatureCollection", "features": features}))
    truth = tmp_path / "truth.gpkg"
    frame(TRUTH).to_file(truth, layer="buildings")
    for args in ((no_crs, truth), (truth, no_crs)):
        line = one_line_error(run_evaluate(*args), str(no_crs), "WGS 84", "ogr2ogr -a_srs", "500000")
        assert '"crs"' in line
    with pytest.raises(FastSAMGeoError, match=r"utm_no_crs\.geojson.*geographic"):
        load_footprints(no_crs, "truth", allow_empty=True)  # calibrate's and train's way in
    # Degrees in WGS 84 are fine, up to the antimeridian and the poles.
    edge = frame([box(-180, -90, -179, -89), box(179, 89, 180, 90)], crs="EPSG:4326")
    assert len(load_footprints(edge, "truth")) == 2


def test_prediction_and_truth_in_different_places_are_refused(tmp_path: Path) -> None:
    """Truth 100 km away, or truth with latitude and longitude swapped, is not an F1 of 0."""
    pred = tmp_path / "pred.gpkg"
    frame(TRUTH).to_file(pred, layer="buildings")
    far = tmp_path / "far.gpkg"
    frame([shapely.affinity.translate(g, 100_000, 0) for g in TRUTH]).to_file(far, layer="buildings")
    swapped = tmp_path / "swapped.gpkg"
    lonlat = frame(TRUTH).to_crs("EPSG:4326")
    lonlat.geometry = shapely.transform(lonlat.geometry.values, lambda xy: xy[:, ::-1])
    lonlat.to_file(swapped, layer="buildings")
    for truth in (far, swapped):
        one_line_error(run_evaluate(pred, truth), str(pred), str(truth), "different places", "wrong CRS")
    with pytest.raises(FastSAMGeoError, match="different places"):
        evaluate(frame(TRUTH), frame([shapely.affinity.translate(g, 100_000, 0) for g in TRUTH]))
    assert run_evaluate(pred, pred).returncode == 0


def test_truth_or_prediction_off_the_raster_is_refused_but_an_empty_tile_is_not(tmp_path: Path) -> None:
    """Truth of another place or a prediction of another raster is refused; truth over the raster with no
    building on its valid pixels is an empty tile of a pooled run, scored as such."""
    raster = _mosaic(tmp_path / "tile.tif")  # its left-bottom quarter masked
    pred = tmp_path / "pred.gpkg"
    frame([sq(60, 60)]).to_file(pred, layer="buildings")
    far = tmp_path / "far_truth.gpkg"
    frame([shapely.affinity.translate(g, 100_000, 0) for g in TRUTH]).to_file(far, layer="buildings")
    one_line_error(run_evaluate(pred, far, "--raster", raster), str(far), str(raster))
    other_raster = tmp_path / "other_raster_pred.gpkg"
    frame([shapely.affinity.translate(sq(60, 60), 0, 50_000)]).to_file(other_raster, layer="buildings")
    truth = tmp_path / "truth.gpkg"
    frame([sq(60, 60), sq(80, 10)]).to_file(truth, layer="buildings")
    one_line_error(run_evaluate("--pair", other_raster, truth, raster), str(other_raster), str(raster))
    in_hole = tmp_path / "in_hole.gpkg"  # over the raster, only on masked pixels
    frame([sq(10, 10), sq(25, 30)]).to_file(in_hole, layer="buildings")
    empty_pred = tmp_path / "empty_pred.gpkg"
    gpd.GeoDataFrame(geometry=gpd.GeoSeries([], crs=CRS)).to_file(empty_pred, layer="buildings")
    r = run_evaluate("--json", "--pair", pred, truth, raster, "--pair", empty_pred, in_hole, raster)
    assert r.returncode == 0, r.stderr
    got = json.loads(r.stdout)
    assert got["all"]["tp"] == 1 and got["all"]["fn"] == 1 and got["all"]["truth_outside"] == 2


def test_pair_sources_with_the_same_stem_or_named_all_keep_their_own_names(tmp_path: Path) -> None:
    """a/r.tif and b/r.tif are two sources, and a raster called all.tif is not the pooled entry."""
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    a, b = _mosaic(tmp_path / "a" / "r.tif"), _mosaic(tmp_path / "b" / "r.tif", hole=False)
    named_all = _mosaic(tmp_path / "all.tif")
    truth = tmp_path / "truth.gpkg"
    frame([sq(60, 60), sq(80, 10), sq(10, 10)]).to_file(truth, layer="buildings")
    pred = tmp_path / "pred.gpkg"
    frame([sq(60, 60)]).to_file(pred, layer="buildings")
    r = run_evaluate("--json", "--pair", pred, truth, a, "--pair", pred, truth, b, "--pair", pred, truth, named_all)
    assert r.returncode == 0, r.stderr
    got = json.loads(r.stdout)
    assert set(got) == {str(a), str(b), str(named_all), "all"}
    assert (got[str(a)]["fn"], got[str(b)]["fn"], got[str(named_all)]["fn"]) == (1, 2, 1)
    assert got["all"]["tp"] == 3 and got["all"]["fn"] == 4
    r = run_evaluate("--pair", pred, truth, a, "--pair", pred, truth, b, "--pair", pred, truth, named_all)
    assert r.returncode == 0, r.stderr
    names = [line.split()[0] for line in r.stdout.splitlines()[1:]]
    assert names == [str(a), str(b), str(named_all), "all"]  # the last is "all (pooled)"
    r = run_evaluate("--json", "--pair", pred, truth, a, "--pair", pred, truth, tmp_path / "all.tif")
    assert set(json.loads(r.stdout)) == {"r", str(tmp_path / "all.tif"), "all"}


def test_seam_score_uses_the_tiling_the_prediction_records(tmp_path: Path) -> None:
    """The seams are the prediction's own (its GeoPackage records --tile-size and --overlap); a --tile-size
    that differs from the recorded one is used, with a warning."""
    from fastsam_geo.output import write_run_tables

    raster = _mosaic(tmp_path / "tile.tif", hole=False)
    seam = seam_lines(TileGrid(200, 200, tile_size=128, overlap=16, transform=UTM))[0]
    x = seam.coords[0][0] - X0
    on_seam = [sq(x - 5, 60), sq(10, 60)]
    truth = tmp_path / "truth.gpkg"
    frame(on_seam).to_file(truth, layer="buildings")
    pred = tmp_path / "pred.gpkg"
    frame(on_seam).to_file(pred, layer="buildings")
    write_run_tables(pred, {"fastsam_geo_metadata": {"tile_size": "128", "overlap": "16", "gsd_m": "0.5"}})
    r = run_evaluate(pred, truth, "--raster", raster, "--json")
    assert r.returncode == 0, r.stderr
    got = json.loads(r.stdout)
    assert (got["seam_total"], got["seam_single"], got["away_total"]) == (1, 1, 1)
    assert "Warning" not in r.stderr
    r = run_evaluate(pred, truth, "--raster", raster, "--json", "--tile-size", "1024")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["seam_total"] == 0  # one tile of 1024: no seam
    warnings = [line for line in r.stderr.splitlines() if "Warning" in line]
    assert len(warnings) == 1 and "128" in warnings[0] and "1024" in warnings[0] and str(pred) in warnings[0]
    r = run_evaluate(pred, truth, "--raster", raster, "--json", "--tile-size", "128")
    assert r.returncode == 0 and "Warning" not in r.stderr and json.loads(r.stdout)["seam_total"] == 1


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_nan_or_inf_coordinates_are_refused_in_one_line(tmp_path: Path, bad: float) -> None:
    with np.errstate(invalid="ignore"):
        broken = Polygon([(X0, Y0 - 10), (bad, Y0 - 5), (X0 + 5, Y0 - 5), (X0, Y0 - 10)])
    for role in ("truth", "pred"):
        path = tmp_path / f"{role}_nan.gpkg"
        with np.errstate(invalid="ignore"):
            frame([*TRUTH, broken, broken]).to_file(path, layer="buildings")
        good = tmp_path / "good.gpkg"
        frame(TRUTH).to_file(good, layer="buildings")
        args = (good, path) if role == "truth" else (path, good)
        one_line_error(run_evaluate(*args), str(path), "2 ", "NaN or infinite", "remove or repair")
    with pytest.raises(FastSAMGeoError, match="1 truth feature"):
        evaluate(frame(TRUTH), frame([*TRUTH, broken]))


def test_polygons_inside_a_geometry_collection_are_scored(tmp_path: Path) -> None:
    """A valid GeometryCollection of polygons is a footprint: its polygons count, its lines do not."""
    from shapely.geometry import GeometryCollection

    collection = GeometryCollection([TRUTH[3], LineString([(X0, Y0), (X0 + 5, Y0)])])
    truth = tmp_path / "truth.gpkg"
    frame([*TRUTH[:3], collection, TRUTH[4]]).to_file(truth, layer="buildings")
    s = evaluate(frame(TRUTH), truth)
    assert (s.tp, s.fp, s.fn, s.f1) == (5, 0, 0, 1.0)
    two = GeometryCollection([TRUTH[0], TRUTH[1]])
    s = evaluate(frame(TRUTH[:2]), frame([two]))
    assert (s.tp, s.fp, s.fn) == (1, 1, 0)  # one footprint of two parts


def test_polygons_inside_nested_geometry_collections_are_scored(tmp_path: Path) -> None:
    """A collection inside a collection (as some editors and make_valid write) keeps its polygons."""
    from shapely.geometry import GeometryCollection

    nested = GeometryCollection([GeometryCollection([TRUTH[3]]), LineString([(X0, Y0), (X0 + 5, Y0)])])
    truth = tmp_path / "truth.gpkg"
    frame([*TRUTH[:3], nested, TRUTH[4]]).to_file(truth, layer="buildings")
    s = evaluate(frame(TRUTH), truth)
    assert (s.tp, s.fp, s.fn, s.f1) == (5, 0, 0, 1.0)
