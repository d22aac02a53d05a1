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


def _slow_job(scene: Any, tmp_path: Path) -> dict[str, Any]:
    """Parameters of an extract job on ``scene`` that runs slowly (the fixture's factory makes a slow
    segmenter for weights named slow.pt), into ``tmp_path/c.gpkg``."""
    (tmp_path / "slow.pt").write_bytes(b"not used")
    return {
        "raster": str(scene.raster),
        "output": str(tmp_path / "c.gpkg"),
        "tile_size": 256,
        "overlap": 32,
        "weights": str(tmp_path / "slow.pt"),
    }


def test_cancel_stops_the_running_job(scene, truth_engine: Engine, tmp_path: Path) -> None:
    rec = Recorder()
    server = WorkerServer(rec, truth_engine)
    params = _slow_job(scene, tmp_path)
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
def test_refine_false_gives_raw_outlines_as_extract_no_refine_does(
    scene, random_fastsam_s: Path, tmp_path: Path
) -> None:
    """`"refine": false` is `extract --no-refine`: the output says `outline: raw`, and its masks are
    cached apart from the refined ones (the second request runs the model again)."""
    from fastsam_geo.output import read_run_tables
    from fastsam_geo.refine import OUTLINE

    engine = Engine(cache_dir=tmp_path / "cache")
    base = {"raster": str(scene.raster), "weights": str(random_fastsam_s), "device": "cpu", "conf": 0.9, "tta": 1}
    outlines, model_tiles = [], []
    for name, refine in (("refined", None), ("raw", False)):
        params = {**base, "refine": refine, "output": str(tmp_path / f"{name}.gpkg")}
        result = engine.extract(1, params, lambda done, total: None, lambda: False)
        outlines.append(read_run_tables(tmp_path / f"{name}.gpkg")[0]["outline"])
        model_tiles.append(result["cache"]["model_tiles"])
    assert outlines == [OUTLINE, "raw"]
    assert model_tiles[1] == model_tiles[0] > 0


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


# ---------------------------------------------------------------------------- request fields, strictly typed
@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("min_area_m2", "nan", 'params.min_area_m2: expected a number (e.g. 2.0), got "nan"'),
        ("min_area_m2", float("inf"), "params.min_area_m2: expected a finite number (e.g. 2.0), got Infinity"),
        ("regularize", "false", 'params.regularize: expected true or false, got "false"'),
        ("overwrite", "false", 'params.overwrite: expected true or false, got "false"'),
        ("cache", 0, "params.cache: expected true or false, got 0"),
        ("conf", True, "params.conf: expected a number (e.g. 0.25), got true"),
        ("tta", 1.9, "params.tta: expected a whole number (e.g. 12), got 1.9"),
        ("tta", True, "params.tta: expected a whole number (e.g. 12), got true"),
        ("tile_size", "big", 'params.tile_size: expected a whole number (e.g. 1024), got "big"'),
        ("tile_size", float("inf"), "params.tile_size: expected a whole number (e.g. 1024), got Infinity"),
        ("tile_size", 10**300, "params.tile_size: expected a whole number (e.g. 1024), got 1e+300"),
        ("building_filter", {"min_area": 500}, "params.building_filter: unknown key(s) min_area; known: enabled,"),
        (
            "building_filter",
            {"enabled": "false"},
            'params.building_filter.enabled: expected true or false, got "false"',
        ),
        ("building_filter", [1], "params.building_filter: expected true, false or an object"),
        ("building_filter", 0, "params.building_filter: expected true, false or an object"),
        ("prompts", {"points": 5}, "params.prompts.points: expected a list of [x, y, label], got 5"),
        ("prompts", {"points": [[1, 2, "a"]]}, "params.prompts.points[0][2]: expected 0 (background) or 1"),
        ("prompts", [1], "params.prompts: expected an object"),
        ("output", 5, 'params.output: expected a string (e.g. "buildings.gpkg"), got 5'),
        ("layer", 5, 'params.layer: expected a string (e.g. "buildings"), got 5'),
        ("bands", "9,9,9", 'params.bands: expected a list of 1 or 3 band numbers from 1 (e.g. [4, 3, 2]), got "9,9,9"'),
        ("stretch", "bogus", 'params.stretch: expected one of "auto", "none", "percentile", got "bogus"'),
        ("gsd", True, "params.gsd: true is not a ground resolution"),
        ("refine", "no", 'params.refine: expected true or false, got "no"'),
    ],
)
def test_extract_params_refuse_a_loose_json_type_naming_the_field(field: str, value: Any, message: str) -> None:
    """`"false"`, `1.9`, `true` or a misspelt key were read loosely (a wrong answer) or failed in Python's
    words (`invalid literal for int()`): now one line naming the field, what was given and what is expected."""
    with pytest.raises(ProtocolError) as info:
        extract_params({"raster": "a.tif", field: value})
    assert str(info.value).startswith(message), str(info.value)
    assert "\n" not in str(info.value) and len(str(info.value)) < 300


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"tile_size": 32}, "params.tile_size 32: use at least 64 px"),
        ({"tile_size": 256}, "params.overlap 128: use 0 to 127 px with params.tile_size 256"),
        ({"conf": 5}, "params.conf 5.0: use a value from 0 to 1"),
        ({"tta": 3}, "params.tta 3: use 1 (off), 2, 4, 8 or 12 views"),
        ({"device": "quantum"}, "params.device 'quantum': use auto, cpu"),
        ({"building_filter": {"min_area_m2": 500, "max_area_m2": 10}}, "params.building_filter.min_area_m2 500 is"),
        ({"building_filter": {"min_rectangularity": 2}}, "params.building_filter.min_rectangularity 2.0: use a value"),
        ({"min_area_m2": -1}, "params.min_area_m2 -1: use an area of 0 m² or more"),
    ],
)
def test_extract_params_refuse_what_extract_refuses_before_the_job_is_queued(
    params: dict[str, Any], message: str
) -> None:
    from fastsam_geo.errors import OptionError

    with pytest.raises(OptionError) as info:
        extract_params({"raster": "a.tif", **params})
    assert str(info.value).startswith(message), str(info.value)
    # the filter's areas are checked only when it is on, as extract --no-filter does
    extract_params({"raster": "a.tif", "building_filter": {"enabled": False, "min_area_m2": 500, "max_area_m2": 10}})


def test_a_huge_number_is_shown_in_g_style() -> None:
    """A 300-digit integer (Python's JSON reader takes them) failed as "int too large to convert to float",
    or was printed digit by digit: messages show %g."""
    with pytest.raises(PromptError, match=r"Point \(inf, 0\.0\)"):
        prompts_from_json({"points": [[10**400, 0]]})
    with pytest.raises(ProtocolError) as info:
        extract_params({"raster": "a.tif", "overlap": -(10**300)})
    assert "got -1e+300" in str(info.value) and len(str(info.value)) < 120


def test_bad_requests_get_one_line_naming_the_field_and_the_worker_serves_on(tmp_path: Path) -> None:
    """The worker process: each bad request is answered with one line naming its field, nothing goes to
    stderr as a traceback (`building_filter: [1]` logged an AttributeError's), and the worker answers on."""
    bad = [
        {"cmd": "extract", "params": {"raster": "a.tif", "building_filter": [1]}},
        {"cmd": "extract", "params": {"raster": "a.tif", "building_filter": 0}},
        {"cmd": "extract", "params": {"raster": "a.tif", "tile_size": "big"}},
        {"cmd": "extract", "params": {"raster": "a.tif", "tile_size": float("inf")}},
        {"cmd": "extract", "params": {"raster": "a.tif", "prompts": {"points": 5}}},
        {"cmd": "extract", "params": {"raster": "a.tif", "output": 5}},
        {"cmd": "extract", "params": {"raster": "a.tif", "layer": 5}},
        {"cmd": "extract", "params": {"raster": "a.tif", "bands": "9,9,9"}},
        {"cmd": "warmup", "params": {"tile_size": "q"}},
        {"cmd": "cancel", "params": {"job": [1]}},
        {"cmd": "cancel", "params": {"jobs": 1}},  # a misspelt key cancelled every job
    ]
    fields = ["building_filter", "building_filter", "tile_size", "tile_size", "prompts.points", "output", "layer"]
    fields += ["bands", "tile_size", "job", "params"]
    lines = [json.dumps({"id": i, **req}) for i, req in enumerate(bad)]
    proc = _worker("--cache-dir", str(tmp_path / "cache"))
    out, err = proc.communicate("\n".join([*lines, '{"id": "h", "cmd": "hello"}', ""]), timeout=120)
    replies = {r["id"]: r for r in map(json.loads, out.splitlines())}
    assert proc.returncode == 0 and "Traceback" not in err, err
    for i, field in enumerate(fields):
        r = replies[i]
        assert r["type"] == "error" and r["kind"] == "ProtocolError", r
        assert r["error"].startswith(f"params.{field}" if field != "params" else "params: unknown key(s) jobs"), r
    assert replies["h"]["type"] == "result"


def test_a_good_job_after_bad_ones_gives_the_same_buildings(scene, truth_engine: Engine, tmp_path: Path) -> None:
    """`"overwrite": "false"` replaced an existing output (a non-empty string is truthy) and
    `"regularize": "false"` squared the outlines: refused now, and the output is left as it was."""
    # what the panel and Processing send is read as before
    p = extract_params(
        {
            "raster": "a.tif",
            "output": "b.gpkg",
            "overwrite": True,
            "weights": None,
            "device": "cpu",
            "batch_size": 1,
            "tile_size": 512,
            "overlap": 64,
            "conf": None,
            "iou": 0.7,
            "prompts": {"points": [[500010.5, 4999990, 1], [500020, 4999980.25, 0]], "crs": None},
            "building_filter": {"enabled": True, "min_area_m2": 12, "max_area_m2": 20000.0},
            "simplify_px": 1,
            "regularize": False,
            "tta": 8,
            "gsd": 0.3,
        }
    )
    assert (p["tile_size"], p["tta"], p["conf"], p["gsd"], p["simplify_px"]) == (512, 8, None, 0.3, 1.0)
    assert p["building_filter"] == {"enabled": True, "min_area_m2": 12.0, "max_area_m2": 20000.0}
    assert extract_params({"raster": "a.tif", "building_filter": False})["building_filter"] is False
    rec = Recorder()
    server = WorkerServer(rec, truth_engine)
    out = tmp_path / "a.gpkg"
    params = {"raster": str(scene.raster), "output": str(out), "tile_size": 512, "overlap": 64}
    server.handle({"id": 1, "cmd": "extract", "params": params})
    first = rec.wait_for(1)
    assert first["type"] == "result", first
    stamp = out.stat().st_mtime_ns
    for rid, extra in enumerate(
        [{"overwrite": "false"}, {"overwrite": "true", "regularize": "false"}, {"building_filter": {"enabled": "no"}}],
        start=2,
    ):
        server.handle({"id": rid, "cmd": "extract", "params": {**params, **extra}})
        assert rec.wait_for(rid)["kind"] == "ProtocolError"
    assert out.stat().st_mtime_ns == stamp
    server.handle({"id": 9, "cmd": "extract", "params": {**params, "output": str(tmp_path / "b.gpkg")}})
    again = rec.wait_for(9)
    assert again["type"] == "result" and again["result"]["buildings"] == first["result"]["buildings"]
    server.handle({"id": 10, "cmd": "extract", "params": []})
    assert rec.wait_for(10)["error"] == "params must be an object, got list"
    server.close()


def test_a_cancelled_job_says_the_worker_has_no_resume(scene, truth_engine: Engine, tmp_path: Path) -> None:
    """The pipeline's message told the panel to "run again with --resume", which the worker has not."""
    rec = Recorder()
    server = WorkerServer(rec, truth_engine)
    params = _slow_job(scene, tmp_path)
    server.handle({"id": 1, "cmd": "extract", "params": params})
    rec.wait_for(1, kinds=("progress",))
    server.handle({"id": 2, "cmd": "cancel", "params": {"job": 1}})
    err = rec.wait_for(1)
    assert err["kind"] == "Cancelled", err
    assert "--resume" not in err["error"] and "send the extract again to start it over" in err["error"], err
    assert err["error"].startswith("cancelled after ") and str(tmp_path / "c.gpkg") in err["error"]
    assert not (tmp_path / "c.gpkg").exists()
    server.close()


def test_the_worker_refuses_tiles_larger_than_a_fixed_size_onnx_as_extract_does(scene, tmp_path: Path) -> None:
    """The check of the ONNX model's fixed input did not see the model behind the worker's wrappers:
    2048 px tiles were shrunk to the 1024 px graph (2x coarser, 115 buildings instead of 118)."""
    from fastsam_geo.errors import TilingError
    from fastsam_geo.pipeline import extract_buildings
    from fastsam_geo.worker import one_line

    onnx = REPO / "weights" / "fastsam-geo-n.onnx"
    if not onnx.is_file():
        pytest.skip(f"{onnx} is absent")
    common = {"weights": str(onnx), "tile_size": 2048, "overlap": 256, "tta": 1}
    with pytest.raises(TilingError) as api:
        extract_buildings(scene.raster, tmp_path / "api.gpkg", **common)  # type: ignore[arg-type]
    engine = Engine(cache_dir=tmp_path / "cache")
    for cache in (True, False):  # behind the mask cache, and without it
        out = tmp_path / f"w{cache}.gpkg"
        params = {"raster": str(scene.raster), "output": str(out), "cache": cache, **common}
        with pytest.raises(TilingError) as worker:
            engine.extract(1, params, lambda done, total: None, lambda: False)
        assert one_line(worker.value) == one_line(api.value) and not out.exists()


def test_engine_auto_runs_the_pt_when_its_twin_is_smaller_than_the_tiles(tmp_path: Path) -> None:
    """extract keeps a .pt on torch when its ONNX twin's fixed input is smaller than the tiles; the worker
    ran the twin (tiles shrunk): the default factory now gets the tile size, and the file is in the key."""
    from fastsam_geo.segmenters import resolve_model
    from fastsam_geo.worker_engine import _fastsam_factory, _takes

    assert _takes(_fastsam_factory, "tile_size")
    made: list[int | None] = []

    def factory(weights, device, conf, iou, tta=1, tile_size=None):  # type: ignore[no-untyped-def]
        made.append(tile_size)
        return object()

    engine = Engine(cache_dir=tmp_path / "cache", segmenter_factory=factory)
    small, large, smaller = (engine.segmenter(None, "cpu", None, 0.7, 1, tile_size=t) for t in (1024, 2048, 512))
    assert made[:2] == [1024, 2048]
    for t in (1024, 2048):
        assert engine.model_file(None, t) == resolve_model(None, "auto", t).path
    if engine.model_file(None, 2048) != engine.model_file(None, 1024):  # the default .pt with a 1024 px twin
        assert small is not large and small is smaller and made == [1024, 2048]
