"""Mask outlines snapped to the image's edges (fastsam_geo.refine), alone and in the default model's runs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fastsam_geo.cache import key_fn_for
from fastsam_geo.masks import InstanceMasks
from fastsam_geo.refine import OUTLINE, refine_masks
from fastsam_geo.segment import mask_settings

ROOT = Path(__file__).resolve().parents[1]


def roof_scene() -> tuple[np.ndarray, np.ndarray]:
    """A 40 x 40 tile with two bright roofs (rows 5-15 x cols 5-19; rows 22-34 x cols 8-30) on dark ground."""
    image = np.full((40, 40, 3), 40, np.uint8)
    image[5:15, 5:19] = 210
    image[22:34, 8:30] = 180
    truth = np.zeros((2, 40, 40), bool)
    truth[0, 5:15, 5:19] = True
    truth[1, 22:34, 8:30] = True
    return image, truth


def blurred(truth: np.ndarray) -> np.ndarray:
    """Masks as a coarse prototype grid gives them: one pixel too wide on two sides, corners cut."""
    out = truth.copy()
    for m in out:
        rows, cols = np.flatnonzero(m.any(1)), np.flatnonzero(m.any(0))
        m[rows[0] : rows[-1] + 2, cols[0] - 1 : cols[-1] + 1] = True
        for r, c in ((rows[0], cols[0] - 1), (rows[-1] + 1, cols[-1])):
            m[r, c] = False
    return out


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / (a | b).sum())


def test_blurred_outlines_move_onto_the_roof_edges() -> None:
    image, truth = roof_scene()
    raw = InstanceMasks.from_dense(blurred(truth), scores=[0.9, 0.6])
    out = refine_masks(raw, image)
    assert out.scores.tolist() == pytest.approx([0.9, 0.6])  # order and scores kept
    np.testing.assert_array_equal(out.boxes, raw.boxes)
    for i in range(2):
        assert iou(raw.mask(i), truth[i]) < 0.9
        assert iou(out.mask(i), truth[i]) == 1.0


def test_nodata_stays_out_and_no_object_vanishes() -> None:
    image, truth = roof_scene()
    nodata = np.zeros((40, 40), bool)
    nodata[:, 25:] = True  # the second roof half outside the data
    speck = np.zeros((1, 40, 40), bool)
    speck[0, 37, 2] = True  # a lone pixel on flat ground: the filter would drop it
    masks = InstanceMasks.from_dense(np.concatenate([truth, speck]), scores=[0.9, 0.6, 0.3])
    out = refine_masks(masks, image, nodata)
    assert len(out) == 3 and not out.masks[:, nodata].any()
    assert out.mask(2).sum() == 1  # kept as it was, not emptied
    cb = out.crop_boxes  # crops trimmed to their pixels and inside the tile
    assert all(c.any(0)[[0, -1]].all() and c.any(1)[[0, -1]].all() for c in out.crops)
    assert (cb[:, :2] >= 0).all() and (cb[:, 2:] <= 40).all()


def test_flat_image_changes_little() -> None:
    """Where the image has no edge the mask keeps its place (within the filter's radius)."""
    image = np.full((30, 30, 3), 120, np.uint8)
    dense = np.zeros((1, 30, 30), bool)
    dense[0, 8:20, 6:22] = True
    out = refine_masks(InstanceMasks.from_dense(dense, scores=[0.5]), image)
    assert iou(out.mask(0), dense[0]) > 0.8


def test_refined_and_raw_masks_have_other_cache_keys() -> None:
    """Masks cached before outlines were refined (or with refine off) are never served as refined ones."""
    refined = mask_settings("ab", conf=0.25, iou=0.7)
    raw = mask_settings("ab", conf=0.25, iou=0.7, refine=False)
    assert refined["outline"] == OUTLINE and raw["outline"] == "raw"
    from affine import Affine
    from rasterio.windows import Window

    from fastsam_geo.tiling import Tile

    tile = Tile(np.zeros((8, 8, 3), np.uint8), Window(0, 0, 8, 8), Affine.identity(), None, Window(0, 0, 8, 8))
    keys = {key_fn_for(("/d/a.tif", 1, 2), s)(tile) for s in (refined, raw, {**refined, "outline": None})}
    assert len(keys) == 3


@pytest.mark.model
def test_default_model_outlines_fit_better_refined(tmp_path: Path) -> None:
    """The bundled model on the held-out synthetic scene: refined outlines match the truth better
    (mean IoU of matched buildings) and find no fewer buildings than the raw masks."""
    from fastsam_geo.evaluate import evaluate
    from fastsam_geo.pipeline import extract_buildings
    from fastsam_geo.segment import FastSAMSegmenter

    raster = ROOT / "sample_tiles" / "town_s9001_2048.tif"
    truth = ROOT / "sample_tiles" / "town_s9001_2048_buildings.gpkg"
    scores = {}
    for refine in (False, True):
        seg = FastSAMSegmenter(ROOT / "weights" / "fastsam-geo-n.onnx", device="cpu", refine=refine)
        out = tmp_path / f"refine_{refine}.gpkg"
        summary = extract_buildings(raster, out, segmenter=seg, tta=1, resumable=False)
        assert summary.buildings > 0
        scores[refine] = evaluate(out, truth)
    assert scores[True].tp >= scores[False].tp
    assert scores[True].mean_iou > scores[False].mean_iou + 0.001


@pytest.mark.model
def test_cli_refines_by_default_and_no_refine_keeps_the_models_masks(tmp_path: Path) -> None:
    """`fastsam-geo extract` as a user runs it: refined outlines by default, `--no-refine` the raw masks;
    each output says which in its metadata, and the refined one fits the truth better."""
    import os
    import subprocess
    import sys

    from fastsam_geo.evaluate import evaluate
    from fastsam_geo.output import read_run_tables

    raster = ROOT / "sample_tiles" / "town_s7_1024.tif"
    env = {**os.environ, "YOLO_OFFLINE": "1"}
    iou = {}
    for name, flag in (("refined", []), ("raw", ["--no-refine"])):
        out = tmp_path / f"{name}.gpkg"
        cmd = [sys.executable, "-m", "fastsam_geo", "-q", "extract", str(raster), str(out), "--tta", "1", "--no-cache"]
        r = subprocess.run([*cmd, *flag], capture_output=True, text=True, env=env, cwd=ROOT, timeout=600)
        assert r.returncode == 0, r.stderr
        meta, _ = read_run_tables(out)
        assert meta["outline"] == (OUTLINE if name == "refined" else "raw")
        iou[name] = evaluate(out, raster.with_name("town_s7_1024_buildings.gpkg")).mean_iou
    assert iou["refined"] > iou["raw"]


def test_a_run_interrupted_before_refined_outlines_resumes_only_raw(tmp_path: Path) -> None:
    """A resume ledger written before outlines were refined holds raw masks: `--resume --no-refine`
    carries it on, a refined resume is refused in one line naming the setting."""
    from fastsam_geo.errors import OutputError
    from fastsam_geo.ledger import Ledger

    out = tmp_path / "b.gpkg"
    Ledger.create(out, {"tile_size": 512}).close()  # as a run before stop 34 wrote it: no "outline"
    Ledger.open(out, {"tile_size": 512, "outline": "raw"}).close()
    with pytest.raises(OutputError, match=r"other settings \(outline\)"):
        Ledger.open(out, {"tile_size": 512, "outline": OUTLINE})
