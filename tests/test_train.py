"""Fine-tuning: GeoTIFF + footprints -> YOLO-seg dataset -> ultralytics -> loads back as the segmenter."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import rasterio
import rasterio.windows
import shapely
import shapely.affinity
from click.testing import CliRunner
from rasterio.windows import Window

from fastsam_geo.cli import main
from fastsam_geo.dataset import bridge_holes, build_dataset
from fastsam_geo.errors import RasterError
from fastsam_geo.synthetic import write_scene


def test_dataset_labels_are_the_footprints_in_crop_pixels(tmp_path: Path) -> None:
    """Label polygons, back in map coordinates, are the true footprints clipped to their crop."""
    scene = write_scene(tmp_path / "t.tif", 512, seed=2)
    ds = build_dataset([scene.raster], scene.truth, tmp_path / "ds", crop=256, val_fraction=0.25, seed=0)
    assert ds.images == 9 and ds.val_images >= 1 and ds.instances > 40
    labels = sorted((tmp_path / "ds" / "labels").rglob("*.txt"))
    assert len(labels) == 9
    lab = next(p for p in labels if "r0001_c0001" in p.name)  # the crop at (192, 192): stride 192
    with rasterio.open(scene.raster) as src:
        t = src.window_transform(Window(192, 192, 256, 256))
    polys = []
    for line in lab.read_text().splitlines():
        xy = np.array(line.split()[1:], float).reshape(-1, 2) * 256
        poly = shapely.make_valid(shapely.Polygon(xy))
        polys.append(shapely.affinity.affine_transform(poly, [t.a, t.b, t.d, t.e, t.c, t.f]))
    got = shapely.union_all(polys)
    crop = shapely.box(*rasterio.windows.bounds(Window(192, 192, 256, 256), src.transform))
    want = shapely.intersection(shapely.union_all(scene.truth.geometry.values), crop)
    assert shapely.area(shapely.symmetric_difference(got, want)) / want.area < 0.01


def _sparse_copy(src_path: Path, dst: Path, valid_cols: int) -> Path:
    """``src_path`` with nodata (0) everywhere but its first ``valid_cols`` columns, as a sparse
    mosaic of web-map tiles is."""
    with rasterio.open(src_path) as src:
        data, profile = src.read(), src.profile
    data[:, :, valid_cols:] = 0
    data[:, :, :valid_cols] = np.maximum(data[:, :, :valid_cols], 1)
    profile.update(nodata=0)
    with rasterio.open(dst, "w", **profile) as out:
        out.write(data)
    return dst


def test_sparse_crops_are_kept_and_their_footprints_clipped_to_the_data(tmp_path: Path) -> None:
    """A crop with 30 % of its pixels holding data is kept (not with --min-valid 0.5), and no label
    reaches into its nodata: a roof is never taught on black."""
    scene = write_scene(tmp_path / "t.tif", 256, seed=4, density=0.9)
    sparse = _sparse_copy(scene.raster, tmp_path / "sparse.tif", 77)
    with pytest.raises(RasterError, match="every crop was nodata"):  # 30 % valid < 50 %: left out
        build_dataset([sparse], scene.truth, tmp_path / "strict", crop=256, val_fraction=0.0, min_valid=0.5)
    ds = build_dataset([sparse], scene.truth, tmp_path / "ds", crop=256, val_fraction=0.0, min_valid=0.05)
    assert ds.images == 1 and ds.instances > 0
    lines = next((tmp_path / "ds" / "labels").rglob("*.txt")).read_text().splitlines()
    xs = np.concatenate([np.array(ln.split()[1:], float).reshape(-1, 2)[:, 0] for ln in lines]) * 256
    assert xs.max() <= 77 + 1e-6
    truth_left = shapely.intersection(
        shapely.union_all(scene.truth.geometry.values), shapely.box(500000, 0, 500000 + 77 * 0.5, 1e8)
    )
    assert len(lines) >= len(shapely.get_parts(truth_left)) * 0.8


def test_min_crops_gives_a_small_raster_more_sensor_copies(tmp_path: Path) -> None:
    """With --augment and --min-crops 7, a one-crop raster has 7 training images (its crop and six
    copies, turned and as other sensors see it) beside a large raster that is left as it was."""
    big = write_scene(tmp_path / "a_big.tif", 512, seed=2)
    small = write_scene(tmp_path / "small.tif", 200, seed=3)
    ds = build_dataset(
        [big.raster, small.raster],
        [big.truth, small.truth],
        tmp_path / "ds",
        crop=256,
        val_fraction=0.0,
        augment=True,
        min_crops=7,
    )
    train = sorted(p.name for p in (tmp_path / "ds" / "images" / "train").glob("*.png"))
    assert sum(n.startswith("small_") for n in train) == 7
    assert sum(n.startswith("a_big_") for n in train) == 2 * 9 - 1  # one moved to val
    assert ds.images == 9 * 2 + 7
    copies = [cv2.imread(str(tmp_path / "ds" / "images" / "train" / n)) for n in train if n.startswith("small_")]
    assert len({c.tobytes() for c in copies}) == 7


def test_bridged_ring_keeps_the_hole() -> None:
    court = shapely.Polygon(shapely.box(0, 0, 40, 40).exterior.coords, [shapely.box(10, 10, 30, 30).exterior.coords])
    ring = bridge_holes(court)
    drawn = np.zeros((40, 40), np.uint8)
    cv2.fillPoly(drawn, [(ring - 0.5).round().astype(np.int32)], 1)
    assert drawn[20, 20] == 0 and drawn[5, 5] == 1
    assert abs(int(drawn.sum()) - 1200) < 80


@pytest.mark.model
def test_train_command_writes_a_checkpoint_that_loads_as_the_segmenter(tmp_path: Path) -> None:
    scene = write_scene(tmp_path / "t.tif", 256, seed=4)
    out = tmp_path / "tiny.pt"
    r = CliRunner().invoke(
        main,
        [
            "train",
            str(scene.raster),
            "--labels",
            str(tmp_path / "t_buildings.gpkg"),
            "-o",
            str(out),
            "--epochs",
            "1",
            "--imgsz",
            "128",
            "--batch",
            "4",
            "--workers",
            "0",
            "--work-dir",
            str(tmp_path / "work"),
        ],
    )
    assert r.exit_code == 0, r.output
    assert out.exists() and out.stat().st_size > 1_000_000
    from fastsam_geo.segment import FastSAMSegmenter
    from fastsam_geo.tiling import Tile

    seg = FastSAMSegmenter(out, conf=0.001, batch_size=1)
    with rasterio.open(scene.raster) as src:
        win = Window(0, 0, 128, 128)
        tile = Tile(src.read(window=win).transpose(1, 2, 0).copy(), win, src.window_transform(win), src.crs, win)
    masks = seg.segment([tile])[0]
    assert masks.shape == (128, 128) and seg.model_calls == 1
    assert len(seg.weights_sha256) == 64


@pytest.mark.model
def test_train_reports_validation_per_source(tmp_path: Path) -> None:
    """Two sources (other resolutions): after training each is validated on its own crops."""
    from fastsam_geo.train import train

    a = write_scene(tmp_path / "a.tif", 320, seed=4)
    b = write_scene(tmp_path / "b.tif", 320, seed=5, pixel_size=0.3)
    r = CliRunner().invoke(
        main,
        [
            "train",
            str(a.raster),
            str(b.raster),
            "--labels",
            str(tmp_path / "a_buildings.gpkg"),
            "--labels",
            str(tmp_path / "b_buildings.gpkg"),
            "-o",
            str(tmp_path / "two.pt"),
            "--base",
            str(Path(__file__).resolve().parents[1] / "weights" / "fastsam-geo-town-n.pt"),
            "--epochs",
            "1",
            "--imgsz",
            "64",
            "--batch",
            "8",
            "--workers",
            "0",
            "--gsd",
            "0.5",
            "--tta",
            "2",
            "--work-dir",
            str(tmp_path / "work"),
        ],
    )
    assert r.exit_code == 0, r.output
    # the threshold is calibrated with the views given (as extract will run), on both rasters
    assert "extract --tta 2 on the training rasters" in r.output, r.output
    lines = r.output.splitlines()
    head = next(i for i, line in enumerate(lines) if line.startswith("validation by source"))
    rows = [line.split() for line in lines[head + 1 : head + 3]]
    assert [row[0] for row in rows] == ["a", "b"], r.output
    for row in rows:
        crops, buildings, p, rec, map50 = int(row[1]), int(row[2]), *map(float, row[3:6])
        assert crops > 0 and buildings > 0 and 0 <= p <= 1 and 0 <= rec <= 1 and 0 <= map50 <= 1
    res = train(
        [a.raster],
        [tmp_path / "a_buildings.gpkg"],
        tmp_path / "one.pt",
        base=str(tmp_path / "two.pt"),
        epochs=2,
        imgsz=64,
        batch=8,
        workers=0,
        work_dir=tmp_path / "work1",
        keep="last",
    )
    assert [s.source for s in res.per_source] == ["a"] and res.per_source[0].images == res.dataset.val_images
    # keep="last": the weights of the last epoch, whatever the validation crops said of the first
    import torch

    def weights_of(path: Path) -> dict[str, torch.Tensor]:
        return torch.load(path, map_location="cpu", weights_only=False)["model"].float().state_dict()

    written, last = (
        weights_of(tmp_path / "one.pt"),
        weights_of(tmp_path / "work1" / "runs" / "train" / "weights" / "last.pt"),
    )
    assert written.keys() == last.keys() and all(torch.equal(written[k], last[k]) for k in written)
    # the confidence threshold of the best validation F1 is stored with the weights and used by extract
    from fastsam_geo.modelmeta import read_model_meta
    from fastsam_geo.segment import FastSAMSegmenter

    confs = [s.conf for s in res.per_source if s.conf is not None]
    stored = read_model_meta(tmp_path / "one.pt").get("conf")
    assert stored == res.conf, (stored, res.conf)
    if res.calibration is not None:  # chosen by extract's object F1 on the training raster
        from fastsam_geo.calibrate import best_threshold

        cal = res.calibration
        assert stored == best_threshold(cal.grid, cal.mean_f1) and len(cal.per_source) == 1
        assert read_model_meta(tmp_path / "one.pt")["conf_tta"] == cal.tta  # the views it was chosen for
    else:  # no threshold finds a truth building: the crops' best-F1 thresholds decide
        assert stored is None if not confs else 0.05 <= stored <= 0.5, (stored, confs)
        assert "conf_tta" not in read_model_meta(tmp_path / "one.pt")
    assert FastSAMSegmenter(tmp_path / "one.pt", device="cpu").conf == (0.25 if stored is None else stored)
    assert FastSAMSegmenter(tmp_path / "one.pt", device="cpu", conf=0.4).conf == 0.4


@pytest.mark.model
def test_freeze_keeps_the_backbone_and_lr0_sets_the_rate(tmp_path: Path) -> None:
    """`train --freeze 10 --lr0 0.001`: the backbone's weights and batch-norm statistics come out as they
    went in, the head learns, ultralytics ran AdamW at that rate, and the model says how it was trained."""
    import torch
    import yaml

    from fastsam_geo.modelmeta import read_model_meta

    base = Path(__file__).resolve().parents[1] / "weights" / "fastsam-geo-town-n.pt"
    scene = write_scene(tmp_path / "a.tif", 320, seed=4)
    out, work = tmp_path / "frozen.pt", tmp_path / "work"
    args = ["train", str(scene.raster), "--labels", str(tmp_path / "a_buildings.gpkg"), "-o", str(out)]
    args += ["--base", str(base), "--epochs", "2", "--imgsz", "64", "--batch", "8", "--workers", "0", "--tta", "1"]
    r = CliRunner().invoke(main, [*args, "--freeze", "10", "--lr0", "0.001", "--work-dir", str(work)])
    assert r.exit_code == 0, r.output

    def weights_of(path: Path) -> dict[str, torch.Tensor]:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
        return (ckpt.get("ema") or ckpt["model"]).float().state_dict()

    before, after = weights_of(base), weights_of(out)
    layer = {k: int(k.split(".")[1]) for k in before}
    frozen = [k for k in before if layer[k] < 10 and before[k].is_floating_point()]
    learnt = [k for k in before if layer[k] >= 10 and before[k].is_floating_point()]
    assert frozen and all(torch.equal(before[k], after[k]) for k in frozen)
    assert sum(not torch.equal(before[k], after[k]) for k in learnt) > len(learnt) // 2
    run = yaml.safe_load((work / "runs" / "train" / "args.yaml").read_text())
    assert (run["optimizer"], run["lr0"], run["freeze"]) == ("AdamW", 0.001, 10)
    meta = read_model_meta(out)
    assert (meta["freeze"], meta["lr0"]) == (10, 0.001)


@pytest.mark.model
def test_hours_is_a_budget_and_epochs_a_cap(tmp_path: Path) -> None:
    """ultralytics' time budget re-estimates the epoch count that fills it: `--epochs 1 --hours 0.01` ran 15
    epochs and said so. --epochs now caps it, and the model records the epochs that ran."""
    import subprocess
    import sys

    from fastsam_geo.modelmeta import read_model_meta

    scene = write_scene(tmp_path / "t.tif", 256, seed=4)
    base = Path(__file__).resolve().parents[1] / "weights" / "fastsam-geo-town-n.pt"
    args = ["--epochs", "2", "--hours", "0.02", "--imgsz", "64", "--batch", "2", "--workers", "0", "--tta", "1"]
    labels = str(tmp_path / "t_buildings.gpkg")
    r = subprocess.run(
        [sys.executable, "-m", "fastsam_geo", "train", str(scene.raster), "--labels", labels,
         "-o", str(tmp_path / "m.pt"), "--base", str(base), *args],
        capture_output=True, text=True, timeout=600, env={"PATH": "/usr/bin:/bin", "YOLO_OFFLINE": "1"},
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "m.pt: 2 epochs in" in r.stderr, r.stderr
    rows = (tmp_path / "train_work" / "runs" / "train" / "results.csv").read_text().splitlines()[1:]
    assert len(rows) == 2 and read_model_meta(tmp_path / "m.pt")["epochs"] == 2, rows
