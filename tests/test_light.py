"""What the light install (``pip install fastsam-geo``: ONNX Runtime, no torch) must do.

Each test runs the command line in a child Python where torch, torchvision, ultralytics,
open_clip, geopandas, pandas, pyogrio and cv2 cannot be imported (blocked in ``sys.modules``; in
the light venv they are simply absent), so the tests mean the same in both installs.
``make test`` runs this file in the full ``.venv`` and in ``.venv-light``, passing the torch
install's F1 in ``FASTSAM_GEO_REFERENCE_F1``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
import shapely

pytestmark = pytest.mark.light

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "sample_tiles" / "town_s7_1024.tif"
TRUTH = REPO / "sample_tiles" / "town_s7_1024_buildings.gpkg"
HEAVY = ("torch", "torchvision", "ultralytics", "open_clip", "geopandas", "pandas", "pyogrio", "cv2")
BLOCK = f"import sys; sys.modules.update(dict.fromkeys({HEAVY!r})); from fastsam_geo.cli import main; main()"


def fsg(*args: str, block: bool = True, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """``fastsam-geo ARGS`` in a child Python (torch and friends blocked unless ``block=False``)."""
    cmd = [sys.executable, "-c", BLOCK, *args] if block else [sys.executable, "-m", "fastsam_geo", *args]
    env = {**os.environ, "YOLO_OFFLINE": "1", "YOLO_VERBOSE": "False"}
    # cwd outside the checkout: the child imports the installed fastsam_geo, not the source folder
    return subprocess.run(cmd, capture_output=True, text=True, cwd=cwd or tempfile.gettempdir(), env=env, timeout=600)


def f1_of(gpkg: Path) -> float:
    run = fsg("evaluate", str(gpkg), str(TRUTH), "--tile-size", "1024", "--overlap", "128", "--json")
    assert run.returncode == 0, run.stderr
    return float(json.loads(run.stdout)["f1"])


@pytest.fixture(scope="module")
def reference_f1(tmp_path_factory: pytest.TempPathFactory) -> float:
    """F1 of the torch install on the sample tile: given by make test, else computed here with the .pt."""
    given = os.environ.get("FASTSAM_GEO_REFERENCE_F1")
    if given:
        return float(given)
    out = tmp_path_factory.mktemp("torch") / "b.gpkg"
    run = fsg(
        "-q", "extract", str(SAMPLE), str(out), "--weights", str(REPO / "weights/fastsam-geo-n.pt"), block=False
    )
    assert run.returncode == 0, (
        "no FASTSAM_GEO_REFERENCE_F1 and the torch extract failed (in the light venv, make test-light sets it): "
        + run.stderr
    )
    return f1_of(out)


def test_extract_with_the_bundled_onnx_default_gives_the_torch_f1(tmp_path: Path, reference_f1: float) -> None:
    out = tmp_path / "buildings.gpkg"
    run = fsg("-q", "extract", str(SAMPLE), str(out), "--no-cache", "--json", cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    summary = json.loads(run.stdout)
    assert str(summary.get("weights", "")).endswith("fastsam-geo-n.onnx"), summary
    f1 = f1_of(out)
    assert f1 > 0.9 and abs(f1 - reference_f1) <= 1e-3, (f1, reference_f1)


def test_pt_weights_without_torch_is_one_clear_line(tmp_path: Path) -> None:
    """A .pt without its ONNX twin beside it needs torch: one line; with the twin it runs there."""
    alone = tmp_path / "alone"
    alone.mkdir()
    pt = alone / "town.pt"
    shutil.copy(REPO / "weights/fastsam-geo-town-n.pt", pt)
    out = tmp_path / "b.gpkg"
    run = fsg("extract", str(SAMPLE), str(out), "--weights", str(pt))
    assert run.returncode == 1 and "Traceback" not in run.stderr
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and 'pip install "fastsam-geo[torch]"' in lines[0] and ".onnx" in lines[0], lines
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["alone"]
    run = fsg("-q", "extract", str(SAMPLE), str(out), "--weights", str(REPO / "weights/fastsam-geo-town-n.pt"),
              "--json")
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout)["engine"] == "onnx"


def test_text_prompt_without_open_clip_names_the_extra(tmp_path: Path) -> None:
    out = tmp_path / "b.gpkg"
    run = fsg("extract", str(SAMPLE), str(out), "--text", "building")
    assert run.returncode == 1 and "Traceback" not in run.stderr
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and "fastsam-geo[torch]" in lines[0], lines
    assert not out.exists()


def test_info_and_help_work_without_torch() -> None:
    run = fsg("info", str(SAMPLE))
    assert run.returncode == 0, run.stderr
    assert "fastsam-geo-n.onnx" in run.stdout and "onnxruntime" in run.stdout, run.stdout
    assert fsg("export", "--help").returncode == 0


def test_extract_prompt_evaluate_and_layouts_without_geopandas(tmp_path: Path) -> None:
    """The vector side of the light path (GeoPackage/GeoJSON writing and reading, prompt files,
    evaluate, --layout merged) with geopandas, pandas and pyogrio blocked."""
    from fastsam_geo.vectorio import read_features, write_geojson

    cache = ["--cache-dir", str(tmp_path / "cache")]
    run = fsg("-q", "extract", str(SAMPLE), str(tmp_path / "all.gpkg"), *cache, cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    truth = read_features(TRUTH, layer="buildings")
    picks = truth.geometry[:5]
    clicks = read_features(tmp_path / "all.gpkg").geometry  # points inside 5 found buildings
    chosen = [shapely.point_on_surface(g) for g in clicks if any(g.intersects(p) for p in picks)][:5]
    assert len(chosen) == 5
    write_geojson(tmp_path / "clicks.geojson", "clicks", np.array(chosen, dtype=object), {"label": [1] * 5}, truth.crs)
    out = tmp_path / "picked.geojson"
    run = fsg("prompt", str(SAMPLE), str(out), "--prompts", str(tmp_path / "clicks.geojson"), *cache, cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    picked = read_features(out)
    assert len(picked) == 5 and picked.crs.to_epsg() == 32633 and sorted(picked.columns.id) == [1, 2, 3, 4, 5]
    run = fsg("evaluate", str(out), str(tmp_path / "all.gpkg"), "--json")
    assert run.returncode == 0 and json.loads(run.stdout)["tp"] == 5, run.stdout + run.stderr
    for name in ("a.tif", "b.tif"):
        shutil.copy(SAMPLE, tmp_path / name)
    rasters = [str(tmp_path / "a.tif"), str(tmp_path / "b.tif")]
    run = fsg("-q", "extract", *rasters, "--layout", "merged", "-o", str(tmp_path / "m.gpkg"), *cache)
    assert run.returncode == 0, run.stderr
    merged = read_features(tmp_path / "m.gpkg", layer="buildings")
    assert len(merged) == 2 * len(clicks) and list(merged.columns.columns)[:2] == ["id", "raster"]


def test_flatgeobuf_without_pyogrio_names_the_extra_before_any_work(tmp_path: Path) -> None:
    out = tmp_path / "b.fgb"
    run = fsg("extract", str(SAMPLE), str(out), "--no-cache", cwd=tmp_path)
    assert run.returncode == 1 and "Traceback" not in run.stderr
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and 'pip install "fastsam-geo[vector]"' in lines[0] and "b.fgb" in lines[0], lines
    assert list(tmp_path.iterdir()) == []


def test_geojson_output_without_geopandas(tmp_path: Path) -> None:
    from fastsam_geo.vectorio import read_features

    out = tmp_path / "b.geojson"
    run = fsg("-q", "extract", str(SAMPLE), str(out), "--no-cache", cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    got = read_features(out)
    assert got.crs.to_epsg() == 32633 and len(got) > 100 and got.columns.id.tolist() == list(range(1, len(got) + 1))
    assert f1_of(out) > 0.9


def test_sample_without_geopandas_names_the_extra(tmp_path: Path) -> None:
    run = fsg("sample", str(tmp_path / "s.tif"), "--size", "256", cwd=tmp_path)
    assert run.returncode == 1 and "Traceback" not in run.stderr
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and 'pip install "fastsam-geo[vector]"' in lines[0], lines
    assert list(tmp_path.iterdir()) == []


def test_qgis_worker_extracts_without_geopandas(tmp_path: Path) -> None:
    """The QGIS plugin's engine (``fastsam-geo worker``) on the light path: a click -> a GeoPackage."""
    from fastsam_geo.vectorio import read_features

    everything = tmp_path / "all.gpkg"
    out = tmp_path / "click.gpkg"
    env = {**os.environ, "YOLO_OFFLINE": "1", "YOLO_VERBOSE": "False"}
    log = open(tmp_path / "worker.log", "w+")  # noqa: SIM115  (a file: a full stderr pipe cannot stall the worker)
    proc = subprocess.Popen(
        [sys.executable, "-c", BLOCK, "worker", "--cache-dir", str(tmp_path / "cache")],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=log,
        text=True,
        cwd=tmp_path,
        env=env,
    )

    def ask(request: dict) -> dict:
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.write(json.dumps(request) + "\n")
        proc.stdin.flush()
        reply = {"type": "progress"}
        while reply.get("type") == "progress":  # the job's progress lines, then its answer
            reply = json.loads(proc.stdout.readline() or '{"type": "eof"}')
        return reply

    try:
        first = ask({"id": 1, "cmd": "extract", "params": {"raster": str(SAMPLE), "output": str(everything)}})
        assert first.get("type") == "result" and first["result"]["buildings"] > 100, first
        b = max(read_features(everything).geometry, key=lambda g: g.area)
        pt = b.representative_point()
        params = {"raster": str(SAMPLE), "output": str(out), "prompts": {"points": [[pt.x, pt.y, 1]]}}
        reply = ask({"id": 2, "cmd": "extract", "params": params})
        assert proc.stdin is not None
        proc.stdin.write('{"id": 3, "cmd": "shutdown"}\n')
        proc.stdin.flush()
        proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
        log.seek(0)
        err = log.read()
        log.close()
    assert proc.returncode == 0 and reply.get("type") == "result", (reply, err)
    assert reply["result"]["buildings"] == 1 and reply["result"]["cache"]["hits"] >= 1, reply
    got = read_features(out, layer="buildings")
    assert len(got) == 1 and got.geometry[0].intersection(b).area / got.geometry[0].union(b).area > 0.8
