"""CLIP text prompts: crops that show one mask alone, weights errors, and a real open_clip model."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from fastsam_geo.errors import DependencyError, WeightsError
from fastsam_geo.masks import InstanceMasks
from fastsam_geo.textprompt import CLIP_GREY, ClipScorer, mask_crop, softmax

# the smallest open_clip architecture that needs no extra package (timm, HF tokenizer): 43 M parameters
TINY_CLIP = "ViT-S-32-alt"

H, W = 64, 96
OBJ, NEIGHBOUR, GROUND = (10, 200, 30), (250, 0, 0), (0, 0, 250)


def scene() -> tuple[np.ndarray, InstanceMasks]:
    """Two touching buildings with their own colours on a blue ground, and their masks."""
    img = np.empty((H, W, 3), np.uint8)
    img[:] = GROUND
    dense = np.zeros((3, H, W), bool)
    dense[0, 10:40, 10:40] = True  # the object: an L (its box holds ground pixels too)
    dense[0, 10:25, 25:40] = False
    dense[1, 10:40, 40:70] = True  # the neighbour, touching it
    dense[2, 45:60, 0:96] = True  # a road along the bottom edge
    img[dense[0]] = OBJ
    img[dense[1]] = NEIGHBOUR
    img[dense[2]] = (90, 90, 90)
    return img, InstanceMasks.from_dense(dense)


def _count(crop: np.ndarray, colour) -> int:
    return int((crop == np.asarray(colour, np.uint8)).all(axis=2).sum())


# ====================================================================== crops
def test_crop_holds_the_mask_pixels_and_nothing_else():
    img, masks = scene()
    crop = mask_crop(img, masks, 0)
    assert crop.dtype == np.uint8 and crop.shape[0] == crop.shape[1]  # squared
    assert _count(crop, OBJ) == int(masks.areas[0])  # every pixel of the mask ...
    assert _count(crop, NEIGHBOUR) == 0  # ... and no neighbour, though it lies in the padded box
    assert _count(crop, GROUND) == 0  # nor the ground inside the L's box
    assert _count(crop, CLIP_GREY) == crop.shape[0] * crop.shape[1] - int(masks.areas[0])
    # the padded box would have shown the neighbour: the test is not vacuous
    r0, _c0, r1, c1 = masks.crop_boxes[0]
    assert (img[r0:r1, c1 : c1 + 3] == NEIGHBOUR).all()


def test_crop_at_the_image_edge_and_unsquared():
    img, masks = scene()
    crop = mask_crop(img, masks, 2, square=False, pad=0.1, fill=(0, 0, 0))
    assert crop.shape[1] == W  # clipped to the image, not padded past it
    assert _count(crop, (90, 90, 90)) == int(masks.areas[2])
    assert _count(crop, NEIGHBOUR) == 0 and _count(crop, OBJ) == 0
    with pytest.raises(ValueError):
        mask_crop(img[:, :, 0], masks, 0)


def test_softmax():
    p = softmax(np.array([0.30, 0.25, 0.10]))
    assert p.sum() == pytest.approx(1.0) and p.argmax() == 0 and (np.diff(p) < 0).all()
    assert softmax(np.zeros(0)).shape == (0,)


# ====================================================================== no torch at import, errors
def test_importing_prompt_modules_loads_no_torch():
    code = (
        "import sys; import fastsam_geo.prompts, fastsam_geo.regularize, fastsam_geo.textprompt; "
        "bad = [m for m in ('torch', 'open_clip', 'ultralytics', 'qgis') if m in sys.modules]; "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).resolve().parents[1])


def test_scorer_is_lazy_and_empty_masks_need_no_model():
    scorer = ClipScorer(TINY_CLIP, pretrained="/nonexistent/clip.pt")
    assert scorer.loads == 0
    img, masks = scene()
    assert scorer.score(img, masks.subset([]), "a building").shape == (0,)
    assert scorer.loads == 0


def test_missing_weights_file_says_which_file_and_how_to_get_weights(tmp_path):
    missing = tmp_path / "clip-weights.pt"
    with pytest.raises(WeightsError) as err:
        ClipScorer(TINY_CLIP, pretrained=missing).load()
    msg = str(err.value)
    assert str(missing) in msg and "--clip-weights" in msg and "laion2b_s34b_b79k" in msg
    assert "\n" not in msg
    assert isinstance(err.value, FileNotFoundError)


def test_unknown_tag_and_unknown_model():
    with pytest.raises(WeightsError, match="not-a-tag"):
        ClipScorer("ViT-B-32", pretrained="not-a-tag").load()
    with pytest.raises(WeightsError, match="ViT-Nope"):
        ClipScorer("ViT-Nope", pretrained="x.pt").load()


def test_tag_download_failure_offline_is_a_weights_error(monkeypatch):
    import open_clip.factory

    def offline(*args, **kwargs):
        raise OSError("network is unreachable")

    monkeypatch.setattr(open_clip.factory, "download_pretrained", offline)
    with pytest.raises(WeightsError) as err:
        ClipScorer("ViT-B-32", pretrained="laion2b_s34b_b79k").load()
    msg = str(err.value)
    assert "'laion2b_s34b_b79k'" in msg and "offline" in msg and "\n" not in msg


def test_missing_open_clip_is_a_dependency_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "open_clip", None)
    with pytest.raises(DependencyError, match=r"fastsam-geo\[torch\]"):
        ClipScorer(TINY_CLIP, pretrained="x.pt").load()


def test_weights_of_another_architecture_are_a_weights_error(tmp_path):
    import torch

    bad = tmp_path / "not-clip.pt"
    torch.save({"weight": torch.zeros(3)}, bad)
    with pytest.raises(WeightsError, match=r"not-clip\.pt"):
        ClipScorer(TINY_CLIP, pretrained=bad).load()


# ====================================================================== a real open_clip model
@pytest.fixture(scope="session")
def tiny_clip_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A randomly initialised open_clip model saved as a local state dict (no download)."""
    import open_clip
    import torch

    torch.manual_seed(0)
    model = open_clip.create_model(TINY_CLIP, pretrained=None)
    path = tmp_path_factory.mktemp("clip") / f"{TINY_CLIP}-random.pt"
    torch.save(model.state_dict(), path)
    return path


@pytest.mark.model
def test_real_clip_scores_once_loaded_finite_deterministic_and_unleaked(tiny_clip_weights, monkeypatch):
    import open_clip

    calls = []
    real_create = open_clip.create_model_and_transforms

    def counting(*args, **kwargs):
        calls.append(kwargs.get("pretrained"))
        return real_create(*args, **kwargs)

    monkeypatch.setattr(open_clip, "create_model_and_transforms", counting)
    scorer = ClipScorer(TINY_CLIP, pretrained=tiny_clip_weights, batch_size=2)
    img, masks = scene()

    s1 = scorer.score(img, masks, "a photo of a building")
    s2 = scorer.score(img, masks, "a photo of a building")
    assert s1.shape == (3,) and s1.dtype == np.float32 and np.isfinite(s1).all()
    assert np.all(np.abs(s1) <= 1.0 + 1e-5)  # cosine similarities
    np.testing.assert_array_equal(s1, s2)
    assert calls == [str(tiny_clip_weights)] and scorer.loads == 1  # loaded once, from the file
    assert len(scorer._text_cache) == 1

    # a second text and a prompt ensemble: still the same model
    s3 = scorer.score(img, masks, ["a roof", "a house seen from above"])
    assert s3.shape == (3,) and not np.array_equal(s1, s3)
    assert scorer.loads == 1 and len(calls) == 1

    # masking: repainting everything outside mask 0 leaves its score exactly as it was,
    # while the neighbour's score moves
    img2 = img.copy()
    img2[~masks.mask(0)] = (255, 255, 0)
    s4 = scorer.score(img2, masks, "a photo of a building")
    assert s4[0] == s1[0]
    assert s4[1] != s1[1]

    p = scorer.score(img, masks, "a photo of a building", softmax=True)
    assert p.shape == (3,) and p.sum() == pytest.approx(1.0, abs=1e-5)
    assert p.argmax() == s1.argmax()
