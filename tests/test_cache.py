"""The everything-mask cache: keys, exact round trips, atomic writes, corrupt entries, CachedSegmenter."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
from affine import Affine
from rasterio.windows import Window

from fastsam_geo.cache import CachedSegmenter, MaskCache, cache_key, key_fn_for, raster_stamp
from fastsam_geo.masks import InstanceMasks
from fastsam_geo.segment import Segmenter
from fastsam_geo.tiling import Tile


def random_masks(seed: int, shape: tuple[int, int] = (64, 80), n: int = 7) -> InstanceMasks:
    rng = np.random.default_rng(seed)
    dense = np.zeros((n, *shape), bool)
    for i in range(n):
        r0, c0 = rng.integers(0, shape[0] - 5), rng.integers(0, shape[1] - 5)
        dense[i, r0 : r0 + rng.integers(1, 30), c0 : c0 + rng.integers(1, 30)] = rng.random() > 0.1
        dense[i, r0, c0] = True
        dense[i] &= rng.random(shape) > 0.2
        dense[i, r0, c0] = True
    return InstanceMasks.from_dense(dense, scores=rng.random(n).astype(np.float32))


def make_tile(col: int, row: int, size: int = 32) -> Tile:
    window = Window(col, row, size, size)
    image = np.full((size, size, 3), (col + row) % 255, np.uint8)
    return Tile(image, window, Affine.identity(), None, window, id=f"r{row:04d}_c{col:04d}")


class CountingSegmenter:
    """A fake segmenter that counts the tiles it is asked for and the calls made."""

    def __init__(self) -> None:
        self.calls = 0
        self.tiles = 0

    def segment(self, tiles: Sequence[Tile]) -> list[InstanceMasks]:
        self.calls += 1
        self.tiles += len(tiles)
        out = []
        for t in tiles:
            dense = np.zeros((1, *t.shape), bool)
            c, r = int(t.window.col_off) % 20, int(t.window.row_off) % 20
            dense[0, r : r + 5, c : c + 7] = True
            out.append(InstanceMasks.from_dense(dense, scores=[0.5 + c / 100]))
        return out


def key_of(tile: Tile) -> str:
    return cache_key(
        ("/data/ortho.tif", 123, 456), tile.window, weights_sha256="ff" * 32, conf=0.25, iou=0.7, imgsz=None
    )


def assert_identical(a: InstanceMasks, b: InstanceMasks) -> None:
    assert a.shape == b.shape and len(a) == len(b)
    for x, y in zip(a.crops, b.crops, strict=True):
        assert x.dtype == y.dtype == bool
        np.testing.assert_array_equal(x, y)
    for name in ("offsets", "scores", "boxes"):
        x, y = getattr(a, name), getattr(b, name)
        assert x.dtype == y.dtype
        np.testing.assert_array_equal(x, y)


# ---------------------------------------------------------------------- keys
def test_cache_key_changes_with_every_input() -> None:
    stamp = ("/data/ortho.tif", 1000, 17)
    base = {"weights_sha256": "a" * 64, "conf": 0.25, "iou": 0.7, "imgsz": None, "bands": "1,2,3|p2-98"}
    k = cache_key(stamp, (0, 0, 1024, 1024), **base)
    assert k == cache_key(stamp, Window(0, 0, 1024, 1024), **base)
    variants = [
        cache_key(("/data/other.tif", 1000, 17), (0, 0, 1024, 1024), **base),
        cache_key(("/data/ortho.tif", 1001, 17), (0, 0, 1024, 1024), **base),
        cache_key(("/data/ortho.tif", 1000, 18), (0, 0, 1024, 1024), **base),
        cache_key(stamp, (896, 0, 1024, 1024), **base),
        cache_key(stamp, (0, 896, 1024, 1024), **base),
        cache_key(stamp, (0, 0, 512, 1024), **base),
        cache_key(stamp, (0, 0, 1024, 512), **base),
        cache_key(stamp, (0, 0, 1024, 1024), **{**base, "weights_sha256": "b" * 64}),
        cache_key(stamp, (0, 0, 1024, 1024), **{**base, "conf": 0.3}),
        cache_key(stamp, (0, 0, 1024, 1024), **{**base, "iou": 0.5}),
        cache_key(stamp, (0, 0, 1024, 1024), **{**base, "imgsz": 1024}),
        cache_key(stamp, (0, 0, 1024, 1024), **{**base, "bands": "3,2,1|p2-98"}),
        cache_key(stamp, (0, 0, 1024, 1024), **base, extra={"max_det": 300}),
    ]
    assert len({k, *variants}) == len(variants) + 1


def test_masks_cached_under_older_radiometry_rules_are_misses(monkeypatch: pytest.MonkeyPatch) -> None:
    """Stop 31 gave full-range 16-bit and float rasters a gamma: their tiles look different to the model, and
    masks cached before (same file, window, model, bands and stretch mode) must not answer for them."""
    import fastsam_geo.cache as cache_mod

    stamp = ("/data/pan16.tif", 1000, 17)
    base = {"weights_sha256": "a" * 64, "conf": 0.25, "iou": 0.7, "imgsz": None, "bands": "[1, 1, 1]|auto"}
    now = cache_key(stamp, (0, 0, 1024, 1024), **base)
    monkeypatch.setattr(cache_mod, "RADIOMETRY_RULES", cache_mod.RADIOMETRY_RULES - 1)
    assert cache_key(stamp, (0, 0, 1024, 1024), **base) != now


def test_tiles_padded_to_their_grid_are_keyed_by_it() -> None:
    """Stop 32 pads a tile narrower than its grid's tiles to the grid's tile size: masks cached for
    it at its own size (before), or padded to another --tile-size, must not answer. Full tiles
    keep their keys (a tile without ``pad_to`` is keyed as before)."""
    from fastsam_geo.tiling import Tile

    fn = key_fn_for(("/data/chip.tif", 1000, 17), {"weights_sha256": "a" * 64, "conf": 0.25, "iou": 0.7, "imgsz": None})
    win = Window(0, 0, 438, 406)

    def tile(pad_to: int = 0) -> Tile:
        return Tile(np.zeros((406, 438, 3), np.uint8), win, Affine(0.25, 0, 0, 0, -0.25, 0), None, win, pad_to=pad_to)

    keys = {fn(tile()), fn(tile(pad_to=1024)), fn(tile(pad_to=512))}
    assert len(keys) == 3
    assert fn(tile(pad_to=1024)) == fn(tile(pad_to=1024))


def test_raster_stamp_follows_the_file(tmp_path: Path) -> None:
    path = tmp_path / "a.tif"
    path.write_bytes(b"x" * 10)
    s1 = raster_stamp(path)
    assert s1[0] == str(path.resolve()) and s1[1] == 10
    key1 = cache_key(path, (0, 0, 8, 8), weights_sha256="w", conf=0.25, iou=0.7, imgsz=None)
    path.write_bytes(b"x" * 11)
    key2 = cache_key(path, (0, 0, 8, 8), weights_sha256="w", conf=0.25, iou=0.7, imgsz=None)
    assert key1 != key2
    assert raster_stamp("/vsicurl/https://example.com/a.tif") == ("/vsicurl/https://example.com/a.tif", 0, 0)


# ---------------------------------------------------------------------- MaskCache
def test_pack_unpack_round_trip_is_exact(tmp_path: Path) -> None:
    masks = random_masks(0)
    assert_identical(InstanceMasks.unpack(masks.pack()), masks)
    cache = MaskCache(tmp_path, memory_items=0)  # force the disk path
    key = "0" * 64
    path = cache.put(key, masks)
    assert path.is_file() and path.parent.parent == tmp_path
    assert_identical(cache.get(key), masks)
    empty = InstanceMasks.empty((10, 12))
    cache.put("1" * 64, empty)
    got = cache.get("1" * 64)
    assert got is not None and len(got) == 0 and got.shape == (10, 12)


def test_get_missing_is_none_and_writes_leave_no_temp_files(tmp_path: Path) -> None:
    cache = MaskCache(tmp_path / "c")
    assert cache.get("a" * 64) is None
    assert "a" * 64 not in cache
    for i in range(5):
        cache.put(f"{i:064x}", random_masks(i))
    files = sorted(p.name for p in (tmp_path / "c").rglob("*") if p.is_file())
    assert len(files) == 5 and all(f.endswith(".npz") for f in files)
    assert f"{3:064x}" in cache


def test_bad_keys_are_rejected(tmp_path: Path) -> None:
    cache = MaskCache(tmp_path)
    for bad in ("../../etc/passwd", "ABC", "g" * 64, ""):
        with pytest.raises(ValueError, match="64-digit"):
            cache.get(bad)


def test_corrupt_entry_is_a_miss_then_overwritten(tmp_path: Path) -> None:
    masks = random_masks(1)
    key = "c" * 64
    cache = MaskCache(tmp_path, memory_items=0)
    path = cache.put(key, masks)
    path.write_bytes(b"garbage, not a zip")
    assert cache.get(key) is None
    path.write_bytes(path.read_bytes()[:7])  # truncated
    assert cache.get(key) is None
    np.savez_compressed(path, unrelated=np.arange(3))  # a valid npz of something else
    assert cache.get(key) is None

    inner = CountingSegmenter()
    tile = make_tile(0, 0)
    seg = CachedSegmenter(inner, cache, lambda t: key)
    out = seg.segment([tile])
    assert inner.tiles == 1
    assert_identical(cache.get(key), out[0])  # overwritten with good data


def test_memory_layer_is_lru(tmp_path: Path) -> None:
    cache = MaskCache(tmp_path, memory_items=2)
    keys = [f"{i:064x}" for i in range(3)]
    for i, k in enumerate(keys):
        cache.put(k, random_masks(i))
    assert list(cache._memory) == keys[1:]
    first = cache.get(keys[1])
    assert cache.get(keys[1]) is first  # served from memory
    assert list(cache._memory) == [keys[2], keys[1]]
    assert_identical(cache.get(keys[0]), random_masks(0))  # from disk, now remembered
    assert list(cache._memory) == [keys[1], keys[0]]


# ---------------------------------------------------------------------- CachedSegmenter
def test_second_pass_makes_no_inner_calls(tmp_path: Path) -> None:
    inner = CountingSegmenter()
    seg = CachedSegmenter(inner, MaskCache(tmp_path), key_of)
    assert isinstance(seg, Segmenter)
    tiles = [make_tile(c, r) for r in (0, 24) for c in (0, 24, 48)]
    first = seg.segment(tiles)
    assert (inner.calls, inner.tiles) == (1, 6)  # all misses in one batched call
    second = seg.segment(tiles)
    assert (inner.calls, inner.tiles) == (1, 6)
    for a, b in zip(first, second, strict=True):
        assert_identical(a, b)

    # a fresh process (new cache object, empty memory) reads the disk: still no inner call
    inner2 = CountingSegmenter()
    seg2 = CachedSegmenter(inner2, MaskCache(tmp_path, memory_items=0), key_of)
    third = seg2.segment(tiles)
    assert inner2.calls == 0
    for a, b in zip(first, third, strict=True):
        assert_identical(a, b)


def test_only_misses_reach_the_inner_segmenter_in_order(tmp_path: Path) -> None:
    inner = CountingSegmenter()
    seg = CachedSegmenter(inner, MaskCache(tmp_path), key_of)
    seg.segment([make_tile(0, 0), make_tile(50, 0)])
    tiles = [make_tile(0, 0), make_tile(7, 3), make_tile(50, 0), make_tile(11, 2)]
    out = seg.segment(tiles)
    assert (inner.calls, inner.tiles) == (2, 4)
    assert seg.inner_tiles == 4
    direct = CountingSegmenter().segment(tiles)
    for a, b in zip(out, direct, strict=True):
        assert_identical(a, b)


def test_tiles_without_a_key_are_never_cached(tmp_path: Path) -> None:
    inner = CountingSegmenter()
    seg = CachedSegmenter(inner, MaskCache(tmp_path), lambda t: None)
    seg.segment([make_tile(0, 0)])
    seg.segment([make_tile(0, 0)])
    assert inner.tiles == 2
    assert not any(tmp_path.rglob("*.npz"))


def test_entry_of_the_wrong_shape_is_recomputed(tmp_path: Path) -> None:
    cache = MaskCache(tmp_path)
    tile = make_tile(0, 0, size=32)
    cache.put(key_of(tile), random_masks(0, shape=(16, 16)))
    inner = CountingSegmenter()
    out = CachedSegmenter(inner, cache, key_of).segment([tile])
    assert inner.tiles == 1 and out[0].shape == (32, 32)


def test_key_fn_for_a_segmenters_settings(tmp_path: Path) -> None:
    settings = {
        "weights": "/w/a.pt",
        "weights_sha256": "ab" * 32,
        "device": "cpu",
        "half": False,
        "conf": 0.25,
        "iou": 0.7,
        "max_det": 1000,
        "imgsz": None,
        "min_area_px": 0,
    }
    raster = tmp_path / "r.tif"
    raster.write_bytes(b"abc")
    fn = key_fn_for(raster, settings, bands="1,2,3")
    a, b = make_tile(0, 0), make_tile(32, 0)
    assert fn(a) != fn(b) and len(fn(a)) == 64
    assert fn(a) == key_fn_for(raster, {**settings, "device": "cuda:0", "weights": "/x.pt"}, bands="1,2,3")(a)
    assert fn(a) != key_fn_for(raster, {**settings, "max_det": 300}, bands="1,2,3")(a)
    assert fn(a) != key_fn_for(raster, settings, bands="3,2,1")(a)
    seg = CachedSegmenter(CountingSegmenter(), MaskCache(tmp_path / "c"), fn)
    seg.segment([a, b])
    seg.segment([b, a])
    assert seg.inner_tiles == 2
