"""The stages on their own: plan -> tile work -> merge/sink, and order independence of the merge.

Tile results of a real synthetic GeoTIFF (the oracle segmenter gives each tile the true
masks, so many buildings cross seams) are fed to the sink in shuffled orders, as a Dask
cluster delivers them: the output (geometries, attributes, ids) must not change.
"""

from __future__ import annotations

import pickle
import random
from pathlib import Path

import geopandas as gpd
import pytest
from shapely.testing import assert_geometries_equal

from fastsam_geo.oracle import TruthSegmenter
from fastsam_geo.pipeline import build_options
from fastsam_geo.plan import plan_run
from fastsam_geo.sink import ExtractSummary, RunSink
from fastsam_geo.synthetic import write_scene
from fastsam_geo.tilework import TileContext, TileResult, process_tile


@pytest.fixture(scope="module")
def tile_results(tmp_path_factory: pytest.TempPathFactory):
    scene = write_scene(tmp_path_factory.mktemp("stages") / "town.tif", 768, seed=21)
    options = build_options(tile_size=256, overlap=32, building_filter=False)
    plan = plan_run(scene.raster, "unused.gpkg", options)
    seg = TruthSegmenter(scene.truth)
    from fastsam_geo.plan import open_source

    with open_source(scene.raster, options.tiling) as src:
        results = [process_tile(spec, TileContext.of(plan), seg, src) for spec in plan.specs]
    return scene, options, results


def _sink_output(scene, options, results: list[TileResult], out: Path) -> gpd.GeoDataFrame:
    plan = plan_run(scene.raster, out, options)
    sink = RunSink(plan, ExtractSummary(str(scene.raster), str(out))).open(plan.params("TruthSegmenter", None))
    for r in results:
        sink.add(r)
    sink.finish()
    sink.close(None)
    return gpd.read_file(out, layer="buildings")


def test_tile_results_pickle_small_and_whole(tile_results) -> None:
    _, _, results = tile_results
    r = max(results, key=lambda r: len(r.geoms))
    back = pickle.loads(pickle.dumps(r))
    assert_geometries_equal(back.geoms, r.geoms)
    assert list(back.scores) == list(r.scores) and back.labels == r.labels and back.tile_id == r.tile_id


def test_the_merge_gives_the_same_output_whatever_order_tiles_arrive(tile_results, tmp_path: Path) -> None:
    scene, options, results = tile_results
    ref = _sink_output(scene, options, results, tmp_path / "grid_order.gpkg")
    assert len(ref) > 50 and (ref.pieces > 1).sum() >= 20 and ref.seam_merged.sum() >= 3  # many cross seams
    rng = random.Random(7)
    for k in range(4):
        shuffled = results[:]
        rng.shuffle(shuffled) if k else shuffled.reverse()
        got = _sink_output(scene, options, shuffled, tmp_path / f"order{k}.gpkg")
        ref_s, got_s = ref.sort_values("id").reset_index(drop=True), got.sort_values("id").reset_index(drop=True)
        assert len(got_s) == len(ref_s)
        assert_geometries_equal(got_s.geometry.values, ref_s.geometry.values, tolerance=1e-6, normalize=True)
        for col in ("id", "score", "tile_ids", "seam_merged", "pieces", "prompt", "area_m2"):
            assert list(got_s[col]) == list(ref_s[col]), (k, col)
