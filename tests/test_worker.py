"""The worker (``fastsam-geo worker``): the JSON-lines protocol, warm segmenters, the mask cache,
cancel, errors, and a clean stdout. Model-free except the one ``model`` test."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import geopandas as gpd
import pytest

from fastsam_geo.errors import PromptError
from fastsam_geo.oracle import TruthSegmenter
from fastsam_geo.worker import (
    Engine,
    ProtocolError,
    WorkerServer,
    extract_params,
    prompts_from_json,
)

REPO = Path(__file__).resolve().parents[1]


class Recorder:
    """A thread-safe ``write`` that keeps the replies and lets a test wait for one."""

    def __init__(self) -> None:
        self.messages: list[dict[str, Any]] = []
        self.cond = threading.Condition()

    def __call__(self, msg: dict[str, Any]) -> None:
        json.dumps(msg, allow_nan=False)  # every reply must be plain JSON
        with self.cond:
            self.messages.append(msg)
            self.cond.notify_all()

    def wait_for(self, rid: Any, kinds: tuple[str, ...] = ("result", "error"), timeout: float = 60) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                for m in self.messages:
                    if m.get("id") == rid and m.get("type") in kinds:
                        return m
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"no {kinds} for request {rid}: {self.messages}")
                self.cond.wait(left)

    def of(self, rid: Any, kind: str) -> list[dict[str, Any]]:
        with self.cond:
            return [m for m in self.messages if m.get("id") == rid and m.get("type") == kind]


class SlowTruth(TruthSegmenter):
    """The truth, ``delay`` seconds per call (so that a test can cancel mid-run)."""

    def __init__(self, truth: gpd.GeoDataFrame, delay: float) -> None:
        super().__init__(truth)
        self.delay = delay

    def segment(self, tiles):  # type: ignore[no-untyped-def]
        time.sleep(self.delay)
        return super().segment(tiles)


@pytest.fixture()
def truth_engine(scene, tmp_path: Path):
    """An engine whose 'model' is the truth of the scene; counts the segmenters it builds."""
    built: list[TruthSegmenter] = []

    def factory(weights: str | None, device: str, conf: float, iou: float, tta: int = 1) -> TruthSegmenter:
        seg = SlowTruth(scene.truth, 0.0) if weights is None else SlowTruth(scene.truth, 0.15)
        built.append(seg)
        return seg

    engine = Engine(cache_dir=tmp_path / "cache", segmenter_factory=factory)
    engine.built = built  # type: ignore[attr-defined]
    return engine


def test_extract_params_defaults_and_unknown_keys() -> None:
    p = extract_params({"raster": "a.tif"})
    assert (p["tile_size"], p["overlap"], p["batch_size"], p["conf"], p["iou"]) == (1024, 128, 1, None, 0.7)
    assert extract_params({"raster": "a.tif", "conf": 0.3})["conf"] == 0.3
    assert p["output"] is None and p["cache"] is True
    with pytest.raises(ProtocolError, match="unknown extract parameter"):
        extract_params({"raster": "a.tif", "tilesize": 3})
    with pytest.raises(ProtocolError, match=r"params\.raster"):
        extract_params({"output": "b.gpkg"})


def test_prompts_from_json() -> None:
    p = prompts_from_json({"points": [[1, 2], [3, 4, 0]], "boxes": [[5, 6, 1, 2]], "crs": "EPSG:32633"})
    assert [pt.label for pt in p.points] == [1, 0]
    assert (p.boxes[0].xmin, p.boxes[0].ymin, p.boxes[0].xmax, p.boxes[0].ymax) == (1, 2, 5, 6)
    assert prompts_from_json({"points": [], "boxes": []}) is None
    assert prompts_from_json({"text": "building", "top_k": 3}).text_top_k == 3
    with pytest.raises(ProtocolError):
        prompts_from_json({"points": [[1]]})
    with pytest.raises(PromptError):
        prompts_from_json({"points": [[1, 2, 5]]})


def test_extract_progress_result_then_the_cache_answers(scene, truth_engine: Engine, tmp_path: Path) -> None:
    rec = Recorder()
    server = WorkerServer(rec, truth_engine)
    params = {"raster": str(scene.raster), "output": str(tmp_path / "a.gpkg"), "tile_size": 512, "overlap": 64}
    assert server.handle({"id": 1, "cmd": "extract", "params": params})
    res = rec.wait_for(1)
    assert res["type"] == "result", res
    summary = res["result"]
    progress = rec.of(1, "progress")
    assert [m["done"] for m in progress] == list(range(1, summary["tiles_total"] + 1))
    assert summary["buildings"] > 10 and Path(summary["output"]).is_file()
    assert summary["cache"]["misses"] == summary["tiles_total"] and summary["cache"]["model_tiles"] == 4

    # a click on a building: one tile or two, all from the cache; the same warm segmenter
    b = scene.truth.geometry.iloc[int(scene.truth.area.argmax())]
    pt = b.representative_point()
    params2 = {**params, "output": str(tmp_path / "b.gpkg"), "prompts": {"points": [[pt.x, pt.y, 1]]}}
    server.handle({"id": 2, "cmd": "extract", "params": params2})
    res2 = rec.wait_for(2)
    assert res2["type"] == "result", res2
    s2 = res2["result"]
    assert s2["buildings"] == 1 and s2["mode"] == "points"
    assert s2["cache"]["model_tiles"] == 0 and s2["cache"]["hits"] >= 1
    got = gpd.read_file(s2["output"], layer="buildings").geometry.iloc[0]
    assert got.intersection(b).area / got.union(b).area > 0.9
    assert len(truth_engine.built) == 1  # type: ignore[attr-defined]

    # status; then shutdown stops the job thread
    server.handle({"id": 3, "cmd": "status"})
    status = rec.wait_for(3)["result"]
    assert status["running"] is None and len(status["models"]) == 1
    assert not server.handle({"id": 4, "cmd": "shutdown"})
    assert rec.wait_for(4)["result"] == {"bye": True}
    server.close()


def test_cancel_stops_the_running_job(scene, truth_engine: Engine, tmp_path: Path) -> None:
    rec = Recorder()
    server = WorkerServer(rec, truth_engine)
    params = {
        "raster": str(scene.raster),
        "output": str(tmp_path / "c.gpkg"),
        "tile_size": 256,
        "overlap": 32,
        "weights": str(tmp_path / "slow.pt"),  # the fixture's factory makes a slow segmenter for it
    }
    (tmp_path / "slow.pt").write_bytes(b"not used")
    server.handle({"id": 7, "cmd": "extract", "params": params})
    rec.wait_for(7, kinds=("progress",))
    t0 = time.monotonic()
    server.handle({"id": 8, "cmd": "cancel", "params": {"job": 7}})
    assert rec.wait_for(8)["result"] == {"cancelled": True}
    err = rec.wait_for(7)
    assert err["type"] == "error" and err["kind"] == "Cancelled", err
    assert time.monotonic() - t0 < 2.0
    assert not (tmp_path / "c.gpkg").exists()
    done = [m["done"] for m in rec.of(7, "progress")]
    assert done and done[-1] < rec.of(7, "progress")[0]["total"]
    # the worker goes on: the next job runs
    server.handle(
        {
            "id": 9,
            "cmd": "extract",
            "params": {**params, "output": str(tmp_path / "d.gpkg"), "overwrite": True, "tile_size": 1024},
        }
    )
    assert rec.wait_for(9)["type"] == "result"
    server.handle({"id": 10, "cmd": "cancel", "params": {"job": 123}})
    assert rec.wait_for(10)["result"] == {"cancelled": False}
    server.close()


def test_errors_are_one_line_with_their_kind(truth_engine: Engine, tmp_path: Path) -> None:
    rec = Recorder()
    server = WorkerServer(rec, truth_engine)
    server.handle(
        {
            "id": 1,
            "cmd": "extract",
            "params": {"raster": str(tmp_path / "missing.tif"), "output": str(tmp_path / "x.gpkg")},
        }
    )
    err = rec.wait_for(1)
    assert err["type"] == "error" and err["kind"] == "RasterError" and "\n" not in err["error"]
    assert truth_engine.built == []  # type: ignore[attr-defined]  # no model loaded for a bad raster
    server.handle({"id": 2, "cmd": "fly"})
    assert rec.wait_for(2)["kind"] == "ProtocolError"
    server.handle({"id": 3, "cmd": "extract", "params": {"raster": "a.tif", "bogus": 1}})
    assert "bogus" in rec.wait_for(3)["error"]
    server.handle(["not", "an", "object"])
    assert any(m["id"] is None and m["kind"] == "ProtocolError" for m in rec.messages)
    assert server.serve(['{"id": 5, "cmd": "hello"}', "{not json", ""]) == 0  # end of input: stop
    hello = rec.wait_for(5)["result"]
    assert hello["protocol"] == 1 and hello["pid"] == os.getpid()
    assert any(m["id"] is None and "not JSON" in m.get("error", "") for m in rec.messages)


def _worker(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "fastsam_geo", "worker", *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "YOLO_OFFLINE": "1", **(env or {})},
    )


def test_worker_process_speaks_json_lines_only(tmp_path: Path) -> None:
    proc = _worker("--cache-dir", str(tmp_path / "cache"))
    out, err = proc.communicate(
        '{"id": 1, "cmd": "hello"}\n{"id": 2, "cmd": "status"}\n{"id": 3, "cmd": "shutdown"}\n', timeout=60
    )
    assert proc.returncode == 0, err
    replies = [json.loads(line) for line in out.splitlines()]  # nothing but JSON on stdout
    assert [r["id"] for r in replies] == [1, 2, 3]
    assert replies[0]["result"]["protocol"] == 1
    assert replies[1]["result"]["cache_dir"] == str(tmp_path / "cache")
    assert "worker" in err  # logging went to stderr


def test_worker_process_exits_at_end_of_input() -> None:
    proc = _worker()
    out, _ = proc.communicate('{"id": 1, "cmd": "hello"}\n', timeout=60)
    assert proc.returncode == 0 and json.loads(out)["id"] == 1


def test_prints_inside_the_worker_go_to_stderr() -> None:
    code = (
        "import os, sys\n"
        "from fastsam_geo.worker import line_writer, protocol_stdout\n"
        "write = line_writer(protocol_stdout())\n"
        "print('python noise')\n"
        "sys.stdout.flush()\n"
        "os.write(1, b'C noise\\n')\n"
        "write({'id': 1, 'type': 'result', 'result': {}})\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout == '{"id":1,"type":"result","result":{}}\n'
    assert "python noise" in r.stderr and "C noise" in r.stderr


def test_cli_lists_the_worker_command() -> None:
    from click.testing import CliRunner

    from fastsam_geo.cli import main

    r = CliRunner().invoke(main, ["worker", "--help"])
    assert r.exit_code == 0 and "JSON" in r.output


@pytest.mark.model
def test_worker_process_with_a_fastsam_checkpoint_keeps_masks_warm(
    scene, random_fastsam_s: Path, tmp_path: Path
) -> None:
    """The real FastSAM adapter in the worker process: the second run on the raster reads the cache."""
    proc = _worker("--cache-dir", str(tmp_path / "cache"))
    assert proc.stdin is not None and proc.stdout is not None
    params = {"raster": str(scene.raster), "weights": str(random_fastsam_s), "device": "cpu", "conf": 0.9}
    results = []
    for rid in (1, 2):
        proc.stdin.write(json.dumps({"id": rid, "cmd": "extract", "params": params}) + "\n")
        proc.stdin.flush()
        while True:
            msg = json.loads(proc.stdout.readline())
            if msg["type"] != "progress":
                break
        assert msg["type"] == "result", msg
        results.append(msg["result"])
    assert all(Path(r["output"]).is_file() for r in results)
    proc.stdin.write('{"id": 3, "cmd": "shutdown"}\n')
    proc.stdin.flush()
    proc.wait(30)
    first, second = results
    assert first["cache"]["model_tiles"] == 1 and second["cache"]["model_tiles"] == 0
    assert second["cache"]["hits"] == 1
    assert first["weights_sha256"] and first["weights_sha256"] == second["weights_sha256"]
    assert first["engine"] == second["engine"] == "torch"  # a .pt without an ONNX twin beside it
    assert first["output"] != second["output"]  # outputs in the worker's temporary folder
    assert proc.returncode == 0 and not Path(first["output"]).parent.exists()  # removed at exit


def test_masks_the_cli_cached_answer_the_worker(scene, random_fastsam_s: Path, tmp_path: Path) -> None:
    """`extract --cache-dir` then the panel's worker on the same raster and cache: no tile runs the model
    again. The worker keyed tiles by the bands asked for (null), extract by the bands resolved ([1, 2, 3])."""
    cache = tmp_path / "cache"
    cli = subprocess.run(
        [
            sys.executable,
            "-m",
            "fastsam_geo",
            "-q",
            "extract",
            str(scene.raster),
            str(tmp_path / "cli.gpkg"),
            "--weights",
            str(random_fastsam_s),
            "--device",
            "cpu",
            "--conf",
            "0.9",
            "--tta",
            "1",
            "--cache-dir",
            str(cache),
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "YOLO_OFFLINE": "1"},
        timeout=600,
    )
    assert cli.returncode == 0, cli.stderr
    engine = Engine(cache_dir=cache)
    params = {
        "raster": str(scene.raster),
        "weights": str(random_fastsam_s),
        "device": "cpu",
        "conf": 0.9,
        "tta": 1,
        "output": str(tmp_path / "worker.gpkg"),
    }
    result = engine.extract(1, params, lambda done, total: None, lambda: False)
    assert result["cache"]["model_tiles"] == 0 and result["cache"]["hits"] >= 1, result["cache"]


@pytest.mark.model
@pytest.mark.parametrize("name", ["fastsam-geo-n.pt", "fastsam-geo-n.onnx"])
def test_a_request_without_conf_gets_the_models_stored_threshold(name: str, tmp_path: Path) -> None:
    """QGIS sends no ``conf`` unless the user sets one: the bundled model's calibrated threshold applies."""
    from fastsam_geo.modelmeta import read_model_meta, weights_conf

    weights = Path(__file__).resolve().parents[1] / "weights" / name
    engine = Engine(cache_dir=tmp_path / "cache")
    p = extract_params({"raster": "a.tif", "weights": str(weights), "device": "cpu"})
    stored = weights_conf(weights)
    assert p["conf"] is None and read_model_meta(weights).get("conf") == stored  # stored, not the 0.25 fallback
    assert engine.segmenter(p["weights"], p["device"], p["conf"], p["iou"]).conf == pytest.approx(stored)
    assert engine.segmenter(p["weights"], p["device"], 0.4, p["iou"]).conf == pytest.approx(0.4)
    assert [m["conf"] for m in engine.status()["models"]] == [None, 0.4]
    # and the run records the threshold it used, and reads at the model's working resolution
    import sqlite3

    sample = Path(__file__).resolve().parents[1] / "sample_tiles" / "town_s7_1024.tif"
    params = {"raster": str(sample), "weights": str(weights), "device": "cpu", "output": str(tmp_path / "o.gpkg")}
    engine.extract(1, params, lambda done, total: None, lambda: False)
    con = sqlite3.connect(tmp_path / "o.gpkg")
    xml = " ".join(r[0] for r in con.execute("SELECT metadata FROM gpkg_metadata"))
    con.close()
    import re

    gsd = float(re.search(r'<MDI key="gsd_m">([0-9.]+)</MDI>', xml).group(1))  # type: ignore[union-attr]
    assert f'<MDI key="conf">{stored:g}</MDI>' in xml and gsd == pytest.approx(0.25, rel=1e-3), xml[:800]
