"""The engine of ``fastsam-geo worker``: models kept warm and the everything-mask cache.

:class:`Engine` runs the requests of :class:`fastsam_geo.worker.WorkerServer`'s job thread
(``extract``, ``warmup``, ``status``); it imports torch, the pipeline and the mask cache only
when a request needs them. :mod:`fastsam_geo.worker` re-exports every name here.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from fastsam_geo.errors import Cancelled
from fastsam_geo.worker_params import extract_params, prompts_from_json
from fastsam_geo.worker_protocol import CancelFn, ProgressFn, default_cache_dir

__all__ = ["Engine", "LazySegmenter", "SegmenterFactory", "cancelled_message"]

log = logging.getLogger("fastsam_geo.worker")


# ---------------------------------------------------------------------------- the engine
class LazySegmenter:
    """A segmenter made on first use, so that a bad raster or prompt fails before a model loads.

    >>> lazy = LazySegmenter(lambda: "a model")
    >>> lazy.loaded, lazy.inner, lazy.loaded
    (False, 'a model', True)
    """

    def __init__(self, load: Callable[[], Any]) -> None:
        self._load = load
        self._inner: Any = None

    @property
    def loaded(self) -> bool:
        return self._inner is not None

    @property
    def inner(self) -> Any:
        if self._inner is None:
            self._inner = self._load()
        return self._inner

    def segment(self, tiles: Any) -> Any:
        return self.inner.segment(tiles)

    @property
    def weights_path(self) -> Any:
        return getattr(self.inner, "weights_path", None)

    @property
    def weights_sha256(self) -> str | None:
        return getattr(self.inner, "weights_sha256", None)

    @property
    def engine(self) -> str | None:
        """The engine that runs the model (loads it)."""
        return getattr(self.inner, "engine", None)

    @property
    def gsd(self) -> float | None:
        """The model's working resolution (loads the model)."""
        return getattr(self.inner, "gsd", None)

    @property
    def conf(self) -> float | None:
        """The model's confidence threshold (loads the model)."""
        return getattr(self.inner, "conf", None)

    @property
    def fixed_shape(self) -> tuple[int, int] | None:
        """The fixed input ``(height, width)`` of an ONNX export, else None (loads the model): what
        :func:`fastsam_geo.plan.check_input_size` compares the tiles with, as for ``extract``."""
        return getattr(self.inner, "fixed_shape", None)


class _Recorded:
    """A cached segmenter that reports the weights of the model behind it (for the summary)."""

    def __init__(self, cached: Any, model: Any) -> None:
        self.cached = cached
        self.model = model

    def segment(self, tiles: Any) -> Any:
        return self.cached.segment(tiles)

    @property
    def inner_tiles(self) -> int:
        return int(self.cached.inner_tiles)

    @property
    def weights_path(self) -> Any:
        return getattr(self.model, "weights_path", None)

    @property
    def weights_sha256(self) -> str | None:
        return getattr(self.model, "weights_sha256", None)

    @property
    def engine(self) -> str | None:
        return getattr(self.model, "engine", None)

    @property
    def gsd(self) -> float | None:
        return getattr(self.model, "gsd", None)

    @property
    def conf(self) -> float | None:
        return getattr(self.model, "conf", None)

    @property
    def fixed_shape(self) -> tuple[int, int] | None:
        """The fixed input of the model behind the cache (see :attr:`LazySegmenter.fixed_shape`)."""
        return getattr(self.model, "fixed_shape", None)


SegmenterFactory = Callable[..., Any]


def _fastsam_factory(
    weights: str | None,
    device: str,
    conf: float | None,
    iou: float,
    tta: int = 1,
    tile_size: int | None = None,
    refine: bool = True,
) -> Any:
    from fastsam_geo.segment import FastSAMSegmenter
    from fastsam_geo.segmenters import resolve_model

    # engine auto, as extract: a .pt's ONNX twin runs on ONNX Runtime when installed and its
    # input takes the tiles (a twin exported for 1024 px keeps 2048 px tiles on the .pt)
    path = resolve_model(weights, "auto", tile_size).path
    return FastSAMSegmenter(path, device=device, conf=conf, iou=iou, tta=tta, refine=refine)


def _takes(fn: Callable[..., Any], name: str) -> bool:
    """Whether ``fn`` takes the keyword argument ``name`` (or any keyword).

    >>> _takes(lambda w, tile_size=None: w, "tile_size"), _takes(lambda w, tta=1: w, "tile_size")
    (True, False)
    >>> _takes(lambda w, **kw: w, "tile_size")
    True
    """
    import inspect

    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False
    return name in params or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())


def cancelled_message(done: int, total: int, output: str, cached: bool) -> str:
    """What a cancelled ``extract`` job says: the worker has no resume, a job sent again starts
    over (the tiles already segmented answered from the mask cache when it is on).

    >>> cancelled_message(3, 9, "b.gpkg", True)  # doctest: +NORMALIZE_WHITESPACE
    'cancelled after 3 of 9 tiles; nothing was written to b.gpkg; send the extract again to start it over
    (the mask cache keeps the tiles already segmented).'
    >>> cancelled_message(0, 0, "b.gpkg", False)
    'cancelled before the first tile finished; nothing was written to b.gpkg; send the extract again to start it over.'
    """
    when = f"after {done} of {total} tiles" if total else "before the first tile finished"
    again = " (the mask cache keeps the tiles already segmented)" if cached and done else ""
    return f"cancelled {when}; nothing was written to {output}; send the extract again to start it over{again}."


def resolved_bands_key(raster: str, p: Mapping[str, Any]) -> str:
    """The bands/stretch part of ``raster``'s cache keys as ``extract`` builds it: from the bands
    the request resolves to (its ``bands``, or the raster's colour interpretation), so that masks
    the CLI cached answer the panel and the other way round."""
    import rasterio

    from fastsam_geo.raster import band_layout
    from fastsam_geo.segmenters import bands_key

    with rasterio.open(raster) as ds:
        bands, _ = band_layout(ds.count, ds.colorinterp, p["bands"], ds.descriptions)
    return bands_key(bands, p["stretch"])


class Engine:
    """The worker's state: models kept warm, and the everything-mask cache.

    Segmenters are kept in a dict keyed by ``(weights, device, conf, iou, tta, file run)`` and wrapped, per
    run, in a :class:`~fastsam_geo.cache.CachedSegmenter` over one shared
    :class:`~fastsam_geo.cache.MaskCache`, so that re-prompting an area answers from the cache.

    Args:
        cache_dir: folder of the on-disk mask cache (default :func:`default_cache_dir`).
        segmenter_factory: ``factory(weights, device, conf, iou, tta=N) -> Segmenter`` (default:
            :class:`~fastsam_geo.segment.FastSAMSegmenter`); tests plug in a model-free one. A
            factory that also takes ``tile_size=`` gets the run's (see :meth:`segmenter`).
        memory_items: tiles' masks kept in memory besides the disk.
    """

    def __init__(
        self,
        cache_dir: str | os.PathLike[str] | None = None,
        segmenter_factory: SegmenterFactory | None = None,
        memory_items: int = 64,
    ) -> None:
        self.cache_dir = Path(cache_dir) if cache_dir else default_cache_dir()
        self.segmenter_factory = segmenter_factory or _fastsam_factory
        self.memory_items = memory_items
        self.segmenters: dict[tuple[str | None, str, float | None, float, int, str | None], Any] = {}
        self._files: dict[tuple[str | None, int], str] = {}
        self.text_scorers: dict[tuple[str, str | None, str], Any] = {}
        self._cache: Any = None
        self._tmp: Path | None = None
        self.runs = 0

    @property
    def cache(self) -> Any:
        """The shared :class:`~fastsam_geo.cache.MaskCache` (created on first use)."""
        if self._cache is None:
            from fastsam_geo.cache import MaskCache

            self._cache = MaskCache(self.cache_dir, memory_items=self.memory_items)
        return self._cache

    def temp_output(self, job_id: object) -> Path:
        """A fresh output path in the worker's temporary folder."""
        if self._tmp is None:
            self._tmp = Path(tempfile.mkdtemp(prefix="fastsam-geo-worker-"))
        self.runs += 1
        return self._tmp / f"buildings_{self.runs}_{job_id}.gpkg"

    def close(self) -> None:
        """Remove the temporary folder of :meth:`temp_output` (outputs the client did not name)."""
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None

    def segmenter(
        self,
        weights: str | None,
        device: str,
        conf: float | None,
        iou: float,
        tta: int = 1,
        tile_size: int | None = None,
        refine: bool = True,
    ) -> Any:
        """The warm segmenter for these settings (loaded on first use; ``conf`` None: the model's).

        ``tile_size``: the run's tiles, passed to a factory that takes it (the default one: engine
        auto then runs a ``.pt`` whose ONNX twin's fixed input is smaller than the tiles on torch,
        as ``extract`` does); the file that runs is then part of the key. ``refine`` False (raw
        outlines) is passed to a factory that takes it.
        """
        if weights:
            from fastsam_geo.weights import resolve_weights

            weights = str(resolve_weights(weights))
        takes = tile_size is not None and _takes(self.segmenter_factory, "tile_size")
        extra: dict[str, Any] = {"tile_size": tile_size} if takes else {}
        if not refine and _takes(self.segmenter_factory, "refine"):
            extra["refine"] = False
        runs = self.model_file(weights, tile_size) if takes and tile_size is not None else None
        threshold = None if conf is None else round(float(conf), 6)
        key = (weights, device, threshold, round(float(iou), 6), int(tta), runs, bool(refine))
        seg = self.segmenters.get(key)
        if seg is None:
            t0 = time.perf_counter()
            seg = self.segmenter_factory(weights, device, conf, iou, tta=tta, **extra)
            log.info(
                "loaded model %s on %s in %.1f s",
                getattr(seg, "weights_path", weights),
                device,
                time.perf_counter() - t0,
            )
            self.segmenters[key] = seg
        return seg

    def model_file(self, weights: str | None, tile_size: int) -> str:
        """The file engine auto runs for ``weights`` and ``tile_size`` px tiles (resolved once)."""
        key = (weights, tile_size)
        if key not in self._files:
            from fastsam_geo.segmenters import resolve_model

            self._files[key] = resolve_model(weights, "auto", tile_size).path
        return self._files[key]

    def text_scorer(self, model: str, weights: str | None, device: str) -> Any:
        """The warm CLIP scorer for these settings."""
        key = (model, weights, device)
        if key not in self.text_scorers:
            from fastsam_geo.textprompt import ClipScorer

            self.text_scorers[key] = ClipScorer(model, weights, device="cpu" if device == "auto" else device)
        return self.text_scorers[key]

    def cached(self, seg: Any, raster: str, p: Mapping[str, Any]) -> Any:
        """``seg`` behind the mask cache, with keys bound to ``raster`` and the model settings.

        The model behind ``seg`` is only asked for its fingerprint when the first key is made.
        """
        from fastsam_geo.cache import CachedSegmenter, cache_key, raster_stamp, tile_key_extra
        from fastsam_geo.modelmeta import DEFAULT_CONF

        stamp = raster_stamp(raster)
        fingerprint: dict[str, Any] = {}

        def key_fn(tile: Any) -> str:
            if not fingerprint:
                inner = getattr(seg, "inner", seg)
                meta = getattr(inner, "metadata", {}) or {}
                fingerprint["sha"] = getattr(inner, "weights_sha256", None) or (
                    f"{type(inner).__module__}.{type(inner).__qualname__}"
                )
                fingerprint["imgsz"] = meta.get("imgsz")
                # the threshold the model applies (a request's null means the model's own)
                confs = (getattr(inner, "conf", None), p["conf"], DEFAULT_CONF)
                fingerprint["conf"] = next(c for c in confs if c is not None)
                named = ("max_det", "min_area_px", "half", "tta", "outline")
                fingerprint["extra"] = {k: meta.get(k) for k in named if k in meta}
                fingerprint["bands"] = resolved_bands_key(raster, p)  # as extract keys them: the cache is shared
            return cache_key(
                stamp,
                tile.window,
                weights_sha256=fingerprint["sha"],
                conf=fingerprint["conf"],
                iou=p["iou"],
                imgsz=fingerprint["imgsz"],
                bands=fingerprint["bands"],
                extra={**fingerprint["extra"], **tile_key_extra(tile)},
            )

        return _Recorded(CachedSegmenter(seg, self.cache, key_fn), seg)

    def warmup(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """Load the model of ``params`` (``weights``, ``device``, ``conf``, ``iou``)."""
        p = extract_params({"raster": "-", **{k: v for k, v in params.items() if k != "raster"}})
        seg = self.segmenter(p["weights"], p["device"], p["conf"], p["iou"], p["tta"], p["tile_size"], p["refine"])
        return {
            "weights": str(getattr(seg, "weights_path", p["weights"]) or ""),
            "device": str(getattr(seg, "device", p["device"])),
        }

    def extract(
        self, job_id: object, params: Mapping[str, Any], progress: ProgressFn, cancel: CancelFn
    ) -> dict[str, Any]:
        """Run one extraction; returns the summary dict plus cache counters."""
        from fastsam_geo.pipeline import BuildingFilter, extract_buildings

        p = extract_params(params)
        raster = str(p["raster"])
        output = p["output"] or str(self.temp_output(job_id))
        prompts = prompts_from_json(p["prompts"])
        bf = p["building_filter"]  # null, true, false or an object of BuildingFilter's fields (checked)
        bfilter = BuildingFilter(**bf) if isinstance(bf, dict) else BuildingFilter(enabled=bf is not False)
        text_scorer = None
        if prompts is not None and prompts.mode == "text":
            text_scorer = self.text_scorer(p["clip_model"], p["clip_weights"], p["device"])
        if cancel():
            raise Cancelled("cancelled before it started; nothing was written.")

        def load() -> Any:
            seg = self.segmenter(p["weights"], p["device"], p["conf"], p["iou"], p["tta"], p["tile_size"], p["refine"])
            if hasattr(seg, "batch_size"):
                seg.batch_size = max(p["batch_size"], 1)
            return seg

        lazy = LazySegmenter(load)  # a bad raster is told before the model loads
        segmenter = self.cached(lazy, raster, p) if p["cache"] else lazy
        cache = self.cache if p["cache"] else None
        hits0, misses0 = (cache.hits, cache.misses) if cache is not None else (0, 0)
        seen = [0, 0]

        def tile_done(done: int, total: int) -> None:
            seen[:] = [done, total]
            progress(done, total)

        try:
            summary = extract_buildings(
                raster,
                output,
                segmenter=segmenter,
                prompts=prompts,
                tile_size=p["tile_size"],
                overlap=p["overlap"],
                bands=p["bands"],
                stretch=p["stretch"],
                gsd=p["gsd"],
                batch_size=p["batch_size"],
                conf=p["conf"],
                iou=p["iou"],
                tta=p["tta"],
                refine=bool(p["refine"]),
                building_filter=bfilter,
                text_scorer=text_scorer,
                simplify_px=p["simplify_px"],
                min_area_m2=p["min_area_m2"],
                regularize=bool(p["regularize"]),
                overwrite=bool(p["overwrite"]),
                layer=p["layer"],
                progress=tile_done,
                cancel=cancel,
                assign_crs=str(p["assign_crs"]) if p["assign_crs"] else None,
                resumable=False,  # the worker has no resume: a cancelled job leaves nothing beside the output
            )
        except Cancelled:  # the pipeline's message says run again with --resume: the worker has none
            raise Cancelled(cancelled_message(seen[0], seen[1], output, bool(p["cache"]))) from None
        result = summary.as_dict()
        result["layer"] = p["layer"]
        result["cache"] = {
            "hits": (cache.hits - hits0) if cache is not None else 0,
            "misses": (cache.misses - misses0) if cache is not None else 0,
            "model_tiles": getattr(segmenter, "inner_tiles", None),
        }
        return result

    def status(self) -> dict[str, Any]:
        """Loaded models and cache counters."""
        return {
            "models": [
                {"weights": k[0], "device": k[1], "conf": k[2], "iou": k[3], "tta": k[4]} for k in self.segmenters
            ],
            "cache_dir": str(self.cache_dir),
            "cache_hits": self._cache.hits if self._cache is not None else 0,
            "cache_misses": self._cache.misses if self._cache is not None else 0,
            "torch": sys.modules["torch"].__version__ if "torch" in sys.modules else None,
        }
