"""A disk cache of per-tile "everything" masks, and a segmenter that uses it.

FastSAM's prompts only select among the everything masks of a tile, so those masks are worth
keeping: re-prompting a raster (a new click, a new text) then reads them back in milliseconds
instead of running the network again.

Keys are sha256 digests of everything that decides a tile's masks (:func:`cache_key`): the
raster file (resolved path, size, modification time), the window, the weights' sha256, the
model settings, the band / stretch choice and the radiometry rules (``RADIOMETRY_RULES``).
Entries are ``np.savez_compressed`` files of :meth:`InstanceMasks.pack`, written atomically
(temporary file + ``os.replace``), so a crash never leaves a half-written entry under a real
key; an unreadable entry is a miss, not an error.
Only numpy arrays are stored (``allow_pickle=False``): a cache folder cannot run code.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import tempfile
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
from rasterio.windows import Window

from fastsam_geo.masks import InstanceMasks
from fastsam_geo.radiometry import RADIOMETRY_RULES
from fastsam_geo.segment import Segmenter
from fastsam_geo.tiling import Tile

log = logging.getLogger(__name__)

CACHE_FORMAT = 1
"""Bumped whenever the stored layout changes; entries of another format are misses."""

_KEY = re.compile(r"[0-9a-f]{64}")

RasterStamp = tuple[str, int, int]
"""``(resolved path, size in bytes, mtime in ns)`` of a raster file."""


def raster_stamp(path: str | os.PathLike[str]) -> RasterStamp:
    """What identifies a raster file's content cheaply: resolved path, size and mtime (ns).

    A path that is not a local file (``/vsicurl/...``, a URL) is kept as given, with zeros.
    """
    p = Path(path)
    try:
        st = p.stat()
    except OSError:
        return (os.fspath(path), 0, 0)
    return (str(p.resolve()), int(st.st_size), int(st.st_mtime_ns))


def cache_key(
    raster: RasterStamp | str | os.PathLike[str],
    window: Window | tuple[int, int, int, int],
    *,
    weights_sha256: str,
    conf: float,
    iou: float,
    imgsz: int | None,
    bands: str = "",
    extra: Mapping[str, object] | None = None,
) -> str:
    """The cache key (hex sha256) of one tile's everything masks.

    Args:
        raster: a :data:`RasterStamp`, or a path (then stamped with :func:`raster_stamp`).
        window: the tile's window, or ``(col_off, row_off, width, height)``.
        weights_sha256: sha256 of the weights file (``FastSAMSegmenter.weights_sha256``).
        conf, iou, imgsz: the model settings that change the masks.
        bands: the band selection and stretch, as a string (e.g. ``"1,2,3|p2-98 global"``).
        extra: anything else that changes the masks (``max_det``, ``min_area_px``...), JSON-able.

    Pure for a :data:`RasterStamp`: the same inputs always give the same key.

    >>> stamp = ("/data/ortho.tif", 1000, 17)
    >>> k = cache_key(stamp, (0, 0, 1024, 1024), weights_sha256="ab", conf=0.25, iou=0.7, imgsz=None)
    >>> len(k), k == cache_key(stamp, Window(0, 0, 1024, 1024), weights_sha256="ab", conf=0.25,
    ...                        iou=0.7, imgsz=None)
    (64, True)
    >>> k == cache_key(stamp, (896, 0, 1024, 1024), weights_sha256="ab", conf=0.25, iou=0.7, imgsz=None)
    False
    """
    stamp = raster if isinstance(raster, tuple) else raster_stamp(raster)
    w = window
    win = (w.col_off, w.row_off, w.width, w.height) if isinstance(w, Window) else tuple(w)
    record = {
        "format": CACHE_FORMAT,
        "radiometry": RADIOMETRY_RULES,
        "raster": [str(stamp[0]), int(stamp[1]), int(stamp[2])],
        "window": [int(round(float(v))) for v in win],
        "weights_sha256": str(weights_sha256),
        "conf": float(conf),
        "iou": float(iou),
        "imgsz": None if imgsz is None else int(imgsz),
        "bands": str(bands),
        "extra": {str(k): v for k, v in sorted((extra or {}).items())},
    }
    blob = json.dumps(record, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def key_fn_for(
    raster: RasterStamp | str | os.PathLike[str], settings: Mapping[str, object], bands: str = ""
) -> Callable[[Tile], str]:
    """A ``key_fn`` for :class:`CachedSegmenter`: tiles of ``raster`` segmented with ``settings``.

    ``settings`` is a segmenter's ``metadata`` (``FastSAMSegmenter.metadata``): its
    ``weights_sha256``, ``conf``, ``iou`` and ``imgsz`` go into the key, and so does everything
    else except the weights' path and the device (``max_det``, ``min_area_px``, ``half``...),
    and the pixel size of the tile's grid (:func:`tile_grid`): a window of a working grid
    at another ground resolution holds other pixels. The raster is stamped once, here.

    >>> fn = key_fn_for(("/d/a.tif", 1, 2), {"weights_sha256": "ab", "conf": 0.25, "iou": 0.7,
    ...                                      "imgsz": None, "max_det": 1000, "device": "cpu"})
    >>> from affine import Affine
    >>> tile = Tile(np.zeros((8, 8, 3), np.uint8), Window(0, 0, 8, 8), Affine.identity(), None,
    ...             Window(0, 0, 8, 8))
    >>> fn(tile) == cache_key(("/d/a.tif", 1, 2), (0, 0, 8, 8), weights_sha256="ab", conf=0.25,
    ...                       iou=0.7, imgsz=None, extra={"max_det": 1000, "grid": [1.0, 1.0]})
    True
    """
    stamp = raster if isinstance(raster, tuple) else raster_stamp(raster)
    known = {"weights_sha256", "conf", "iou", "imgsz", "weights", "device"}
    extra = {k: v for k, v in settings.items() if k not in known}
    sha = str(settings["weights_sha256"])
    conf, iou = float(settings["conf"]), float(settings["iou"])  # type: ignore[arg-type]
    imgsz = settings.get("imgsz")

    def key_fn(tile: Tile) -> str:
        return cache_key(
            stamp,
            tile.window,
            weights_sha256=sha,
            conf=conf,
            iou=iou,
            imgsz=imgsz,
            bands=bands,
            extra={**extra, **tile_key_extra(tile)},
        )

    return key_fn


def tile_key_extra(tile: Tile) -> dict[str, object]:
    """What a tile adds to its cache key: its grid's pixel size (:func:`tile_grid`) and, for a
    tile narrower than its grid's tiles, the size it is padded to (``tile.pad_to``): the same
    window of a smaller raster run with another ``--tile-size`` is another picture to the model.

    >>> from affine import Affine
    >>> t = Tile(np.zeros((2, 2, 3), np.uint8), Window(0, 0, 2, 2), Affine(0.3, 0, 5, 0, -0.3, 9), None,
    ...          Window(0, 0, 2, 2), pad_to=1024)
    >>> tile_key_extra(t)
    {'grid': [0.3, 0.3], 'pad_to': 1024}
    """
    return {"grid": tile_grid(tile), **({"pad_to": tile.pad_to} if tile.pad_to else {})}


def tile_grid(tile: Tile) -> list[float]:
    """The pixel size (x, y, map units) of the grid a tile was read on: part of its cache key.

    The grid of a raster read at a working resolution has the raster's bounds and this pixel
    size, so with the raster's stamp and the window it names the tile's pixels.

    >>> from affine import Affine
    >>> tile_grid(Tile(np.zeros((2, 2, 3), np.uint8), Window(0, 0, 2, 2), Affine(0.3, 0, 5, 0, -0.3, 9), None,
    ...                Window(0, 0, 2, 2)))
    [0.3, 0.3]
    """
    t = tile.transform
    return [round(abs(float(t.a)), 12), round(abs(float(t.e)), 12)]


def probe_cache_dir(folder: str | os.PathLike[str]) -> str | None:
    """None when ``folder`` can hold cache entries (created if needed), else why not.

    >>> import tempfile
    >>> probe_cache_dir(tempfile.mkdtemp()) is None
    True
    """
    p = Path(folder)
    try:
        p.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=p, prefix=".probe.", suffix=".tmp"):
            pass
    except OSError as exc:
        return f"{exc.strerror or exc}".lower()
    return None


class MaskCache:
    """Everything masks on disk (``folder/ab/abcdef....npz``) behind an in-memory LRU.

    Args:
        folder: where the entries live (created on the first :meth:`put`).
        memory_items: how many tiles' masks the in-memory layer keeps (0 disables it).

    Masks returned by :meth:`get` may be shared with the memory layer: treat them as read-only.
    """

    def __init__(self, folder: str | os.PathLike[str], memory_items: int = 64) -> None:
        self.folder = Path(folder)
        self.memory_items = max(int(memory_items), 0)
        self._memory: OrderedDict[str, InstanceMasks] = OrderedDict()
        self.hits = 0
        self.misses = 0
        self.broken = False

    def path(self, key: str) -> Path:
        """The file of ``key`` (which must be a 64-digit lowercase hex digest)."""
        if not isinstance(key, str) or not _KEY.fullmatch(key):
            raise ValueError(f"cache key must be a 64-digit lowercase hex sha256, got {key!r}")
        return self.folder / key[:2] / f"{key}.npz"

    def _remember(self, key: str, masks: InstanceMasks) -> None:
        if not self.memory_items:
            return
        self._memory[key] = masks
        self._memory.move_to_end(key)
        while len(self._memory) > self.memory_items:
            self._memory.popitem(last=False)

    def get(self, key: str) -> InstanceMasks | None:
        """The masks stored under ``key``, or None (absent, unreadable, or of another format)."""
        path = self.path(key)
        if key in self._memory:
            self._memory.move_to_end(key)
            self.hits += 1
            return self._memory[key]
        try:
            with np.load(path, allow_pickle=False) as data:
                arrays = {name: data[name] for name in data.files}
            if int(arrays.pop("cache_format", -1)) != CACHE_FORMAT:
                raise ValueError("stored by another cache format")
            masks = InstanceMasks.unpack(arrays)
        except FileNotFoundError:
            self.misses += 1
            return None
        except Exception as e:  # a corrupt or foreign file is a miss; the next put overwrites it
            log.warning("ignoring unreadable mask cache entry %s (%s: %s)", path, type(e).__name__, e)
            self.misses += 1
            return None
        self.hits += 1
        self._remember(key, masks)
        return masks

    def put(self, key: str, masks: InstanceMasks) -> Path:
        """Store ``masks`` under ``key`` (atomically: readers see the old entry or the new one)."""
        path = self.path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        arrays = masks.pack()
        arrays["cache_format"] = np.asarray(CACHE_FORMAT, np.int64)
        fd, tmp = tempfile.mkstemp(prefix=f".{key[:16]}.", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as f:
                np.savez_compressed(f, **arrays)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        self._remember(key, masks)
        return path

    def try_put(self, key: str, masks: InstanceMasks) -> Path | None:
        """:meth:`put`, but a cache that cannot be written (full disk, read-only folder) is
        reported once and then left alone: an optional cache never fails a run."""
        try:
            return self.put(key, masks)
        except OSError as exc:
            self.broken = True
            log.warning(
                "Warning: mask cache %s cannot be written (%s); going on without it.",
                self.folder,
                exc.strerror or exc,
            )
            return None

    def __contains__(self, key: str) -> bool:
        return key in self._memory or self.path(key).is_file()


class CachedSegmenter:
    """A :class:`~fastsam_geo.segment.Segmenter` that asks ``segmenter`` only for tiles not in ``cache``.

    Args:
        segmenter: the inner segmenter (e.g. a ``FastSAMSegmenter``).
        cache: where masks are kept.
        key_fn: the cache key of a tile (see :func:`cache_key`), or None to never cache that tile.

    Misses are sent to the inner segmenter in one call (it batches them itself); hits never
    reach it. ``inner_tiles`` counts the tiles the inner segmenter was asked for.
    """

    def __init__(self, segmenter: Segmenter, cache: MaskCache, key_fn: Callable[[Tile], str | None]) -> None:
        self.segmenter = segmenter
        self.cache = cache
        self.key_fn = key_fn
        self.inner_tiles = 0

    def segment(self, tiles: Sequence[Tile]) -> list[InstanceMasks]:
        """One :class:`InstanceMasks` per tile, in the order of ``tiles``."""
        keys = [self.key_fn(t) for t in tiles]
        out: list[InstanceMasks | None] = []
        for tile, key in zip(tiles, keys, strict=True):
            masks = None if key is None else self.cache.get(key)
            if masks is not None and masks.shape != tile.shape:  # a stale or colliding entry: recompute
                masks = None
            out.append(masks)
        todo = [i for i, m in enumerate(out) if m is None]
        if todo:
            fresh = self.segmenter.segment([tiles[i] for i in todo])
            if len(fresh) != len(todo):
                name = type(self.segmenter).__name__
                raise RuntimeError(f"{name}.segment returned {len(fresh)} results for {len(todo)} tiles")
            self.inner_tiles += len(todo)
            for i, masks in zip(todo, fresh, strict=True):
                key = keys[i]
                if key is not None and not self.cache.broken:
                    self.cache.try_put(key, masks)
                out[i] = masks
        return [m for m in out if m is not None]
