"""The FastSAM adapter: weights loading, batching, and in-box mask assembly equal to ultralytics'.

Pure tests check :func:`assemble_masks` against ultralytics' own mask code on synthetic
prototypes; ``model`` tests run the random-weight FastSAM-s checkpoint of ``conftest.py``
through the same loading path as official weights.
"""

from __future__ import annotations

import re
import subprocess
import sys

import numpy as np
import pytest
from affine import Affine
from rasterio.windows import Window

from fastsam_geo.errors import WeightsError
from fastsam_geo.masks import InstanceMasks
from fastsam_geo.segment import (
    FastSAMSegmenter,
    Letterbox,
    Segmenter,
    assemble_masks,
    boxes_to_tile,
    letterbox_image,
    letterbox_params,
)
from fastsam_geo.tiling import Tile
from fastsam_geo.weights import sha256_file


def make_tile(image: np.ndarray, col: int = 0, row: int = 0, nodata: np.ndarray | None = None) -> Tile:
    h, w = image.shape[:2]
    window = Window(col, row, w, h)
    transform = Affine(0.5, 0, 500000 + 0.5 * col, 0, -0.5, 4650000 - 0.5 * row)
    return Tile(image, window, transform, None, window, nodata=nodata, id=f"r{row:04d}_c{col:04d}")


@pytest.fixture(scope="module")
def town() -> np.ndarray:
    """A 1024 x 1024 synthetic town, H x W x 3 uint8."""
    from fastsam_geo.synthetic import plan_scene, render_block

    plan = plan_scene(1024, 1024, seed=3)
    return np.ascontiguousarray(render_block(plan, Window(0, 0, 1024, 1024)).transpose(1, 2, 0))


def synthetic_detections(
    rng: np.random.Generator, n: int, lb: Letterbox, nm: int = 32
) -> tuple[np.ndarray, np.ndarray]:
    """``N x (6 + nm)`` detections (boxes in input pixels) and smooth-ish prototypes."""
    ih, iw = lb.input_shape
    protos = rng.standard_normal((nm, ih // 4, iw // 4)).astype(np.float32)
    wh = rng.uniform(3, 0.6 * min(ih, iw), (n, 2))
    xy = rng.uniform(-10, np.array([iw, ih]) - wh / 2)
    det = np.zeros((n, 6 + nm), np.float32)
    det[:, :4] = np.concatenate([xy, xy + wh], axis=1)
    det[:, 4] = np.sort(rng.uniform(0.1, 0.9, n))[::-1]
    det[:, 6:] = rng.standard_normal((n, nm))
    return det, protos


def reference_masks(det: np.ndarray, protos: np.ndarray, lb: Letterbox) -> np.ndarray:
    """Dense masks the torch way: bilinear (``align_corners=False``) sampling of the full logit map at
    every tile pixel (``grid_sample``), threshold 0, then ultralytics' ``crop_mask`` to the boxes."""
    import torch
    import torch.nn.functional as F
    from ultralytics.utils import ops

    h, w = lb.tile_shape
    nm, mh, mw = protos.shape
    logits = torch.from_numpy(det[:, 6:]) @ torch.from_numpy(protos).view(nm, -1)
    logits = logits.view(1, -1, mh, mw)
    ry, rx = mh / lb.input_shape[0], mw / lb.input_shape[1]
    ys = ((torch.arange(h, dtype=torch.float64) + 0.5) * lb.gain[0] + lb.pad[0]) * ry  # prototype units
    xs = ((torch.arange(w, dtype=torch.float64) + 0.5) * lb.gain[1] + lb.pad[1]) * rx
    gy, gx = torch.meshgrid(2 * ys / mh - 1, 2 * xs / mw - 1, indexing="ij")
    grid = torch.stack([gx, gy], dim=-1)[None].float()
    up = F.grid_sample(logits, grid, mode="bilinear", padding_mode="border", align_corners=False)[0]
    boxes = torch.from_numpy(boxes_to_tile(det[:, :4], lb))
    return ops.crop_mask((up > 0).byte(), boxes).bool().numpy()


def assert_same_objects(ours: InstanceMasks, dense: np.ndarray, max_bad_px: int = 0) -> None:
    """``ours`` holds exactly the non-empty masks of ``dense``, in order, up to ``max_bad_px`` pixels."""
    keep = dense.reshape(len(dense), -1).any(axis=1)
    dense = dense[keep]
    assert len(ours) == len(dense)
    bad = int((ours.masks != dense).sum())
    assert bad <= max_bad_px, f"{bad} pixels differ from the reference"


# ---------------------------------------------------------------------- pure: no network
def test_importing_segment_leaves_torch_and_ultralytics_out() -> None:
    code = (
        "import sys, fastsam_geo.segment, fastsam_geo.weights, fastsam_geo.cache\n"
        "bad = sorted(m for m in ('torch', 'ultralytics', 'torchvision') if m in sys.modules)\n"
        "print(','.join(bad))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_letterbox_centres_and_resizes_like_ultralytics() -> None:
    lb = letterbox_params((1000, 1024), (1024, 1024), resize=False)
    assert lb.gain == (1.0, 1.0) and lb.pad == (12, 0)
    image = np.full((1000, 1024, 3), 7, np.uint8)
    x = letterbox_image(image, lb)
    assert x.shape == (1024, 1024, 3)
    assert (x[:12] == 114).all() and (x[12:1012] == 7).all() and (x[1012:] == 114).all()
    lb = letterbox_params((1024, 512), (640, 640), resize=True)
    assert lb.gain == (0.625, 0.625) and lb.pad == (0, 160)
    assert letterbox_image(np.zeros((1024, 512, 3), np.uint8), lb).shape == (640, 640, 3)
    with pytest.raises(ValueError, match="does not fit"):
        letterbox_params((300, 300), (256, 256), resize=False)


def test_assemble_equals_ultralytics_process_mask_native() -> None:
    """No letterbox: the crops are exactly ultralytics' retina masks (``process_mask_native``)."""
    import torch
    from ultralytics.utils import ops

    rng = np.random.default_rng(0)
    lb = letterbox_params((320, 256), (320, 256), resize=False)
    det, protos = synthetic_detections(rng, 60, lb)
    ours = assemble_masks(det, protos, lb)
    boxes = ops.scale_boxes((320, 256), torch.from_numpy(det[:, :4]).clone(), (320, 256))
    ref = ops.process_mask_native(torch.from_numpy(protos), torch.from_numpy(det[:, 6:]), boxes, (320, 256))
    assert_same_objects(ours, ref.bool().numpy())
    keep = ref.bool().numpy().reshape(60, -1).any(axis=1)
    np.testing.assert_array_equal(ours.boxes, boxes.numpy()[keep])
    np.testing.assert_array_equal(ours.scores, det[keep, 4])


@pytest.mark.parametrize(
    ("tile_shape", "input_shape", "resize", "max_bad_px"),
    [
        ((200, 256), (256, 256), False, 0),  # an edge tile padded into a batch: exact
        ((250, 230), (256, 256), False, 0),  # odd padding on both axes: exact
        ((300, 400), (256, 256), True, 40),  # resized (imgsz): warpAffine's 1/32 px steps may flip a few px
        ((100, 128), (256, 256), True, 40),  # upscaled
    ],
)
def test_assemble_with_letterbox_matches_torch_sampling(
    tile_shape: tuple[int, int], input_shape: tuple[int, int], resize: bool, max_bad_px: int
) -> None:
    rng = np.random.default_rng(1)
    lb = letterbox_params(tile_shape, input_shape, resize=resize)
    det, protos = synthetic_detections(rng, 40, lb)
    ours = assemble_masks(det, protos, lb)
    assert_same_objects(ours, reference_masks(det, protos, lb), max_bad_px=max_bad_px)
    h, w = tile_shape
    assert ((ours.boxes >= 0) & (ours.boxes <= [w, h, w, h])).all()


def test_assemble_crops_lie_in_their_boxes_and_the_tile() -> None:
    rng = np.random.default_rng(2)
    lb = letterbox_params((256, 256), (256, 256), resize=False)
    det, protos = synthetic_detections(rng, 80, lb)
    ours = assemble_masks(det, protos, lb)
    cb = ours.crop_boxes  # row0, col0, row1, col1
    assert (cb[:, :2] >= 0).all() and (cb[:, 2] <= 256).all() and (cb[:, 3] <= 256).all()
    np.testing.assert_array_equal(cb[:, [1, 0]], np.ceil(ours.boxes[:, :2]).astype(np.int64))
    np.testing.assert_array_equal(cb[:, [3, 2]], np.ceil(ours.boxes[:, 2:]).astype(np.int64))
    assert all(c.dtype == bool and c.any() for c in ours.crops)


def test_assemble_nodata_min_area_and_empty() -> None:
    rng = np.random.default_rng(3)
    lb = letterbox_params((256, 256), (256, 256), resize=False)
    det, protos = synthetic_detections(rng, 50, lb)
    nodata = np.zeros((256, 256), bool)
    nodata[:, :100] = True
    full = assemble_masks(det, protos, lb)
    cut = assemble_masks(det, protos, lb, nodata=nodata)
    assert len(cut) < len(full)
    assert not cut.masks[:, :, :100].any()
    assert all(c.any() for c in cut.crops)
    big = assemble_masks(det, protos, lb, min_area_px=500)
    assert len(big) < len(full) and (big.areas >= 500).all()
    empty = assemble_masks(np.zeros((0, 38), np.float32), protos, lb)
    assert len(empty) == 0 and empty.shape == (256, 256)


def test_assemble_decides_uniform_boxes_on_the_prototype_grid() -> None:
    """All-positive / all-negative logits under a box give a full / no mask without upsampling."""
    lb = letterbox_params((64, 64), (64, 64), resize=False)
    protos = np.ones((2, 16, 16), np.float32)
    det = np.array([[4.2, 5, 30, 40.5, 0.9, 0, 1.0, 0.5], [10, 10, 20, 20, 0.8, 0, -1.0, -0.5]], np.float32)
    out = assemble_masks(det, protos, lb)
    assert len(out) == 1
    assert out.crops[0].shape == (36, 25) and out.crops[0].all()  # rows 5..40, cols 5..29
    assert out.offsets.tolist() == [[5, 5]]


# ---------------------------------------------------------------------- weights errors
def test_missing_weights_raise_weights_error(tmp_path) -> None:
    missing = tmp_path / "nope" / "FastSAM-x.pt"
    with pytest.raises(WeightsError, match="nope") as info:
        FastSAMSegmenter(missing)
    assert "\n" not in str(info.value)


@pytest.mark.model
def test_text_file_renamed_pt_raises_weights_error(tmp_path) -> None:
    bad = tmp_path / "FastSAM-s.pt"
    bad.write_text("this is not a checkpoint\n")
    with pytest.raises(WeightsError, match=re.escape("FastSAM-s.pt")) as info:
        FastSAMSegmenter(bad, device="cpu")
    assert str(bad) in str(info.value) and "\n" not in str(info.value)


@pytest.mark.model
def test_detection_checkpoint_is_rejected(tmp_path) -> None:
    import torch
    from ultralytics.nn.tasks import DetectionModel

    model = DetectionModel("yolov8n.yaml", nc=1, verbose=False)
    model.args = {"task": "detect"}
    path = tmp_path / "detector.pt"
    torch.save({"model": model.half(), "train_args": {"task": "detect"}, "epoch": -1}, path)
    with pytest.raises(WeightsError, match=r"detector\.pt.*not an instance-segmentation"):
        FastSAMSegmenter(path, device="cpu")


# ---------------------------------------------------------------------- the network (random weights)
@pytest.fixture(scope="module")
def segmenter(random_fastsam_s) -> FastSAMSegmenter:
    # random weights score every anchor near the head's bias (~0.003-0.012): conf must be tiny
    # refine=False: the masks as assembled, compared with ultralytics' own below (tests/test_refine.py: refined)
    return FastSAMSegmenter(random_fastsam_s, device="cpu", conf=0.001, batch_size=4, threads=2, refine=False)


@pytest.mark.model
def test_random_checkpoint_loads_like_official_weights(segmenter, random_fastsam_s) -> None:
    assert isinstance(segmenter, Segmenter)
    assert segmenter.weights_path == random_fastsam_s.resolve()
    assert segmenter.weights_sha256 == sha256_file(random_fastsam_s)
    assert str(segmenter.device) == "cpu" and segmenter.half is False
    assert segmenter.metadata["weights_sha256"] == segmenter.weights_sha256
    assert segmenter.stride == 32


@pytest.mark.model
def test_segment_two_tiles_end_to_end(segmenter, town) -> None:
    nodata = np.zeros((256, 320), bool)
    nodata[:, :64] = True
    tiles = [
        make_tile(np.ascontiguousarray(town[:256, :256])),
        make_tile(np.ascontiguousarray(town[300:556, 200:520]), col=200, row=300, nodata=nodata),
    ]
    calls = segmenter.model_calls
    out = segmenter.segment(tiles)
    assert segmenter.model_calls == calls + 1  # both tiles in one batch
    assert len(out) == 2
    for tile, im in zip(tiles, out, strict=True):
        h, w = tile.shape
        assert isinstance(im, InstanceMasks) and im.shape == (h, w)
        assert im.scores.dtype == np.float32 and im.boxes.dtype == np.float32 and im.offsets.dtype == np.int64
        assert im.boxes.shape == (len(im), 4) and im.offsets.shape == (len(im), 2)
        assert all(type(c) is np.ndarray and c.dtype == bool and c.ndim == 2 for c in im.crops)
        assert ((im.scores >= segmenter.conf) & (im.scores <= 1)).all()
        assert (np.diff(im.scores) <= 0).all()  # NMS order: best first
        cb = im.crop_boxes
        assert (cb[:, :2] >= 0).all() and (cb[:, 2] <= h).all() and (cb[:, 3] <= w).all()
        assert ((im.boxes >= 0) & (im.boxes <= [w, h, w, h])).all()
        np.testing.assert_array_equal(cb[:, [1, 0]], np.ceil(im.boxes[:, :2]).astype(np.int64))
        assert (im.areas > 0).all()
    assert len(out[1]) > 0  # random weights: some tiles give no non-empty mask, this one does
    assert not out[1].masks[:, :, :64].any()  # nodata cleared


@pytest.mark.model
def test_masks_equal_ultralytics_retina_postprocess(segmenter, town, tmp_path) -> None:
    """Same forward output through ultralytics' FastSAM predictor postprocess (NMS, retina masks)
    gives exactly our masks and scores."""
    import torch
    from ultralytics import FastSAM
    from ultralytics.utils import ops

    image = np.ascontiguousarray(town[512:768, 256:512])
    tile = make_tile(image)
    ours = segmenter.segment([tile])[0]
    raw = segmenter.predict_raw([tile])[0]

    # ultralytics' own mask assembly on our NMS output
    det = torch.from_numpy(raw.det)
    boxes = ops.scale_boxes(raw.letterbox.input_shape, det[:, :4].clone(), tile.shape)
    ref = ops.process_mask_native(torch.from_numpy(raw.protos), det[:, 6:], boxes, tile.shape).bool().numpy()
    assert_same_objects(ours, ref)

    # ultralytics' whole FastSAM postprocess (NMS + retina masks) on the same forward output
    model = FastSAM(str(segmenter.weights_path))
    bgr = np.ascontiguousarray(image[..., ::-1])
    kw = {"imgsz": 256, "conf": segmenter.conf, "iou": segmenter.iou, "max_det": segmenter.max_det}
    model.predict(bgr, retina_masks=True, device="cpu", verbose=False, **kw)  # sets the predictor up
    predictor = model.predictor
    x = predictor.preprocess([bgr])
    with torch.inference_mode():
        preds = segmenter.net(x)
    predictor.batch = (["tile"], None, None)
    res = predictor.postprocess(preds, x, [bgr])[0]
    ul = res.masks.data.bool().numpy()
    assert_same_objects(ours, ul)
    np.testing.assert_allclose(ours.scores, res.boxes.conf.numpy(), rtol=1e-6)


@pytest.mark.model
def test_batches_and_padded_edge_tile_at_1024(segmenter, town) -> None:
    """A 1000-row edge tile batched with a full 1024 tile is padded (centred, grey), not resized."""
    import torch
    import torch.nn.functional as F
    from ultralytics.utils import ops

    edge_nodata = np.zeros((1000, 1024), bool)
    edge_nodata[-40:] = True
    tiles = [make_tile(town), make_tile(np.ascontiguousarray(town[24:]), row=24, nodata=edge_nodata)]
    seg = FastSAMSegmenter(
        segmenter.weights_path, device="cpu", conf=0.001, max_det=100, batch_size=2, threads=2, refine=False
    )
    raws: list = []

    def spy(batch, scale=1.0):  # keep what segment() assembled from (one forward pass per tile, not two)
        got = FastSAMSegmenter.predict_raw(seg, batch, scale)
        raws.extend(got)
        return got

    seg.predict_raw = spy  # type: ignore[method-assign]
    out = seg.segment(tiles)
    assert seg.model_calls == 1  # one batch of two
    assert [im.shape for im in out] == [(1024, 1024), (1000, 1024)]
    lb = raws[1].letterbox
    assert lb.input_shape == (1024, 1024) and lb.pad == (12, 0) and lb.gain == (1.0, 1.0)

    for tile, raw, im in zip(tiles, raws, out, strict=True):
        # reference: upsample the whole logit map to the input, cut the tile out, crop to the boxes
        lb = raw.letterbox
        h, w = tile.shape
        nm, mh, mw = raw.protos.shape
        logits = torch.from_numpy(raw.det[:, 6:]) @ torch.from_numpy(raw.protos).view(nm, -1)
        up = F.interpolate(logits.view(1, -1, mh, mw), lb.input_shape, mode="bilinear")[0]
        up = up[:, lb.pad[0] : lb.pad[0] + h, lb.pad[1] : lb.pad[1] + w] > 0
        boxes = torch.from_numpy(boxes_to_tile(raw.det[:, :4], lb))
        ref = ops.crop_mask(up.byte(), boxes).bool().numpy()
        if tile.nodata is not None:
            ref &= ~tile.nodata
        assert_same_objects(im, ref)
    assert not out[1].masks[:, -40:].any()


@pytest.mark.model
def test_tiles_are_batched_batch_size_at_a_time(segmenter, town) -> None:
    tiles = [make_tile(np.ascontiguousarray(town[i * 64 : i * 64 + 64, :96])) for i in range(5)]
    calls, segmenter.batch_size = segmenter.model_calls, 2
    try:
        out = segmenter.segment(tiles)
    finally:
        segmenter.batch_size = 4
    assert segmenter.model_calls == calls + 3
    assert [im.shape for im in out] == [(64, 96)] * 5


@pytest.mark.model
def test_segment_empty_list_and_bad_image(segmenter) -> None:
    assert segmenter.segment([]) == []
    with pytest.raises(ValueError, match="uint8"):
        segmenter.segment([make_tile(np.zeros((64, 64, 3), np.float32))])
