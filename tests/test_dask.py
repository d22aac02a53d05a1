"""Tile work on a real Dask LocalCluster (2 worker processes) gives what one process gives.

The project's small real model (weights/fastsam-geo-town-n.pt) segments a synthetic town
at tile 256 (9 tiles), in this process and on the cluster; geometries and attributes must
be equal, also when a worker is killed mid-run, when the raster comes over HTTP through
/vsicurl/, and after a cancel and --resume. The fixture's client is *not* the default client
(as the CLI's is not). The CLI itself runs in subprocesses: ``--workers 2``, ``--scheduler``
against a ``dask scheduler`` and ``dask worker`` started here, Ctrl-C then ``--resume``, and
addresses that are not a scheduler. Every wait has a limit (no hung CI).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

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
RUN = dict(weights=WEIGHTS, tile_size=256, overlap=32, device="cpu", cache_dir=None, tta=1)  # views: at the end


@pytest.fixture(scope="module")
def client():
    from fastsam_geo.cluster import DaskExecutor

    DaskExecutor.timeout_s = 300  # a lost result fails the test instead of hanging CI
    cluster = distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0", env={"PYTHONPATH": str(REPO)}
    )
    c = distributed.Client(cluster, timeout="60s", set_as_default=False)  # as the CLI's: not the default
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
    # each of the 2 worker processes on this host runs the model on its share of the host's cores
    from fastsam_geo.segment import cpu_threads

    threads = client.run(_model_threads)
    assert sorted(threads.values()) == [max(1, cpu_threads() // 2)] * 2, threads


def test_views_fused_on_the_cluster_equal_the_single_process_ones(client, town, tmp_path: Path) -> None:
    """--tta travels with the model options: the workers fuse the same views as one process."""
    one, many = tmp_path / "one.gpkg", tmp_path / "dask.gpkg"
    extract_buildings(town.raster, one, **{**RUN, "tta": 2})
    extract_buildings(town.raster, many, client=client, **{**RUN, "tta": 2})
    assert_same(_read(one), _read(many))
    assert read_run_tables(many)[0]["tta"] == "2"


def _model_threads(dask_worker: Any) -> int:  # client.run passes the worker by this name
    from fastsam_geo.cluster import PLUGIN

    return int(dask_worker.plugins[PLUGIN].segmenter.threads)


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


@pytest.mark.parametrize("resume_on", ["cluster", "this process"])
def test_cancel_then_resume_equals_an_uninterrupted_run(client, town, reference, tmp_path, resume_on) -> None:
    """A ledger written on the cluster resumes there or without Dask: polygons do not depend on
    where tiles ran."""
    out = tmp_path / "resumed.gpkg"
    seen: list[int] = []

    def progress(done: int, total: int) -> None:
        seen.append(done)

    with pytest.raises(Cancelled):
        extract_buildings(town.raster, out, client=client, progress=progress, cancel=lambda: len(seen) >= 3, **RUN)
    assert not out.exists() and ledger_path(out).exists()
    where = {"client": client} if resume_on == "cluster" else {}
    s = extract_buildings(town.raster, out, resume=True, **where, **RUN)
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
    from fastsam_geo.errors import WeightsError
    from fastsam_geo.pipeline import build_options

    t0 = time.perf_counter()
    with pytest.raises(WeightsError, match=r"nothere\.pt"):  # resolved once, on the client, before any worker
        extract_buildings(town.raster, tmp_path / "w.gpkg", client=client, **{**RUN, "weights": "/nothere.pt"})
    with pytest.raises(ClusterError, match=r"cannot read /no/such/sheet\.tif"):
        DaskExecutor(client, build_options(weights=WEIGHTS), rasters=["/no/such/sheet.tif"])
    assert time.perf_counter() - t0 < 30
    assert not (tmp_path / "w.gpkg").exists() and not ledger_path(tmp_path / "w.gpkg").exists()


# ---------------------------------------------------------------------------------- the CLI, as users run it
ENV = {**os.environ, "PYTHONPATH": str(REPO), "YOLO_OFFLINE": "1"}
CLI_RUN = ["-w", str(WEIGHTS), "--tile-size", "256", "--overlap", "32", "--device", "cpu", "--no-cache", "--tta", "1"]


def _cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fastsam_geo", *args], capture_output=True, text=True, env=ENV, timeout=timeout
    )


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_listening(port: int, timeout_s: float = 60) -> None:
    import socket

    deadline = time.monotonic() + timeout_s
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=30)


def test_cli_two_workers_equal_the_plain_run_and_say_nothing_with_q(town, reference, tmp_path: Path) -> None:
    out = tmp_path / "w2.gpkg"
    proc = _cli("-q", "extract", str(town.raster), str(out), *CLI_RUN, "--workers", "2")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "" and proc.stderr == "", (proc.stdout, proc.stderr)
    assert_same(reference, _read(out))
    meta, _ = read_run_tables(out)
    assert meta["engine"] in ("onnx", "torch") and meta["weights_sha256"]


def test_cli_on_a_scheduler_started_apart_equals_the_plain_run(town, reference, tmp_path: Path) -> None:
    port = _free_port()
    address = f"tcp://127.0.0.1:{port}"
    dask = [sys.executable, "-m", "dask"]
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL, "env": ENV}
    scheduler = subprocess.Popen([*dask, "scheduler", "--host", "127.0.0.1", "--port", str(port),
                                  "--dashboard-address", f"127.0.0.1:{_free_port()}"], **quiet)  # fmt: skip
    worker = None
    try:
        worker = subprocess.Popen([*dask, "worker", address, "--nworkers", "1", "--nthreads", "1",
                                   "--no-dashboard", "--host", "127.0.0.1"], **quiet)  # fmt: skip
        with distributed.Client(address, timeout="60s", set_as_default=False) as c:
            c.wait_for_workers(1, timeout=120)
        out = tmp_path / "sched.gpkg"
        proc = _cli("extract", str(town.raster), str(out), *CLI_RUN, "--scheduler", address)
        assert proc.returncode == 0, proc.stderr
        assert f"Dask: 1 workers at {address}" in proc.stderr.splitlines()[0], proc.stderr
        assert "Traceback" not in proc.stderr and len(proc.stderr.splitlines()) == 2, proc.stderr
        assert_same(reference, _read(out))
    finally:
        if worker is not None:
            _stop(worker)
        _stop(scheduler)


def _ledger_tiles(path: Path) -> int:
    import sqlite3

    try:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=0.1) as db:
            return int(db.execute("SELECT count(*) FROM tiles").fetchone()[0])
    except sqlite3.Error:
        return 0


def test_ctrl_c_of_a_dask_run_exits_130_and_resume_without_dask_completes_it(town, reference, tmp_path) -> None:
    out = tmp_path / "ctrlc.gpkg"
    cmd = [sys.executable, "-m", "fastsam_geo", "extract", str(town.raster), str(out), *CLI_RUN, "--workers", "2"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
    try:
        deadline = time.monotonic() + 240
        while _ledger_tiles(ledger_path(out)) < 1 and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)  # to the CLI process only: the workers are its children
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    assert "--resume" in err and "Traceback" not in err, err
    assert not out.exists() and 1 <= _ledger_tiles(ledger_path(out)) < 9
    resumed = _cli("extract", str(town.raster), str(out), *CLI_RUN, "--resume", "--json")
    assert resumed.returncode == 0, resumed.stderr
    summary = json.loads(resumed.stdout)
    assert summary["tiles_resumed"] >= 1 and summary["tiles_processed"] == 9
    assert_same(reference, _read(out))
    assert not ledger_path(out).exists()


def _one_line_exit_1(proc: subprocess.CompletedProcess[str], *needles: str) -> str:
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert proc.returncode == 1 and len(lines) == 1, proc.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def _extract_at(town: Any, tmp_path: Path, address: str) -> tuple[subprocess.CompletedProcess[str], float]:
    t0 = time.perf_counter()
    proc = _cli("extract", str(town.raster), str(tmp_path / "o.gpkg"), "--scheduler", address, "-w", str(WEIGHTS))
    return proc, time.perf_counter() - t0


def test_an_unreachable_scheduler_is_one_line_and_exit_1_within_seconds(town, tmp_path: Path) -> None:
    proc, elapsed = _extract_at(town, tmp_path, "tcp://127.0.0.1:9")
    _one_line_exit_1(proc, "tcp://127.0.0.1:9 is unreachable")
    # Python's start and imports are slow on a loaded machine: the bound only guards against a hang
    assert elapsed < 50, elapsed
    assert not (tmp_path / "o.gpkg").exists()


@pytest.mark.parametrize("address", ["tcp://127.0.0.1:notaport", "http://127.0.0.1:8786", "tcp://a host:8786"])
def test_a_malformed_scheduler_address_is_one_line_and_exit_1(town, tmp_path: Path, address: str) -> None:
    proc, _ = _extract_at(town, tmp_path, address)
    _one_line_exit_1(proc, "malformed", "tcp://HOST:PORT")


@pytest.mark.parametrize(
    ("address", "needle"),
    [
        ("tls://127.0.0.1:1", "TLS certificates"),
        ("inproc://x", "inside this same process"),
        ("ucx://127.0.0.1:1", "ucx"),
    ],
)
def test_a_scheme_this_process_cannot_use_is_one_line(town, tmp_path: Path, address: str, needle: str) -> None:
    """tls:// without certificates, inproc:// and ucx:// without ucx-py: a traceback after 10 s, then Dask's
    own TimeoutError from Client.__del__."""
    proc, _ = _extract_at(town, tmp_path, address)
    _one_line_exit_1(proc, address, needle)
    assert "Traceback" not in proc.stderr and not (tmp_path / "o.gpkg").exists()


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--workers", "99999999999999999999999"], "--workers 99999999999999999999999: use 1 to"),
        (["--workers", "0"], "--workers 0: use 1 to"),
        (["--workers", "2", "--scheduler", "tcp://127.0.0.1:9"], "not both"),
        (["--tile-size", "1000000000000000"], "use at most 8192 px"),
    ],
    ids=["workers-huge", "workers-0", "workers-and-scheduler", "tile-size-huge"],
)
def test_cluster_sizes_out_of_reach_are_one_line(town, tmp_path: Path, args: list[str], needle: str) -> None:
    """A huge --workers hung while memory grew (a LocalCluster of that many processes); --workers with
    --scheduler ignored --workers; a huge --tile-size was a numpy traceback."""
    proc = _cli("extract", str(town.raster), str(tmp_path / "o.gpkg"), "-w", str(WEIGHTS), *args, timeout=120)
    _one_line_exit_1(proc, needle)
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_an_http_server_is_not_a_scheduler(town, tmp_path: Path) -> None:
    port = _free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1", "--directory", str(tmp_path)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        address = f"tcp://127.0.0.1:{port}"
        _wait_listening(port)
        proc, elapsed = _extract_at(town, tmp_path, address)
        _one_line_exit_1(proc, "answers HTTP", "not as a Dask scheduler")
        assert elapsed < 50
    finally:
        _stop(server)


def test_a_server_that_accepts_and_stays_silent_is_one_line_within_seconds(town, tmp_path: Path) -> None:
    import socket

    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)  # the kernel accepts connections; nobody ever reads or writes
        address = f"tcp://127.0.0.1:{silent.getsockname()[1]}"
        proc, elapsed = _extract_at(town, tmp_path, address)
        line = _one_line_exit_1(proc, "accepts connections but is not a Dask scheduler")
        assert "said nothing within 3 s" in line and elapsed < 50


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
