"""Tile work on a real Dask LocalCluster (2 worker processes) gives what one process gives.

The project's small real model (weights/fastsam-geo-town-n.pt) segments a synthetic town
at tile 256 (9 tiles), in this process and on the cluster; geometries and attributes must
be equal, also when a worker is killed mid-run, when the raster comes over HTTP through
/vsicurl/, and after a cancel and --resume. Every wait has a limit (no hung CI).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import geopandas as gpd
import pytest
import rasterio.shutil
from shapely.testing import assert_geometries_equal

from fastsam_geo.errors import Cancelled
from fastsam_geo.ledger import ledger_path
from fastsam_geo.output import read_run_tables
from fastsam_geo.pipeline import extract_buildings

distributed = pytest.importorskip("distributed")

REPO = Path(__file__).resolve().parents[1]
WEIGHTS = REPO / "weights" / "fastsam-geo-town-n.pt"
RUN = dict(weights=WEIGHTS, tile_size=256, overlap=32, device="cpu", cache_dir=None)


@pytest.fixture(scope="module")
def client():
    from fastsam_geo.cluster import DaskExecutor

    DaskExecutor.timeout_s = 300  # a lost result fails the test instead of hanging CI
    cluster = distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0", env={"PYTHONPATH": str(REPO)}
    )
    c = distributed.Client(cluster, timeout="60s")
    try:
        c.wait_for_workers(2, timeout=120)
        yield c
    finally:
        DaskExecutor.timeout_s = None
        c.close(timeout=30)
        cluster.close(timeout=30)


@pytest.fixture(scope="module")
def town(tmp_path_factory: pytest.TempPathFactory):
    from fastsam_geo.synthetic import write_scene

    return write_scene(tmp_path_factory.mktemp("dask") / "town.tif", 512, seed=5)


@pytest.fixture(scope="module")
def reference(town, tmp_path_factory: pytest.TempPathFactory) -> gpd.GeoDataFrame:
    out = tmp_path_factory.mktemp("ref") / "one_process.gpkg"
    extract_buildings(town.raster, out, **RUN)
    return _read(out)


def _read(path: Path) -> gpd.GeoDataFrame:
    return gpd.read_file(path, layer="buildings").sort_values("id").reset_index(drop=True)


def assert_same(a: gpd.GeoDataFrame, b: gpd.GeoDataFrame) -> None:
    assert len(a) == len(b) > 10
    assert_geometries_equal(a.geometry.values, b.geometry.values, tolerance=1e-6, normalize=True)
    cols = [c for c in a.columns if c != "geometry"]
    assert cols == [c for c in b.columns if c != "geometry"]
    for c in cols:
        assert list(a[c]) == list(b[c]), c


def test_two_workers_give_the_single_process_polygons(client, town, reference, tmp_path: Path) -> None:
    out = tmp_path / "dask.gpkg"
    s = extract_buildings(town.raster, out, client=client, **RUN)
    assert s.tiles_processed == s.tiles_total == 9
    assert_same(reference, _read(out))
    meta, _ = read_run_tables(out)
    assert meta["weights_sha256"]


def test_a_worker_killed_mid_run_loses_and_doubles_nothing(client, town, reference, tmp_path: Path) -> None:
    from fastsam_geo.testing import SlowSegmenter

    killed: list[int] = []

    def progress(done: int, total: int) -> None:
        if done == 2 and not killed:
            pids = client.run(os.getpid)
            victim = sorted(pids.values())[0]
            os.kill(victim, signal.SIGKILL)
            killed.append(victim)

    out = tmp_path / "killed.gpkg"
    s = extract_buildings(
        town.raster, out, client=client, segmenter=SlowSegmenter(WEIGHTS, 1.5), progress=progress, **RUN
    )
    assert killed and s.tiles_processed == 9 and s.tiles_failed == 0
    assert_same(reference, _read(out))
    _, tiles = read_run_tables(out)
    assert sorted(tiles.tile_id) == sorted(set(tiles.tile_id)) and len(tiles) == 9
    client.wait_for_workers(2, timeout=120)  # the nanny restarted the dead one


def test_cancel_then_resume_on_the_cluster_equals_an_uninterrupted_run(client, town, reference, tmp_path) -> None:
    out = tmp_path / "resumed.gpkg"
    seen: list[int] = []

    def progress(done: int, total: int) -> None:
        seen.append(done)

    with pytest.raises(Cancelled):
        extract_buildings(town.raster, out, client=client, progress=progress, cancel=lambda: len(seen) >= 3, **RUN)
    assert not out.exists() and ledger_path(out).exists()
    s = extract_buildings(town.raster, out, client=client, resume=True, **RUN)
    assert s.tiles_resumed >= 3 and s.tiles_processed == 9
    assert_same(reference, _read(out))
    assert not ledger_path(out).exists()


def test_workers_read_a_cog_over_http_themselves(client, town, reference, tmp_path: Path) -> None:
    served = tmp_path / "www"
    served.mkdir()
    rasterio.shutil.copy(town.raster, served / "town_cog.tif", driver="COG")
    server = subprocess.Popen(
        [sys.executable, str(REPO / "tests" / "range_http_server.py"), str(served)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stdout is not None
        port = int(server.stdout.readline())
        url = f"/vsicurl/http://127.0.0.1:{port}/town_cog.tif"
        out = tmp_path / "http.gpkg"
        s = extract_buildings(url, out, client=client, **RUN)
        assert s.tiles_processed == 9
        assert_same(reference, _read(out))
    finally:
        server.terminate()
        server.wait(timeout=10)


def test_workers_without_the_weights_or_the_raster_are_one_clear_error(client, town, tmp_path: Path) -> None:
    from fastsam_geo.cluster import ClusterError, DaskExecutor
    from fastsam_geo.pipeline import build_options

    t0 = time.perf_counter()
    with pytest.raises(ClusterError, match=r"Dask worker tcp://127\.0\.0\.1:\d+: .*nothere\.pt"):
        extract_buildings(town.raster, tmp_path / "w.gpkg", client=client, **{**RUN, "weights": "/nothere.pt"})
    with pytest.raises(ClusterError, match=r"cannot read /no/such/sheet\.tif"):
        DaskExecutor(client, build_options(weights=WEIGHTS), rasters=["/no/such/sheet.tif"])
    assert time.perf_counter() - t0 < 30
    assert not (tmp_path / "w.gpkg").exists() and not ledger_path(tmp_path / "w.gpkg").exists()


def test_an_unreachable_scheduler_is_one_line_and_exit_1_within_seconds(town, tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    t0 = time.perf_counter()
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "fastsam_geo",
            "extract",
            str(town.raster),
            str(tmp_path / "o.gpkg"),
            "--scheduler",
            "tcp://127.0.0.1:9",
            "-w",
            str(WEIGHTS),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    elapsed = time.perf_counter() - t0
    assert proc.returncode == 1, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "tcp://127.0.0.1:9 is unreachable" in lines[0], proc.stderr
    # The client gives up after its 5 s connect timeout (said in the line); the rest is Python's start
    # and imports, slow on a loaded machine, so the bound here only guards against a hang.
    assert "after 5 s" in lines[0] and elapsed < 50, elapsed
    assert not (tmp_path / "o.gpkg").exists()


@pytest.mark.model
def test_a_text_prompt_on_the_cluster_uses_the_clients_clip_weights(client, town, tmp_path: Path) -> None:
    """The workers score with the CLIP weights file given to the run (offline: no download), as one process does."""
    import open_clip
    import torch

    from fastsam_geo.prompts import Prompts
    from fastsam_geo.textprompt import ClipScorer

    torch.manual_seed(0)
    weights = tmp_path / "clip.pt"
    torch.save(open_clip.create_model("ViT-S-32-alt", pretrained=None).state_dict(), weights)
    prompts = Prompts(text="a building seen from above", text_threshold=None, text_top_k=2)
    runs = {}
    for name, kw in (("local", {}), ("cluster", {"client": client})):
        scorer = ClipScorer("ViT-S-32-alt", weights)
        out = tmp_path / f"{name}.gpkg"
        s = extract_buildings(town.raster, out, prompts=prompts, text_scorer=scorer, **kw, **RUN)
        assert s.tiles_processed == 9
        runs[name] = _read(out)
    assert len(runs["local"]) > 0
    assert_geometries_equal(runs["local"].geometry.values, runs["cluster"].geometry.values, tolerance=1e-6)
