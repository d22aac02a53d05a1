"""The command line: conventions, bad input, several rasters, resume after a kill, Ctrl-C."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import geopandas as gpd
import numpy as np
import pyogrio
import pytest
import rasterio
import shapely
from affine import Affine
from click.testing import CliRunner

from fastsam_geo import __version__
from fastsam_geo.cli import main
from fastsam_geo.ledger import ledger_path
from fastsam_geo.output import read_run_tables
from fastsam_geo.synthetic import Scene, write_scene

FSG = [sys.executable, "-m", "fastsam_geo"]
ENV = {**os.environ, "YOLO_OFFLINE": "1", "HF_HUB_OFFLINE": "1", "YOLO_VERBOSE": "False"}


def run_cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*FSG, *args], capture_output=True, text=True, timeout=timeout, env=ENV)


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> Scene:
    return write_scene(tmp_path_factory.mktemp("small") / "small.tif", 512, seed=21)


# ------------------------------------------------------------------ conventions
def test_version_and_help_with_examples() -> None:
    r = CliRunner().invoke(main, ["--version"])
    assert r.exit_code == 0 and __version__ in r.output
    for cmd in ("extract", "prompt", "evaluate", "train", "sample", "info"):
        r = CliRunner().invoke(main, [cmd, "--help"])
        assert r.exit_code == 0, r.output
        assert "Example" in r.output


def test_info_describes_raster_and_tiles(small: Scene) -> None:
    args = ["info", str(small.raster), "--tile-size", "256", "--overlap", "32", "--gsd", "native"]
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 0, r.output
    assert "EPSG:32633" in r.output and "tiles:    9 (3 x 3)" in r.output
    # the default model's working resolution (0.25 m) and confidence threshold, read from its file
    r = CliRunner().invoke(main, ["info", str(small.raster), "--tile-size", "256", "--overlap", "32"])
    assert r.exit_code == 0, r.output
    from fastsam_geo.modelmeta import read_model_meta, weights_conf
    from fastsam_geo.weights import resolve_weights

    stored = weights_conf(resolve_weights(None))
    assert read_model_meta(resolve_weights(None)).get("conf") == stored  # calibrated and stored, not the fallback
    assert "0.25 m per pixel (resampled)" in r.output and f"conf:     {stored:g} " in r.output, r.output
    # the engine extract would pick: the .pt's ONNX export on ONNX Runtime; at 2048 px tiles the .pt
    assert "engine:   ONNX Runtime (fastsam-geo-n.onnx, the ONNX export beside the .pt" in r.output, r.output
    r = CliRunner().invoke(main, ["info", str(small.raster), "--tile-size", "2048"])
    assert "engine:   torch (fastsam-geo-n.pt)" in r.output, r.output


def test_sample_then_evaluate_truth_against_itself(tmp_path: Path) -> None:
    out = tmp_path / "s.tif"
    r = CliRunner().invoke(main, ["sample", str(out), "--size", "300", "--seed", "4"])
    assert r.exit_code == 0, r.output
    truth = tmp_path / "s_buildings.gpkg"
    r = CliRunner().invoke(
        main,
        ["evaluate", str(truth), str(truth), "--json", "--raster", str(out), "--tile-size", "128", "--overlap", "16"],
    )
    assert r.exit_code == 0, r.output
    scores = json.loads(r.output)
    assert scores["f1"] == 1.0 and scores["seam_score"] == 1.0


# ------------------------------------------------------------------ bad input
def _no_crs(tmp: Path) -> Path:
    path = tmp / "nocrs.tif"
    with rasterio.open(
        path, "w", driver="GTiff", width=64, height=64, count=3, dtype="uint8", transform=Affine(0.5, 0, 0, 0, -0.5, 0)
    ) as ds:
        ds.write(np.zeros((3, 64, 64), np.uint8))
    return path


def _all_nodata(tmp: Path) -> Path:
    path = tmp / "nodata.tif"
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        width=300,
        height=300,
        count=3,
        dtype="uint8",
        nodata=0,
        crs="EPSG:32633",
        transform=Affine(0.5, 0, 500000, 0, -0.5, 4650000),
    ) as ds:
        ds.write(np.zeros((3, 300, 300), np.uint8))
    return path


def _truncated(tmp: Path, src: Path) -> Path:
    path = tmp / "truncated.tif"
    data = src.read_bytes()
    path.write_bytes(data[: len(data) // 3])
    return path


BAD_CASES = {
    "not_a_raster": ("cannot be read as a raster", lambda t, s: (t / "notes.tif", "just text")),
    "missing": ("no such file", lambda t, s: (t / "missing.tif", None)),
    "no_crs": ("has no CRS", lambda t, s: (_no_crs(t), None)),
    "all_nodata": ("every tile is nodata", lambda t, s: (_all_nodata(t), None)),
    "truncated": ("truncated or corrupt", lambda t, s: (_truncated(t, s.raster), None)),
}


def _make_bad(case: str, tmp: Path, small: Scene) -> Path:
    path, text = BAD_CASES[case][1](tmp, small)
    if text is not None:
        path.write_text(text)
    return path


@pytest.mark.model
@pytest.mark.parametrize("case", sorted(BAD_CASES))
def test_bad_raster_one_line_no_traceback_no_output(case: str, tmp_path: Path, small: Scene, random_fastsam_s) -> None:
    raster = _make_bad(case, tmp_path, small)
    out = tmp_path / "out" / "b.gpkg"
    out.parent.mkdir()
    r = run_cli("extract", str(raster), str(out), "-w", str(random_fastsam_s), "--tile-size", "256", "--no-cache")
    assert r.returncode == 1, r.stderr
    assert "Traceback" not in r.stderr
    errors = [line for line in r.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and BAD_CASES[case][0] in errors[0] and raster.name in errors[0], r.stderr
    assert list(out.parent.iterdir()) == []


def test_verbose_shows_the_traceback(tmp_path: Path) -> None:
    r = run_cli("-v", "extract", str(tmp_path / "missing.tif"), str(tmp_path / "b.gpkg"))
    assert r.returncode != 0 and "Traceback" in r.stderr


@pytest.mark.parametrize(
    "args,message",
    [
        (["--point", "0,0"], "lies outside"),
        (["--box", "0,0,10,10"], "lies outside"),
        (["--point", "12.0,45.0", "--prompt-crs", "EPSG:4326"], "lies outside"),
        (["--point", "1e300,0"], "point (1e+300, 0.000) in EPSG:"),  # not 300 digits
        (["--text", "building", "--clip-weights", "/nonexistent/clip.pt"], "clip.pt"),
        (["-w", "__TEXT_PT__"], "Cannot load model weights"),
        (["-w", "/nonexistent/FastSAM-x.pt"], "FastSAM-x.pt"),
    ],
)
def test_bad_prompts_and_weights(args: list[str], message: str, small: Scene, tmp_path: Path) -> None:
    text_pt = tmp_path / "model.pt"
    text_pt.write_text("not a checkpoint")
    args = [str(text_pt) if a == "__TEXT_PT__" else a for a in args]
    out = tmp_path / "b.gpkg"
    r = run_cli("extract", str(small.raster), str(out), "--no-cache", *args)
    assert r.returncode == 1, r.stderr
    assert "Traceback" not in r.stderr
    errors = [line for line in r.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and message in errors[0], r.stderr
    assert not out.exists() and not ledger_path(out).exists()


def test_unwritable_folder_and_existing_output(small: Scene, tmp_path: Path) -> None:
    r = CliRunner().invoke(main, ["extract", str(small.raster), "/proc/b.gpkg", "--no-cache"])
    assert r.exit_code == 1 and "not writable" in r.output
    out = tmp_path / "b.gpkg"
    out.write_bytes(b"precious")
    r = CliRunner().invoke(main, ["extract", str(small.raster), str(out), "--no-cache"])
    assert r.exit_code == 1 and "--overwrite" in r.output
    assert out.read_bytes() == b"precious"


@pytest.mark.model
def test_corrupt_tile_is_reported_and_skipped(tmp_path: Path, random_fastsam_s) -> None:
    scene = write_scene(tmp_path / "c.tif", 768, seed=5)
    with rasterio.open(scene.raster) as ds:
        offset = int(ds.get_tag_item("BLOCK_OFFSET_1_1", "TIFF", bidx=1))
    with open(scene.raster, "r+b") as f:  # garble one deflate block in the middle of the raster
        f.seek(offset)
        f.write(os.urandom(2000))
    out = tmp_path / "b.gpkg"
    r = run_cli(
        "extract",
        str(scene.raster),
        str(out),
        "-w",
        str(random_fastsam_s),
        "--conf",
        "0.05",
        "--tile-size",
        "256",
        "--overlap",
        "32",
        "--no-cache",
        "--json",
    )
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout)
    assert 1 <= summary["tiles_failed"] < summary["tiles_total"]
    assert summary["tiles_processed"] + summary["tiles_failed"] == summary["tiles_total"]
    assert "tiles failed" in r.stderr
    ledger = read_run_tables(out)[1]
    assert (ledger.status == "failed").sum() == summary["tiles_failed"]


# ------------------------------------------------------------------ several rasters
@pytest.mark.model
def test_several_rasters_layers_and_merged(tmp_path: Path, random_fastsam_s) -> None:
    folder = tmp_path / "in"
    for seed in (1, 2):
        write_scene(folder / f"town{seed}.tif", 256, seed=seed)
    common = ["-w", str(random_fastsam_s), "--conf", "0.05", "--tile-size", "256", "--no-cache"]
    r = run_cli("-q", "extract", str(folder), str(tmp_path / "layers.gpkg"), *common)
    assert r.returncode == 0, r.stderr
    names = {name for name, _ in pyogrio.list_layers(tmp_path / "layers.gpkg")}
    assert names == {"town1", "town2"}
    r = run_cli(
        "-q", "extract", str(folder / "town*.tif"), str(tmp_path / "merged.gpkg"), "--layout", "merged", *common
    )
    assert r.returncode == 0, r.stderr
    merged = gpd.read_file(tmp_path / "merged.gpkg", layer="buildings")
    assert set(merged.raster) <= {"town1.tif", "town2.tif"} and merged.id.is_unique
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


# ------------------------------------------------------------------ resume
def _ledger_tiles(out: Path) -> int:
    path = ledger_path(out)
    if not path.exists():
        return 0
    try:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as conn:
            return int(conn.execute("SELECT COUNT(*) FROM tiles").fetchone()[0])
    except sqlite3.Error:
        return 0


def _read(out: Path) -> gpd.GeoDataFrame:
    return gpd.read_file(out, layer="buildings").sort_values("id").reset_index(drop=True)


@pytest.mark.model
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT])
def test_killed_run_resumes_to_the_same_result(sig: int, tmp_path: Path, random_fastsam_s) -> None:
    scene = write_scene(tmp_path / "k.tif", 1024, seed=8)
    common = [
        "-w",
        str(random_fastsam_s),
        "--conf",
        "0.01",
        "--no-filter",
        "--tile-size",
        "256",
        "--overlap",
        "32",
        "--batch-size",
        "1",
        "--no-cache",
        "--tta",  # a random network's views do not agree: one view gives it objects to resume
        "1",
    ]
    ref = tmp_path / "ref.gpkg"
    r = run_cli("-q", "extract", str(scene.raster), str(ref), *common)
    assert r.returncode == 0, r.stderr

    out = tmp_path / "b.gpkg"
    proc = subprocess.Popen(
        [*FSG, "-q", "extract", str(scene.raster), str(out), *common],
        env=ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.time() + 240
    while _ledger_tiles(out) < 6 and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, "the run finished before it could be interrupted"
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    if sig == signal.SIGINT:
        assert proc.returncode == 130 and "--resume" in err and "Traceback" not in err
    done_before = _ledger_tiles(out)
    assert 6 <= done_before < 25
    assert not out.exists()

    r = run_cli("-q", "extract", str(scene.raster), str(out), *common, "--resume", "--json")
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout)
    assert summary["tiles_resumed"] == done_before  # those tiles were not computed again
    assert summary["tiles_processed"] == 25
    a, b = _read(ref), _read(out)
    assert len(a) == len(b) > 0
    assert shapely.equals(a.geometry.values, b.geometry.values).all()
    assert (a.score.values == b.score.values).all()
    assert not ledger_path(out).exists()
    assert sorted(p.name for p in tmp_path.iterdir() if p.suffix == ".gpkg" or p.name.startswith(".")) == [
        "b.gpkg",
        "k_buildings.gpkg",
        "ref.gpkg",
    ]


def test_resume_refuses_other_settings_and_new_run_refuses_stale_ledger(
    small: Scene, tmp_path: Path, random_fastsam_s: Path
) -> None:
    out = tmp_path / "b.gpkg"
    from fastsam_geo.ledger import Ledger

    Ledger.create(out, {"tile_size": 512}).close()
    weights = ["-w", str(random_fastsam_s)]
    r = CliRunner().invoke(main, ["extract", str(small.raster), str(out), "--no-cache", *weights])
    assert r.exit_code == 1 and "--resume" in r.output
    r = CliRunner().invoke(main, ["extract", str(small.raster), str(out), "--no-cache", "--resume", *weights])
    assert r.exit_code == 1 and "other settings" in r.output


@pytest.mark.model
def test_prompt_finds_the_tiles_extract_cached(small: Scene, tmp_path: Path, random_fastsam_s: Path) -> None:
    """`prompt` never runs the model, so it must build the very cache keys `extract` wrote."""
    common = ["-w", str(random_fastsam_s), "--conf", "0.01", "--cache-dir", str(tmp_path / "cache")]
    r = run_cli("-q", "extract", str(small.raster), str(tmp_path / "all.gpkg"), "--no-filter", *common)
    assert r.returncode == 0, r.stderr
    centre = shapely.box(*small.truth.total_bounds).centroid
    r = run_cli("prompt", str(small.raster), str(tmp_path / "one.gpkg"), "--point", f"{centre.x},{centre.y}", *common)
    assert r.returncode == 0, r.stderr
    assert "not in the mask cache" not in r.stderr
    r = run_cli(
        "prompt",
        str(small.raster),
        str(tmp_path / "two.gpkg"),
        "--point",
        f"{centre.x},{centre.y}",
        *common[:-2],
        "--cache-dir",
        str(tmp_path / "empty"),
    )
    assert r.returncode == 1 and "not in the mask cache" in r.stderr
