"""Confidence calibration with the extract pipeline (fastsam_geo.calibrate, `fastsam-geo calibrate`)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

REPO = Path(__file__).resolve().parents[1]
TOWN_N = REPO / "weights" / "fastsam-geo-town-n.pt"

pytestmark = pytest.mark.model


@pytest.fixture(scope="module")
def two_scenes(tmp_path_factory: pytest.TempPathFactory) -> list[tuple[Path, Path]]:
    """Two small synthetic towns (0.5 m, several 256 px tiles each) with their truth."""
    from fastsam_geo.synthetic import write_scene

    d = tmp_path_factory.mktemp("calib")
    out = []
    for seed in (21, 22):
        write_scene(d / f"t{seed}.tif", 448, seed=seed)
        out.append((d / f"t{seed}.tif", d / f"t{seed}_buildings.gpkg"))
    return out


@pytest.mark.parametrize("tta", [1, 12])
def test_replayed_thresholds_score_like_runs_at_that_threshold(two_scenes, tmp_path: Path, tta: int) -> None:
    """The model runs once per tile (its views once); each threshold's result equals a real extract
    run at it with the same views: one view, and the default 12 fused again at each threshold."""
    from fastsam_geo.calibrate import best_threshold, calibrate_conf
    from fastsam_geo.evaluate import evaluate_on_raster, pooled
    from fastsam_geo.pipeline import extract_buildings

    rasters, labels = [r for r, _ in two_scenes], [t for _, t in two_scenes]
    grid = (0.1, 0.4, 0.7)
    cal = calibrate_conf(TOWN_N, rasters, labels, grid=grid, tile_size=256, overlap=64, tta=tta)
    assert cal.grid == grid and len(cal.per_source) == 2 and cal.tta == tta
    for k, c in enumerate(grid):
        direct = []
        for raster, truth in two_scenes:
            out = tmp_path / f"{raster.stem}_{c}.gpkg"
            extract_buildings(raster, out, weights=TOWN_N, conf=c, tile_size=256, overlap=64, device="cpu", tta=tta)
            direct.append(evaluate_on_raster(out, truth, raster))
        got = [s[k] for s in cal.per_source.values()]
        assert [(s.tp, s.fp, s.fn) for s in got] == [(s.tp, s.fp, s.fn) for s in direct], c
        assert [s.pixel_f1 for s in got] == pytest.approx([s.pixel_f1 for s in direct])
        assert cal.pooled[k].tp == pooled(direct).tp
    # more polygons at a lower threshold; the chosen one: the best (smoothed) mean of the sources' F1
    assert cal.pooled[0].tp + cal.pooled[0].fp >= cal.pooled[-1].tp + cal.pooled[-1].fp
    mean = [(a[k].f1 + b[k].f1) / 2 for a, b in [list(cal.per_source.values())] for k in range(3)]
    assert cal.mean_f1 == pytest.approx(mean)
    assert cal.conf == best_threshold(grid, mean) and mean[grid.index(cal.conf)] > 0.8


def test_cli_calibrate_writes_the_threshold_into_the_model(two_scenes, tmp_path: Path) -> None:
    from fastsam_geo.cli import main
    from fastsam_geo.modelmeta import read_model_meta
    from fastsam_geo.segment import FastSAMSegmenter

    weights = tmp_path / "mine.pt"
    shutil.copyfile(TOWN_N, weights)
    before = read_model_meta(weights)
    (raster, truth), _ = two_scenes
    r = CliRunner().invoke(main, ["calibrate", str(weights), str(raster), "--labels", str(truth), "--write"])
    assert r.exit_code == 0, r.output
    rows = [line.split() for line in r.output.splitlines() if line[:2] == "0."]
    assert len(rows) == 10 and sum(row[-1] == "<" for row in rows) == 1, r.output
    chosen = float(next(row[0] for row in rows if row[-1] == "<"))
    assert f"best threshold: {chosen:.2f}" in r.output
    # and the raster's own line at that threshold: the same counts as the pooled row (one raster)
    assert f"source at conf {chosen:.2f}" in r.output
    (source,) = [line.split() for line in r.output.splitlines() if line.startswith("000_")]
    pooled = next(row for row in rows if row[-1] == "<")
    assert source[0] == f"000_{raster.stem}" and source[1:4] == pooled[3:6], r.output
    after = read_model_meta(weights)
    assert after["conf"] == pytest.approx(chosen) and after["conf_tta"] == 12  # and the views it was chosen for
    new = ("conf", "conf_tta")
    assert {k: v for k, v in after.items() if k not in new} == {k: v for k, v in before.items() if k not in new}
    assert FastSAMSegmenter(weights, device="cpu").conf == pytest.approx(chosen)
    r = CliRunner().invoke(main, ["info", str(raster), "--weights", str(weights)])
    assert f"conf:     {chosen:g} (the model's confidence threshold, chosen for --tta 12;" in r.output, r.output
    # without --write nothing changes; a labels count that fits no raster count is refused
    r = CliRunner().invoke(
        main, ["calibrate", str(TOWN_N), str(raster), str(raster), "--labels", "a", "--labels", "b", "--labels", "c"]
    )
    assert r.exit_code == 1 and "one --labels file or one per raster" in r.output
    assert read_model_meta(TOWN_N) == before


def test_cli_calibrate_runs_extract_with_the_given_tiling_and_filter(two_scenes) -> None:
    """--tile-size, --overlap, --min-area and --tta reach each extract run: the CLI's table equals the
    API's with the same settings, and differs from the defaults' (a 30 m² minimum drops small houses;
    two views are not one)."""
    from fastsam_geo.calibrate import Calibration, calibrate_conf
    from fastsam_geo.cli import main
    from fastsam_geo.plan import BuildingFilter

    (raster, truth), _ = two_scenes
    args = ["calibrate", str(TOWN_N), str(raster), "--labels", str(truth), "--tile-size", "256", "--overlap", "64"]
    r = CliRunner().invoke(main, [*args, "--min-area", "30", "--tta", "2"])
    assert r.exit_code == 0, r.output
    assert "for --tta 2" in r.output
    kw = {"tile_size": 256, "overlap": 64}
    cal = calibrate_conf(TOWN_N, [raster], truth, building_filter=BuildingFilter(30.0), tta=2, **kw)
    rows = [line.split() for line in r.output.splitlines() if line[:2] == "0."]
    assert [tuple(map(int, row[3:6])) for row in rows] == [(s.tp, s.fp, s.fn) for s in cal.pooled], r.output
    def counts(c: Calibration) -> list[tuple[object, ...]]:
        return [(s.tp, s.fp, s.fn, round(s.pixel_f1 or 0.0, 6)) for s in c.pooled]

    assert counts(calibrate_conf(TOWN_N, [raster], truth, tta=2, **kw)) != counts(cal)  # the 8 m² default
    one_view = calibrate_conf(TOWN_N, [raster], truth, building_filter=BuildingFilter(30.0), tta=1, **kw)
    assert counts(one_view) != counts(cal) and one_view.tta == 1 and cal.tta == 2


def test_onnx_threshold_is_stored_beside_its_other_metadata(tmp_path: Path) -> None:
    from fastsam_geo.calibrate import store_conf
    from fastsam_geo.modelmeta import read_model_meta

    onnx_path = tmp_path / "m.onnx"
    shutil.copyfile(REPO / "weights" / "fastsam-geo-town-n.onnx", onnx_path)
    before = read_model_meta(onnx_path)
    store_conf(onnx_path, 0.17)
    assert read_model_meta(onnx_path) == {**before, "conf": 0.17}
    # the views a threshold was chosen for are stored with it, and go when a later one is stored without them
    store_conf(onnx_path, 0.2, tta=12)
    assert read_model_meta(onnx_path) == {**before, "conf": 0.2, "conf_tta": 12}
    store_conf(onnx_path, 0.17)
    assert read_model_meta(onnx_path) == {**before, "conf": 0.17}
    pt = tmp_path / "m.pt"
    shutil.copyfile(TOWN_N, pt)
    store_conf(pt, 0.2, tta=12)
    assert read_model_meta(pt)["conf_tta"] == 12
    store_conf(pt, 0.3)
    assert read_model_meta(pt)["conf"] == 0.3 and "conf_tta" not in read_model_meta(pt)


def test_a_missing_footprint_file_fails_before_any_tile_is_segmented(two_scenes) -> None:
    from fastsam_geo.calibrate import calibrate_conf
    from fastsam_geo.errors import EvaluationError

    class Refuses:
        def segment(self, tiles):
            raise AssertionError("the model ran before the labels were read")

    (raster, truth), _ = two_scenes
    with pytest.raises(EvaluationError, match=r"/nope\.gpkg: no such truth file"):
        calibrate_conf(TOWN_N, [raster, raster], [truth, "/nope.gpkg"], segmenter=Refuses())


def test_write_keeps_a_model_and_its_onnx_twin_together(two_scenes, tmp_path: Path) -> None:
    """--write on a .pt with its ONNX export beside it wrote the .pt only: its checksum changed, the .onnx no
    longer counted as its export, and extract ran on torch from then on (about 2.75x slower), the .onnx
    keeping no threshold. Both get it now, the .onnx naming the rewritten .pt as its source; --write on the
    .onnx does the same."""
    import subprocess
    import sys

    from fastsam_geo.modelmeta import read_model_meta
    from fastsam_geo.segmenters import onnx_twin
    from fastsam_geo.weights import sha256_file

    pt, onnx = tmp_path / "mine.pt", tmp_path / "mine.onnx"
    shutil.copyfile(TOWN_N, pt)
    shutil.copyfile(TOWN_N.with_suffix(".onnx"), onnx)
    (raster, truth), _ = two_scenes
    env = {"PATH": "/usr/bin:/bin", "YOLO_OFFLINE": "1", "HOME": str(tmp_path)}
    fast = ["--labels", str(truth), "--write", "--tta", "1", "--tile-size", "256", "--gsd", "native"]
    for model in (pt, onnx):
        r = subprocess.run(
            [sys.executable, "-m", "fastsam_geo", "calibrate", str(model), str(raster), *fast],
            capture_output=True, text=True, env=env, timeout=600,
        )  # fmt: skip
        assert r.returncode == 0, r.stderr
        assert f"stored in {pt} and its ONNX twin {onnx}" in r.stdout, r.stdout
        conf = float(r.stdout.split("best threshold: ")[1].split()[0])
        assert read_model_meta(pt)["conf"] == read_model_meta(onnx)["conf"] == pytest.approx(conf, abs=0.005)
        assert onnx_twin(pt, sha256_file(pt)) == onnx
    r = subprocess.run(
        [sys.executable, "-m", "fastsam_geo", "info", str(raster), "--weights", str(pt)],
        capture_output=True, text=True, env=env, timeout=300,
    )  # fmt: skip
    assert "ONNX Runtime" in r.stdout + r.stderr, r.stdout + r.stderr
