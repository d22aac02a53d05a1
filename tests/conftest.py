"""Shared fixtures: seeded synthetic scenes, a random FastSAM-s checkpoint, SpaceNet chips."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("YOLO_OFFLINE", "1")
os.environ.setdefault("YOLO_VERBOSE", "False")

REPO = Path(__file__).resolve().parents[1]
SPACENET = REPO.parent / "shared" / "data" / "spacenet_rio"


@pytest.fixture(scope="session")
def scene(tmp_path_factory: pytest.TempPathFactory):
    """A 768 x 768 px synthetic town (0.5 m, EPSG:32633) with its truth footprints."""
    from fastsam_geo.synthetic import write_scene

    path = tmp_path_factory.mktemp("scene") / "town.tif"
    return write_scene(path, 768, seed=3)


@pytest.fixture(scope="session")
def random_fastsam_s(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A checkpoint of the FastSAM-s architecture (yolov8s-seg, one class) with random weights,
    saved the way ultralytics saves its checkpoints, so it loads through ``ultralytics.FastSAM``."""
    from fastsam_geo.testing import random_fastsam_checkpoint

    return random_fastsam_checkpoint(tmp_path_factory.mktemp("weights") / "FastSAM-s-random.pt")


@pytest.fixture(scope="session")
def spacenet_chips() -> list[tuple[Path, Path]]:
    """(image, building mask) pairs of the real SpaceNet Rio chips; skips when ../shared is absent."""
    if not SPACENET.is_dir():
        pytest.skip(f"real imagery not available: {SPACENET} is absent (it is never committed)")
    images = sorted((SPACENET / "images").glob("*.tif"))
    pairs = [(p, SPACENET / "building_masks" / p.name) for p in images]
    pairs = [(i, m) for i, m in pairs if m.exists()]
    if not pairs:
        pytest.skip(f"no image/mask pairs under {SPACENET}")
    return pairs
