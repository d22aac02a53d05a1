"""Test-time augmentation (``--tta``): views of a tile, masks mapped back, objects fused.

Pure tests check the view maps and the fusion rule on small arrays; ``model`` tests run the
bundled default model's ONNX twin on a synthetic town, and the CLI in a subprocess.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyogrio
import pytest
from affine import Affine
from rasterio.windows import Window

from fastsam_geo.masks import InstanceMasks
from fastsam_geo.segment import FastSAMSegmenter
from fastsam_geo.tiling import Tile
from fastsam_geo.tta import (
    COARSE_SCALE,
    VIEWS,
    add_large,
    coarse_views,
    fuse_views,
    unview_masks,
    view_image,
    views,
)

REPO = Path(__file__).resolve().parents[1]
TWIN = REPO / "weights" / "fastsam-geo-n.onnx"
ENV = {**os.environ, "YOLO_OFFLINE": "1", "HF_HUB_OFFLINE": "1", "YOLO_VERBOSE": "False"}


def _tile(image: np.ndarray) -> Tile:
    h, w = image.shape[:2]
    return Tile(image, Window(0, 0, w, h), Affine(0.25, 0, 500000, 0, -0.25, 4650000), None, Window(0, 0, w, h))


@pytest.mark.parametrize("view", VIEWS)
def test_masks_found_in_a_view_map_back_to_the_tile(view: str) -> None:
    """On a tile that is not square, every view's masks and boxes come back where they were."""
    rng = np.random.default_rng(5)
    dense = np.zeros((4, 7, 11), bool)
    for k in range(4):
        r, c = rng.integers(0, 5), rng.integers(0, 9)
        dense[k, r : r + rng.integers(1, 3), c : c + rng.integers(1, 3)] = True
    dense[3, 6, 10] = True  # an object in the last corner
    original = InstanceMasks.from_dense(dense)
    seen = InstanceMasks.from_dense(np.stack([view_image(m, view) for m in dense]))
    back = unview_masks(seen, view)
    assert back.shape == (7, 11)
    assert (back.masks == dense).all()
    assert np.array_equal(back.boxes, original.boxes)
    assert np.array_equal(back.crop_boxes, original.crop_boxes)


def test_view_counts() -> None:
    assert views(1) == ("id",) and len(views(8)) == len(set(views(8))) == 8
    assert views(12) == VIEWS and coarse_views(12) == ("id", "h", "v", "hv")
    assert all(coarse_views(n) == () for n in (1, 2, 4, 8))
    for n in (3, 16):
        with pytest.raises(ValueError, match=f"tta={n}"):
            views(n)
        with pytest.raises(ValueError, match=f"tta={n}"):
            coarse_views(n)


def test_coarse_views_only_add_large_objects_the_fine_views_missed() -> None:
    """The fine objects come out unchanged and first; a coarse object is added only when it is
    large and lies mostly outside them (over half inside: left to the fine views)."""
    fine = np.zeros((2, 40, 40), bool)
    fine[0, 0:6, 0:6] = True
    fine[1, 0:6, 20:26] = True
    coarse = np.zeros((4, 40, 40), bool)
    coarse[0, 10:40, 10:40] = True  # 900 px, nothing fine there: added
    coarse[1, 0:5, 0:30] = True  # 150 px, 60 of them in the fine objects (40 %): added
    coarse[2, 0:6, 0:12] = True  # 72 px, half in the first house: 36 of 72 is not over half: added
    coarse[3, 0:6, 16:26] = True  # 60 px, 36 in the second house (60 %): left out
    f = InstanceMasks.from_dense(fine, scores=[0.9, 0.8])
    c = InstanceMasks.from_dense(coarse, scores=[0.5, 0.4, 0.3, 0.6])
    out = add_large(f, c, min_area_px=60)
    assert out.scores.tolist() == pytest.approx([0.9, 0.8, 0.5, 0.4, 0.3])
    assert (out.masks == np.concatenate([fine, coarse[:3]])).all()
    assert len(add_large(f, c, min_area_px=1000)) == 2  # nothing that large
    assert add_large(InstanceMasks.empty((40, 40)), c, min_area_px=60).areas.tolist() == [900, 150, 72, 60]
    assert len(add_large(f, InstanceMasks.empty((40, 40)))) == 2
    with pytest.raises(ValueError, match="coarse masks"):
        add_large(f, InstanceMasks.empty((40, 41)))


def _roof(cols: slice) -> np.ndarray:
    m = np.zeros((12, 12), bool)
    m[2:8, cols] = True
    return m


def test_fusion_keeps_what_most_views_see_and_votes_the_pixels() -> None:
    """A roof seen in all 8 views stays, with the columns at least 4 of them hold; a speck that
    one view saw at 0.9 goes (0.9 / 8 is under the threshold)."""
    parts = []
    for v in range(8):
        wide = _roof(slice(2, 9 if v < 4 else 8))  # column 8 in 4 of 8 views: kept
        if v < 3:
            wide[2:8, 1] = True  # column 1 in 3 of 8 views: dropped
        masks = [wide]
        scores = [0.3]
        if v == 0:
            speck = np.zeros((12, 12), bool)
            speck[10:12, 10:12] = True
            masks.append(speck)
            scores.append(0.9)
        parts.append(InstanceMasks.from_dense(np.stack(masks), scores=scores))
    out = fuse_views(parts, threshold=0.2)
    assert len(out) == 1
    assert out.scores[0] == pytest.approx(0.3)
    assert (out.masks[0] == _roof(slice(2, 9))).all()


def test_a_view_gives_at_most_one_mask_to_an_object() -> None:
    """Two overlapping masks of one view stay two objects: the other view backs only the best."""
    a, b = _roof(slice(2, 9)), _roof(slice(3, 10))  # IoU 0.75
    view0 = InstanceMasks.from_dense(np.stack([a, b]), scores=[0.9, 0.8])
    view1 = InstanceMasks.from_dense(a[None], scores=[0.7])
    out = fuse_views([view0, view1], threshold=0.3)
    assert out.scores.tolist() == pytest.approx([0.8, 0.4])
    assert (out.masks[0] == a).all() and (out.masks[1] == b).all()


def test_two_roofs_most_views_see_apart_come_out_apart() -> None:
    """5 of 8 views see two touching roofs, 3 see one block: the block is out-voted, though its
    fused score passes the threshold and it is the larger mask."""
    left, right = _roof(slice(1, 6)), _roof(slice(6, 11))
    apart = InstanceMasks.from_dense(np.stack([left, right]), scores=[0.8, 0.7])
    joined = InstanceMasks.from_dense((left | right)[None], scores=[0.9])
    out = fuse_views([apart] * 5 + [joined] * 3, threshold=0.2)
    assert out.scores.tolist() == pytest.approx([0.5, 0.4375])
    assert (out.masks[0] == left).all() and (out.masks[1] == right).all()
    single = fuse_views([joined] * 8, threshold=0.2)  # every view sees one block: it stays
    assert len(single) == 1 and (single.masks[0] == (left | right)).all()


def test_fusion_of_nothing() -> None:
    out = fuse_views([InstanceMasks.empty((5, 6))] * 4, threshold=0.2)
    assert len(out) == 0 and out.shape == (5, 6)
    with pytest.raises(ValueError):
        fuse_views([], threshold=0.2)


# ---------------------------------------------------------------- the default model
@pytest.fixture(scope="module")
def town() -> np.ndarray:
    from fastsam_geo.synthetic import plan_scene, render_block

    plan = plan_scene(1024, 1024, seed=12)
    return np.ascontiguousarray(render_block(plan, Window(0, 0, 1024, 1024)).transpose(1, 2, 0))


@pytest.mark.model
@pytest.mark.parametrize("view", ["h", "t"])
def test_eight_views_give_the_same_buildings_on_a_mirrored_or_turned_tile(town: np.ndarray, view: str) -> None:
    """The 8 views of a mirrored tile are the 8 views of the tile: the fused objects must be the
    same ones, mirrored. A single pass has no such guarantee (the network is not symmetric)."""
    seg = FastSAMSegmenter(TWIN, tta=8)
    assert seg.tta == 8 and seg.metadata["tta"] == 8
    plain = seg.segment([_tile(town)])[0]
    turned = unview_masks(seg.segment([_tile(view_image(town, view))])[0], view)
    assert len(plain) > 10
    assert len(turned) == len(plain)
    assert np.allclose(turned.scores, plain.scores, atol=1e-5)
    assert all((turned.mask(i) == plain.mask(i)).all() for i in range(len(plain)))
    single = FastSAMSegmenter(TWIN)
    assert single.tta == 1 and "tta" not in single.metadata
    assert seg.model_calls == 16 and single.nms_conf == single.conf == seg.conf > seg.nms_conf


@pytest.mark.model
def test_a_coarse_view_maps_its_masks_back_to_the_tile(town: np.ndarray) -> None:
    """A tile seen 1.6 times coarser (centred in the same input) gives masks in the tile's own
    pixels: most of its buildings land on the ones the full-resolution pass found."""
    seg = FastSAMSegmenter(TWIN)
    tile = _tile(town)
    full = seg._segment_views([tile])[0]
    raw = seg.predict_raw([tile], scale=COARSE_SCALE)[0]
    assert raw.letterbox.gain == (COARSE_SCALE, COARSE_SCALE) and raw.letterbox.pad == (192, 192)
    coarse = seg._segment_views([tile], scale=COARSE_SCALE)[0]
    assert coarse.shape == (1024, 1024) and len(coarse) > 10
    both = InstanceMasks.concatenate([full, coarse])
    from fastsam_geo.buildingfilter import overlap_neighbours

    neighbours = overlap_neighbours(both, both.areas)
    n = len(full)
    landed = [any(j < n and iou > 0.5 for j, iou, _ in neighbours[n + k]) for k in range(len(coarse))]
    assert np.mean(landed) > 0.7, np.mean(landed)


@pytest.mark.model
def test_twelve_views_keep_the_eight_and_only_add(town: np.ndarray) -> None:
    """--tta 12: 12 passes per tile; the 8 views' objects come first, unchanged; the same
    buildings, mirrored, on a mirrored tile (the coarse views are the four flips)."""
    eight = FastSAMSegmenter(TWIN, tta=8).segment([_tile(town)])[0]
    seg = FastSAMSegmenter(TWIN, tta=12)
    twelve = seg.segment([_tile(town)])[0]
    assert seg.tta == 12 and seg.metadata["tta"] == 12 and seg.model_calls == 12
    assert len(twelve) >= len(eight) > 10
    assert all((twelve.mask(i) == eight.mask(i)).all() for i in range(len(eight)))
    assert (twelve.areas[len(eight) :] >= 1600).all()
    mirrored = unview_masks(seg.segment([_tile(view_image(town, "h"))])[0], "h")
    assert len(mirrored) == len(twelve)
    assert all((mirrored.mask(i) == twelve.mask(i)).all() for i in range(len(twelve)))


@pytest.mark.model
def test_cli_tta_is_recorded_and_keys_its_own_cache(tmp_path: Path, town: np.ndarray) -> None:
    """`extract --tta 4` writes its setting into the layer metadata; its masks are cached under
    their own key, so `prompt` finds them with --tta 4 and not without."""
    from fastsam_geo.synthetic import write_scene

    scene = write_scene(tmp_path / "town.tif", 512, seed=12)
    cache = tmp_path / "cache"
    out = tmp_path / "b.gpkg"
    fsg = [sys.executable, "-m", "fastsam_geo"]
    common = ["-w", str(REPO / "weights" / "fastsam-geo-n.pt"), "--cache-dir", str(cache), "--tile-size", "512"]
    r = subprocess.run(
        [*fsg, "extract", str(scene.raster), str(out), "--tta", "4", *common],
        capture_output=True,
        text=True,
        env=ENV,
        timeout=600,
    )
    assert r.returncode == 0, r.stderr
    info = pyogrio.read_info(out)
    assert info["layer_metadata"]["tta"] == "4" and info["features"] > 5
    x, y = scene.truth.geometry.iloc[0].representative_point().coords[0]
    prompt = [*fsg, "prompt", str(scene.raster), "--point", f"{x},{y}", *common]
    ok = subprocess.run(
        [*prompt, str(tmp_path / "p4.gpkg"), "--tta", "4"], capture_output=True, text=True, env=ENV, timeout=600
    )
    assert ok.returncode == 0, ok.stderr
    missing = subprocess.run([*prompt, str(tmp_path / "p1.gpkg")], capture_output=True, text=True, env=ENV, timeout=600)
    assert missing.returncode == 1 and "not in the mask cache" in missing.stderr and "--tta" in missing.stderr
    assert not (tmp_path / "p1.gpkg").exists()
    shutil.rmtree(cache)
