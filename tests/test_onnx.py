"""The ONNX Runtime engine against the torch engine, the export command and the numpy NMS."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from rasterio.windows import Window

from fastsam_geo.errors import OutputError
from fastsam_geo.masks import InstanceMasks
from fastsam_geo.segment import FastSAMSegmenter
from fastsam_geo.testing import compare_instances
from fastsam_geo.tiling import Tile

REPO = Path(__file__).resolve().parents[1]
DEFAULT_PT = REPO / "weights" / "fastsam-geo-town-n.pt"
SAMPLE = REPO / "sample_tiles" / "town_s7_1024.tif"

pytestmark = pytest.mark.model


def _tile(image: np.ndarray, nodata: np.ndarray | None = None) -> Tile:
    from affine import Affine

    h, w = image.shape[:2]
    win = Window(0, 0, w, h)
    return Tile(np.ascontiguousarray(image), win, Affine(0.5, 0, 500000, 0, -0.5, 4650000), None, win, nodata=nodata)


@pytest.fixture(scope="session")
def exported(tmp_path_factory: pytest.TempPathFactory, random_fastsam_s: Path) -> dict[str, Path]:
    """The default model and a random FastSAM-s checkpoint exported to ONNX (fixed 1024 px), and
    the default model with a dynamic batch and size: once per session (export takes seconds)."""
    from fastsam_geo.export import export_onnx

    out = tmp_path_factory.mktemp("onnx")
    files = {
        "default": (DEFAULT_PT, out / "default.onnx", 1),
        "fastsam_s": (random_fastsam_s, out / "fastsam_s.onnx", 1),
        "default_dynamic": (DEFAULT_PT, out / "default_dyn.onnx", "dynamic"),
    }
    for pt, onnx_file, batch in files.values():
        export_onnx(pt, onnx_file, imgsz=1024, batch=batch)
    return {k: v[1] for k, v in files.items()} | {"fastsam_s_pt": random_fastsam_s}


@pytest.fixture(scope="module")
def tiles() -> dict[str, Tile]:
    """The sample tile (1024 px, read through rasterio) and a synthetic town (1024 px, seed 3)."""
    from fastsam_geo.raster import RasterSource
    from fastsam_geo.synthetic import plan_scene, render_block

    src = RasterSource(SAMPLE)
    image, nodata = src.read(Window(0, 0, 1024, 1024))
    src.close()
    plan = plan_scene(1024, 1024, seed=3)
    town = render_block(plan, Window(0, 0, 1024, 1024)).transpose(1, 2, 0)
    small = _tile(town[:320, 96:700])  # a raster narrower than a tile: padded to the grid's 1024 px
    small.pad_to = 1024
    return {"sample": _tile(image, nodata), "synthetic": _tile(town), "small": small}


# conf for the random FastSAM-s: its scores sit on a few levels; 0.002 keeps ~60 masks per tile after NMS
CASES = [("default", DEFAULT_PT, 0.25), ("fastsam_s", None, 0.002)]


@pytest.mark.parametrize("tile_name", ["sample", "synthetic"])
@pytest.mark.parametrize(("model", "pt", "conf"), CASES, ids=[c[0] for c in CASES])
def test_onnx_gives_the_objects_torch_gives(
    exported: dict[str, Path], tiles: dict[str, Tile], tile_name: str, model: str, pt: Path | None, conf: float
) -> None:
    """Count within 1 %, each matched mask at IoU >= 0.99, scores within 1e-3."""
    tile = tiles[tile_name]
    torch_seg = FastSAMSegmenter(pt or exported["fastsam_s_pt"], device="cpu", conf=conf)
    onnx_seg = FastSAMSegmenter(exported[model], device="cpu", conf=conf)
    assert torch_seg.engine == "torch" and onnx_seg.engine == "onnxruntime"
    a, b = torch_seg.segment([tile])[0], onnx_seg.segment([tile])[0]
    agreement = compare_instances(a, b)
    assert len(a) >= 30, f"too few objects to compare: {agreement}"
    assert agreement.ok(count_tol=0.01, iou=0.99, score_tol=1e-3), agreement


def test_a_raster_narrower_than_a_tile_gives_the_same_objects_on_both_engines(
    exported: dict[str, Path], tiles: dict[str, Tile]
) -> None:
    """A 320 x 604 px tile of a 1024 px grid: torch pads it to 1024 px as the twin does. At its own
    size the default model found other objects (the split's narrow rasters scored 0.581 against 0.593)."""
    tile = tiles["small"]
    torch_seg = FastSAMSegmenter(DEFAULT_PT, device="cpu")
    a, b = torch_seg.segment([tile])[0], FastSAMSegmenter(exported["default"], device="cpu").segment([tile])[0]
    agreement = compare_instances(a, b)
    assert len(a) >= 10, f"too few objects to compare: {agreement}"
    assert agreement.ok(count_tol=0.01, iou=0.99, score_tol=1e-3), agreement


def test_the_comparison_fails_on_different_results(exported: dict[str, Path], tiles: dict[str, Tile]) -> None:
    """The equivalence check can fail: a tenth of the objects dropped, or eroded masks, are caught."""
    got = FastSAMSegmenter(exported["default"], device="cpu").segment([tiles["sample"]])[0]
    assert compare_instances(got, got).ok()
    assert not compare_instances(got, got.subset(np.arange(len(got)) % 10 != 0)).ok()
    eroded = InstanceMasks(
        [c & np.roll(c, 2, axis=0) for c in got.crops], got.offsets, got.scores, got.boxes, got.shape
    )
    assert not compare_instances(got, eroded).ok()
    shifted = InstanceMasks(got.crops, got.offsets, got.scores + 0.01, got.boxes, got.shape)
    assert not compare_instances(got, shifted).ok()


def test_dynamic_export_runs_small_tiles_and_batches_like_torch(
    exported: dict[str, Path], tiles: dict[str, Tile]
) -> None:
    """A --batch dynamic export pads a 640 x 768 tile as torch does (to 1024 px) and batches."""
    tile = _tile(tiles["synthetic"].image[:640, :768])
    torch_seg = FastSAMSegmenter(DEFAULT_PT, device="cpu")
    onnx_seg = FastSAMSegmenter(exported["default_dynamic"], device="cpu", batch_size=2)
    assert onnx_seg.fixed_shape is None and onnx_seg.fixed_batch is None
    a = torch_seg.segment([tile])[0]
    b1, b2 = onnx_seg.segment([tile, tile])
    assert onnx_seg.model_calls == 1
    assert compare_instances(a, b1).ok() and compare_instances(b1, b2).ok()


def test_export_metadata_and_cache_keys(exported: dict[str, Path]) -> None:
    """The file records size, batch, opset, precision, names, the .pt's sha256 and gsd_m; the
    segmenter keys the cache by the .onnx file's own sha256."""
    from fastsam_geo.modelmeta import read_model_meta
    from fastsam_geo.weights import sha256_file

    meta = read_model_meta(exported["default"])
    assert meta["imgsz"] == [1024, 1024] and meta["batch"] == 1 and meta["half"] is False
    assert isinstance(meta["opset"], int) and meta["opset"] >= 11
    assert meta["names"] == {"0": "item"} and "gsd_m" in meta
    assert meta["source_sha256"] == sha256_file(DEFAULT_PT)
    assert read_model_meta(exported["default_dynamic"])["batch"] == "dynamic"
    seg = FastSAMSegmenter(exported["default"], device="cpu")
    assert seg.metadata["weights_sha256"] == sha256_file(exported["default"]) != meta["source_sha256"]
    assert seg.model_meta == meta and seg.fixed_shape == (1024, 1024) and seg.names == {0: "item"}


def test_onnx_segmenter_pickles(exported: dict[str, Path], tiles: dict[str, Tile]) -> None:
    """A process or Dask executor can ship it: unpickled, it rebuilds its session and agrees."""
    import pickle

    seg = FastSAMSegmenter(exported["default"], device="cpu")
    copy = pickle.loads(pickle.dumps(seg))
    a, b = seg.segment([tiles["sample"]])[0], copy.segment([tiles["sample"]])[0]
    assert len(a) > 30 and compare_instances(a, b).ok(count_tol=0, iou=1.0, score_tol=0)


def test_export_carries_the_working_resolution(tmp_path: Path) -> None:
    """A .pt that records gsd_m gives an .onnx that records it, and the ONNX segmenter reads it."""
    import shutil

    from fastsam_geo.export import export_onnx
    from fastsam_geo.modelmeta import write_pt_meta

    pt = tmp_path / "town.pt"
    shutil.copyfile(DEFAULT_PT, pt)
    write_pt_meta(pt, {"gsd_m": 0.4})
    meta = export_onnx(pt, tmp_path / "town.onnx")
    assert meta["gsd_m"] == 0.4
    assert FastSAMSegmenter(tmp_path / "town.onnx", device="cpu").gsd == 0.4
    assert FastSAMSegmenter(pt, device="cpu").gsd == 0.4


def test_export_cli_guards_its_output(tmp_path: Path) -> None:
    """An existing output needs --overwrite; a non-.onnx output is refused; nothing is left behind."""
    from fastsam_geo.export import export_onnx

    existing = tmp_path / "m.onnx"
    existing.write_bytes(b"keep")
    with pytest.raises(OutputError, match="--overwrite"):
        export_onnx(DEFAULT_PT, existing)
    with pytest.raises(OutputError, match=r"\.onnx"):
        export_onnx(DEFAULT_PT, tmp_path / "m.pt")
    assert existing.read_bytes() == b"keep" and sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"]
    run = subprocess.run(
        [sys.executable, "-m", "fastsam_geo", "export", str(DEFAULT_PT), str(existing)],
        capture_output=True,
        text=True,
        env={**__import__("os").environ, "PYTHONPATH": str(REPO)},
    )
    assert run.returncode == 1 and "--overwrite" in run.stderr and "Traceback" not in run.stderr


def test_export_cli_names_no_scratch_folder(tmp_path: Path) -> None:
    """ultralytics' exporter ends with "Predict: yolo predict model=.fastsam-geo-export-XXXX/...onnx": a
    scratch copy that is gone when export returns. The command says only what it wrote."""
    out = tmp_path / "m.onnx"
    run = subprocess.run(
        [sys.executable, "-m", "fastsam_geo", "export", str(REPO / "weights" / "fastsam-geo-town-n.pt"), str(out)],
        capture_output=True,
        text=True,
        # as a user runs it: without the YOLO_VERBOSE=False the test session sets
        env={**{k: v for k, v in os.environ.items() if k != "YOLO_VERBOSE"}, "PYTHONPATH": str(REPO)},
    )
    assert run.returncode == 0 and out.is_file(), run.stderr
    assert ".fastsam-geo-export-" not in run.stdout + run.stderr, run.stdout + run.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"]


def test_onnx_engine_leaves_torch_out(exported: dict[str, Path], tmp_path: Path) -> None:
    """Importing fastsam_geo and running the ONNX segmenter imports no torch, ultralytics or open_clip."""
    code = f"""
import json, sys, numpy as np
from affine import Affine
from rasterio.windows import Window
import fastsam_geo
from fastsam_geo import FastSAMSegmenter, Tile
seg = FastSAMSegmenter({str(exported["default"])!r}, device="cpu")
img = np.full((1024, 1024, 3), 120, np.uint8); img[300:500, 300:520] = 200
res = seg.segment([Tile(img, Window(0, 0, 1024, 1024), Affine.identity(), None, Window(0, 0, 1024, 1024))])
print(json.dumps({{"n": len(res[0]), "heavy": sorted(m for m in ("torch", "ultralytics", "open_clip", "torchvision")
                                                      if m in sys.modules)}}))
"""
    run = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={**__import__("os").environ, "PYTHONPATH": str(REPO)},
    )
    assert run.returncode == 0, run.stderr
    out = json.loads(run.stdout.strip().splitlines()[-1])
    assert out["heavy"] == []


def test_numpy_nms_matches_ultralytics() -> None:
    """On random raw head outputs (two classes, overlapping boxes, many candidates), the numpy NMS
    returns ultralytics' rows: same boxes, scores, classes and mask coefficients, same order."""
    import torch
    from ultralytics.utils.nms import non_max_suppression as torch_nms

    from fastsam_geo.nms import non_max_suppression

    rng = np.random.default_rng(0)
    n, nc, nm = 3000, 2, 8
    pred = np.empty((4 + nc + nm, n), np.float32)
    pred[0:2] = rng.uniform(0, 512, (2, n))
    pred[2:4] = rng.uniform(4, 80, (2, n))
    pred[4 : 4 + nc] = rng.uniform(0, 1, (nc, n))
    pred[4 + nc :] = rng.normal(0, 1, (nm, n))
    for conf, iou, max_det in [(0.25, 0.7, 1000), (0.5, 0.3, 50), (0.9, 0.5, 300)]:
        want = torch_nms(torch.from_numpy(pred[None]), conf, iou, max_det=max_det, nc=nc)[0].numpy()
        got = non_max_suppression(pred, conf, iou, max_det=max_det, nc=nc)
        assert got.shape == want.shape and len(got) > 0
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-4)
