"""Which engine runs: --engine auto|onnx|torch, the ONNX twin of a .pt, the engine in the output.

The project's small model has its ONNX export beside it (weights/fastsam-geo-town-n.onnx, whose
metadata names the .pt's sha256): engine auto runs the twin on ONNX Runtime, ``torch`` the .pt.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from fastsam_geo.errors import WeightsError
from fastsam_geo.segmenters import resolve_model
from fastsam_geo.weights import sha256_file

pytest.importorskip("onnxruntime")

REPO = Path(__file__).resolve().parents[1]
TOWN_PT = REPO / "weights" / "fastsam-geo-town-n.pt"
TOWN_ONNX = TOWN_PT.with_suffix(".onnx")
OTHER_ONNX = REPO / "weights" / "fastsam-geo-n.onnx"  # the export of another .pt


def test_auto_runs_the_onnx_twin_and_torch_the_pt() -> None:
    auto = resolve_model(TOWN_PT)
    assert (auto.engine, Path(auto.path), auto.sha256) == ("onnx", TOWN_ONNX, sha256_file(TOWN_ONNX))
    torch = resolve_model(TOWN_PT, "torch")
    assert (torch.engine, Path(torch.path), torch.sha256) == ("torch", TOWN_PT, sha256_file(TOWN_PT))
    assert resolve_model(TOWN_ONNX, "onnx").path == auto.path
    assert resolve_model(None).engine == "onnx"  # the default model has its twin too


def test_auto_keeps_the_pt_for_tiles_larger_than_the_twins_fixed_input() -> None:
    """The bundled twins take 1024 px; at 2048 px tiles auto runs the .pt with torch instead of
    shrinking every tile (an explicit --engine onnx is refused by plan.check_input_size)."""
    from fastsam_geo.modelmeta import onnx_input_size

    side = min(onnx_input_size(TOWN_ONNX) or (0,))
    assert side == 1024
    assert resolve_model(TOWN_PT, "auto", side).engine == "onnx"
    assert resolve_model(TOWN_PT, "auto", side * 2).engine == "torch"
    assert resolve_model(TOWN_PT, "onnx", side * 2).engine == "onnx"


def test_an_onnx_file_that_is_not_the_pts_export_is_no_twin(tmp_path: Path) -> None:
    pt = tmp_path / "mine.pt"
    shutil.copy(TOWN_PT, pt)
    shutil.copy(OTHER_ONNX, tmp_path / "mine.onnx")  # records another .pt's sha256 as its source
    assert resolve_model(pt).engine == "torch"
    # its name is taken: the export it suggests replaces it (without --overwrite it would be refused)
    with pytest.raises(WeightsError, match=r"--engine onnx: mine\.onnx beside .*mine\.pt was not exported from it"):
        resolve_model(pt, "onnx")
    with pytest.raises(WeightsError, match=r"fastsam-geo export .*mine\.pt .*mine\.onnx --overwrite"):
        resolve_model(pt, "onnx")
    (tmp_path / "mine.onnx").unlink()
    with pytest.raises(WeightsError, match=r"--engine onnx: no ONNX export of .*mine\.pt.*fastsam-geo export"):
        resolve_model(pt, "onnx")
    shutil.copy(TOWN_ONNX, tmp_path / "mine.onnx")  # the real export: a twin wherever it lies
    assert resolve_model(pt).engine == "onnx"


def test_torch_refuses_an_onnx_file_and_unknown_engines_are_refused() -> None:
    with pytest.raises(WeightsError, match=r"--engine torch needs \.pt weights"):
        resolve_model(TOWN_ONNX, "torch")
    with pytest.raises(WeightsError, match="auto, onnx or torch"):
        resolve_model(TOWN_PT, "tensorflow")


@pytest.mark.parametrize("engine", ["auto", "torch"])
def test_the_cli_records_the_engine_that_ran(engine: str, tmp_path: Path) -> None:
    from fastsam_geo.output import read_run_tables
    from fastsam_geo.synthetic import write_scene

    scene = write_scene(tmp_path / "t.tif", 256, seed=3)
    out = tmp_path / "o.gpkg"
    cmd = [sys.executable, "-m", "fastsam_geo", "-q", "extract", str(scene.raster), str(out), "-w", str(TOWN_PT)]
    cmd += ["--tile-size", "256", "--no-cache", "--json", "--engine", engine]
    env = {**os.environ, "PYTHONPATH": str(REPO), "YOLO_OFFLINE": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    want = "onnx" if engine == "auto" else "torch"
    assert summary["engine"] == want and summary["weights"].endswith(f".{'onnx' if want == 'onnx' else 'pt'}")
    meta, _ = read_run_tables(out)
    assert meta["engine"] == want and meta["weights_sha256"] == summary["weights_sha256"]


def test_engines_default_to_the_cores_this_process_may_use() -> None:
    if not shutil.which("taskset"):
        pytest.skip("no taskset here")
    code = "from fastsam_geo.segment import cpu_threads; print(cpu_threads())"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    out = subprocess.run(["taskset", "-c", "0", sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert out.returncode == 0 and out.stdout.strip() == "1", out.stderr


def test_a_raster_narrower_than_a_tile_gives_the_same_buildings_on_both_engines(tmp_path: Path) -> None:
    """A 320 x 640 px raster and 1024 px tiles: its one tile is padded to 1024 px on torch as on the
    1024 px twin (TileSpec.pad_to), so both engines give the same buildings. Before stop 32 torch
    ran it at 320 x 640 and found other objects."""
    import geopandas as gpd
    import shapely

    from fastsam_geo.synthetic import write_scene

    scene = write_scene(tmp_path / "narrow.tif", 640, 320, seed=5)
    env = {**os.environ, "PYTHONPATH": str(REPO), "YOLO_OFFLINE": "1"}
    got = {}
    for engine in ("onnx", "torch"):
        out = tmp_path / f"{engine}.gpkg"
        cmd = [sys.executable, "-m", "fastsam_geo", "-q", "extract", str(scene.raster), str(out), "-w", str(TOWN_PT)]
        proc = subprocess.run(
            [*cmd, "--no-cache", "--tta", "1", "--engine", engine], capture_output=True, text=True, env=env, timeout=300
        )
        assert proc.returncode == 0, proc.stderr
        got[engine] = gpd.read_file(out).geometry.values
    a, b = got["onnx"], got["torch"]
    assert len(a) == len(b) >= 10, (len(a), len(b))
    tree = shapely.STRtree(b)
    best = [max(g.intersection(b[j]).area / g.union(b[j]).area for j in tree.query(g)) for g in a]
    assert min(best) > 0.95, sorted(best)[:5]
