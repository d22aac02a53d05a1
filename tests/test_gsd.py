"""The working ground resolution through inference: grid, prompts, cache keys, ledger, CLI, worker."""

from __future__ import annotations

import shutil
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import shapely
from click.testing import CliRunner

from fastsam_geo.cli import main
from fastsam_geo.errors import RasterError
from fastsam_geo.evaluate import evaluate
from fastsam_geo.oracle import TruthSegmenter
from fastsam_geo.pipeline import extract_buildings
from fastsam_geo.prompts import BoxPrompt, PointPrompt, Prompts
from fastsam_geo.synthetic import Scene

REPO = Path(__file__).resolve().parents[1]
TOWN = REPO / "weights" / "fastsam-geo-town-n.pt"


class _Seen:
    """An oracle that records the pixel size of every tile it is given, and has a working gsd."""

    def __init__(self, truth: gpd.GeoDataFrame, gsd: float | None = None) -> None:
        self.inner = TruthSegmenter(truth)
        self.gsd = gsd
        self.tiles = 0
        self.pixel: set[float] = set()

    def segment(self, tiles):  # type: ignore[no-untyped-def]
        self.tiles += len(tiles)
        self.pixel.update(round(abs(t.transform.a), 2) for t in tiles)
        return self.inner.segment(tiles)


def _meta(path: Path) -> dict[str, str]:
    from fastsam_geo.output import read_run_tables

    return read_run_tables(path)[0]


def test_the_segmenters_gsd_is_used_unless_overridden(scene: Scene, tmp_path: Path) -> None:
    common = dict(tile_size=256, overlap=32, building_filter=False, overwrite=True)
    seg = _Seen(scene.truth, gsd=1.0)
    s = extract_buildings(scene.raster, tmp_path / "a.gpkg", segmenter=seg, **common)
    assert seg.pixel == {1.0} and s.tiles_total == 4  # 768 px at 0.5 m -> 384 px at 1 m
    meta = _meta(tmp_path / "a.gpkg")
    assert float(meta["native_gsd_m"]) == pytest.approx(0.5, abs=0.002)
    assert float(meta["gsd_m"]) == pytest.approx(1.0, abs=0.005)
    assert meta["grid"].startswith("384 x 384 px (native 768 x 768")
    pred = gpd.read_file(tmp_path / "a.gpkg", layer="buildings")
    assert evaluate(pred, scene.truth).f1 > 0.95  # polygons in the raster's CRS at the right place
    seg = _Seen(scene.truth, gsd=1.0)
    extract_buildings(scene.raster, tmp_path / "b.gpkg", segmenter=seg, gsd="native", **common)
    assert seg.pixel == {0.5}
    seg = _Seen(scene.truth, gsd=None)
    extract_buildings(scene.raster, tmp_path / "c.gpkg", segmenter=seg, gsd=0.25, **common)
    assert seg.pixel == {0.25}
    with pytest.raises(RasterError, match="not a ground resolution"):
        extract_buildings(scene.raster, tmp_path / "d.gpkg", segmenter=seg, gsd="fine", **common)
    assert not (tmp_path / "d.gpkg").exists()


def test_prompts_in_map_units_on_a_resampled_raster(scene: Scene, tmp_path: Path) -> None:
    """Points and boxes are routed through the working grid: the right buildings, whole."""
    truth = scene.truth.geometry.values
    picks = np.flatnonzero(shapely.area(truth) > 150)[[2, 20, 40, 60]]
    points = tuple(PointPrompt(p.x, p.y) for p in shapely.point_on_surface(truth[picks[:2]]))
    boxes = tuple(BoxPrompt(*truth[i].buffer(1.0).bounds) for i in picks[2:])
    for gsd in (1.0, 0.3):
        seg = _Seen(scene.truth)
        out = tmp_path / f"p{gsd}.gpkg"
        extract_buildings(
            scene.raster,
            out,
            segmenter=seg,
            prompts=Prompts(points=points, boxes=boxes, crs="EPSG:32633"),
            gsd=gsd,
            tile_size=256,
            overlap=32,
            building_filter=False,
            overwrite=True,
        )
        assert seg.pixel == {gsd}
        pred = gpd.read_file(out, layer="buildings")
        scores = evaluate(pred, scene.truth.iloc[picks])
        assert len(pred) == 4 and scores.f1 == 1.0, (gsd, scores)
        assert scores.mean_iou > (0.8 if gsd == 1.0 else 0.9)


def test_the_mask_cache_is_keyed_on_the_working_grid(scene: Scene, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    seg = _Seen(scene.truth)
    common = dict(segmenter=seg, tile_size=256, overlap=32, cache_dir=cache, building_filter=False, overwrite=True)
    extract_buildings(scene.raster, tmp_path / "a.gpkg", gsd=1.0, **common)
    assert seg.tiles == 4
    extract_buildings(scene.raster, tmp_path / "b.gpkg", gsd=1.0, **common)
    assert seg.tiles == 4  # all from the cache
    # the same windows at the native resolution are other pixels: never answered from the cache
    extract_buildings(scene.raster, tmp_path / "c.gpkg", gsd="native", **common)
    assert seg.tiles == 4 + 16
    pick = shapely.point_on_surface(scene.truth.geometry.values[5])
    prompts = Prompts(points=(PointPrompt(pick.x, pick.y),), crs="EPSG:32633")
    s = extract_buildings(scene.raster, tmp_path / "d.gpkg", gsd=1.0, prompts=prompts, **common)
    assert seg.tiles == 20 and s.buildings == 1


def test_resume_refuses_another_working_grid(scene: Scene, tmp_path: Path) -> None:
    from fastsam_geo.errors import Cancelled, OutputError

    out = tmp_path / "x.gpkg"
    common = dict(tile_size=256, overlap=32, building_filter=False)
    calls = iter(range(100))
    with pytest.raises(Cancelled):  # interrupted after a tile: the ledger stays
        extract_buildings(scene.raster, out, segmenter=_Seen(scene.truth), gsd=1.0,
                          cancel=lambda: next(calls) >= 2, **common)
    with pytest.raises(OutputError, match=r"other settings \(grid\)"):
        extract_buildings(scene.raster, out, segmenter=_Seen(scene.truth), gsd="native", resume=True, **common)
    s = extract_buildings(scene.raster, out, segmenter=_Seen(scene.truth), gsd=1.0, resume=True, **common)
    assert s.tiles_resumed >= 1 and s.tiles_total == 4


def test_cli_gsd_option_and_info(scene: Scene, tmp_path: Path) -> None:
    runner = CliRunner()
    bad = runner.invoke(main, ["extract", str(scene.raster), str(tmp_path / "o.gpkg"), "--gsd", "fine"])
    assert bad.exit_code == 1 and "'fine' is not a ground resolution" in bad.output
    assert not (tmp_path / "o.gpkg").exists()
    bad = runner.invoke(main, ["prompt", str(scene.raster), str(tmp_path / "o.gpkg"), "--gsd", "-1", "--point", "1,2"])
    assert bad.exit_code == 1 and "not a ground resolution" in bad.output
    res = runner.invoke(main, ["info", str(scene.raster), "-w", str(TOWN), "--gsd", "0.25", "--tile-size", "512"])
    assert res.exit_code == 0, res.output
    assert "ground:   0.5 m per pixel (native)" in res.output
    assert "working:  0.25 m per pixel (resampled); --gsd" in res.output
    assert "grid:     1537 x 1537 px" in res.output and "tiles:    16 (4 x 4) of 512 px" in res.output


def test_the_model_keeps_its_working_gsd(tmp_path: Path) -> None:
    from fastsam_geo.modelmeta import read_model_meta, weights_gsd, write_pt_meta

    copy = tmp_path / "town.pt"
    shutil.copyfile(TOWN, copy)
    assert weights_gsd(copy) is None
    write_pt_meta(copy, {"gsd_m": 0.5})
    assert read_model_meta(copy) == {"gsd_m": 0.5} and weights_gsd(copy) == 0.5


@pytest.mark.model
def test_fastsam_segmenter_reads_gsd_from_the_checkpoint_it_loads(tmp_path: Path) -> None:
    from fastsam_geo.modelmeta import write_pt_meta
    from fastsam_geo.segment import FastSAMSegmenter

    copy = tmp_path / "town.pt"
    shutil.copyfile(TOWN, copy)
    write_pt_meta(copy, {"gsd_m": 0.4})
    assert FastSAMSegmenter(copy, device="cpu").gsd == 0.4
    assert FastSAMSegmenter(TOWN, device="cpu").gsd is None


def test_worker_takes_gsd(scene: Scene, tmp_path: Path) -> None:
    from fastsam_geo.worker import Engine, ProtocolError, extract_params

    with pytest.raises(ProtocolError, match="not a ground resolution"):
        extract_params({"raster": "a.tif", "gsd": "big"})
    made: list[_Seen] = []

    def factory(weights, device, conf, iou, tta=1):  # type: ignore[no-untyped-def]
        made.append(_Seen(scene.truth, gsd=1.0))
        return made[-1]

    engine = Engine(cache_dir=tmp_path / "cache", segmenter_factory=factory)
    params = {"raster": str(scene.raster), "tile_size": 256, "overlap": 32, "building_filter": False}
    r1 = engine.extract(1, {**params, "output": str(tmp_path / "a.gpkg")}, lambda d, t: None, lambda: False)
    assert made[0].pixel == {1.0} and r1["tiles_total"] == 4
    params2 = {**params, "output": str(tmp_path / "b.gpkg"), "gsd": "native"}
    r2 = engine.extract(2, params2, lambda d, t: None, lambda: False)
    assert r2["tiles_total"] == 16 and r2["cache"]["misses"] == 16 and made[0].pixel == {1.0, 0.5}
