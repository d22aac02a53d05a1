"""``fastsam-geo worker``: the engine as a JSON-lines server on stdin/stdout (for the QGIS plugin).

QGIS runs its own Python, without torch; the plugin starts this worker with a Python that has
fastsam-geo installed and talks to it one JSON object per line. The worker keeps the model and
the per-tile "everything" masks warm between requests, so a second click on the same area
answers from the mask cache instead of running the network again.

Protocol (version :data:`PROTOCOL`), one JSON object per line each way::

    -> {"id": 1, "cmd": "hello"}
    <- {"id": 1, "type": "result", "result": {"protocol": 1, "version": "0.1.0", "pid": 4242, ...}}
    -> {"id": 2, "cmd": "extract", "params": {"raster": "a.tif", "output": "b.gpkg",
        "prompts": {"points": [[500010.0, 4999990.0, 1]]}}}
    <- {"id": 2, "type": "progress", "done": 1, "total": 1}
    <- {"id": 2, "type": "result", "result": {"buildings": 1, "output": "b.gpkg", ...}}
    -> {"id": 3, "cmd": "cancel", "params": {"job": 2}}
    <- {"id": 3, "type": "result", "result": {"cancelled": false}}
    -> {"id": 4, "cmd": "shutdown"}
    <- {"id": 4, "type": "result", "result": {"bye": true}}

Errors are ``{"id": n, "type": "error", "error": "one line", "kind": "RasterError"}``; ``kind`` is
the engine's error class (:mod:`fastsam_geo.errors`), ``"Cancelled"`` for a cancelled job,
``"ProtocolError"`` for a malformed request. Commands:

``hello``
    Who the worker is (protocol, version, pid, Python, default weights); answered at once.
``status``
    Loaded models, mask cache counters, queued and running jobs.
``extract``
    :func:`fastsam_geo.pipeline.extract_buildings` with the parameters of :func:`extract_params`;
    jobs run one at a time in a job thread, in the order received, and report ``progress``
    after each tile.
``warmup``
    Load a model (same ``weights``/``device``/``conf``/``iou`` parameters as ``extract``) ahead of
    the first click.
``cancel``
    Stop job ``params.job`` (default: every queued and running job); the job answers with a
    ``Cancelled`` error and writes nothing.
``shutdown``
    Cancel everything and exit. End of input (the plugin went away) does the same.

An ``extract`` without ``output`` writes into the worker's temporary folder; that folder is
removed when the worker exits, so a client keeps such an output by copying it before then.

Only protocol lines go to stdout: everything else that writes to stdout in this process (Python
``print``, ultralytics, C libraries) is sent to stderr, and logging goes to stderr.
"""

from __future__ import annotations

import json
import logging
import math
import os
import platform
import queue
import shutil
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import click

from fastsam_geo import __version__
from fastsam_geo.errors import Cancelled, FastSAMGeoError

log = logging.getLogger("fastsam_geo.worker")

PROTOCOL = 1
"""Version of the JSON-lines protocol; bumped on incompatible changes."""

CACHE_ENV = "FASTSAM_GEO_CACHE"
"""Environment variable naming the folder of the on-disk mask cache."""

Message = dict[str, Any]
ProgressFn = Callable[[int, int], None]
CancelFn = Callable[[], bool]


class ProtocolError(FastSAMGeoError, ValueError):
    """A request is not valid JSON, or names an unknown command or parameter."""


def default_cache_dir() -> Path:
    """Where the worker keeps everything masks: ``$FASTSAM_GEO_CACHE``, else the user cache folder.

    >>> import os; old = os.environ.get("FASTSAM_GEO_CACHE")
    >>> os.environ["FASTSAM_GEO_CACHE"] = "/tmp/masks"; str(default_cache_dir())
    '/tmp/masks'
    >>> _ = os.environ.pop("FASTSAM_GEO_CACHE") if old is None else os.environ.update(FASTSAM_GEO_CACHE=old)
    """
    env = os.environ.get(CACHE_ENV, "").strip()
    if env:
        return Path(env).expanduser()
    if sys.platform == "win32":
        base = Path(os.environ.get("LOCALAPPDATA") or Path.home() / "AppData" / "Local")
    elif sys.platform == "darwin":
        base = Path.home() / "Library" / "Caches"
    else:
        base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "fastsam-geo" / "masks"


def one_line(exc: BaseException) -> str:
    """An exception as one line of text (what the plugin shows in its message bar).

    >>> one_line(ValueError("bad\\n  value"))
    'bad value'
    >>> one_line(KeyError("raster"))
    "KeyError: 'raster'"
    """
    text = " ".join(str(exc).split())
    if not text or isinstance(exc, KeyError):
        return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    return text


# ---------------------------------------------------------------------------- parameters
_EXTRACT_KEYS = frozenset(
    {
        "raster",
        "output",
        "weights",
        "device",
        "batch_size",
        "tile_size",
        "overlap",
        "bands",
        "stretch",
        "conf",
        "iou",
        "prompts",
        "building_filter",
        "simplify_px",
        "min_area_m2",
        "regularize",
        "overwrite",
        "layer",
        "clip_model",
        "clip_weights",
        "cache",
        "gsd",
        "assign_crs",
    }
)


def extract_params(params: Mapping[str, Any]) -> dict[str, Any]:
    """Check the parameters of an ``extract`` request and fill in the defaults.

    Keys: ``raster`` (required), ``output`` (default: a new file in the worker's temporary
    folder), ``weights``, ``device`` ("auto"), ``batch_size`` (1), ``tile_size`` (1024),
    ``overlap`` (128), ``bands``, ``stretch`` ("auto"), ``conf`` (null: the model's stored threshold), ``iou`` (0.7),
    ``prompts`` (see :func:`prompts_from_json`), ``building_filter`` (``{"enabled": true,
    "min_area_m2": 12, "max_area_m2": 20000}``), ``simplify_px`` (1.0), ``min_area_m2`` (2.0),
    ``regularize`` (false), ``overwrite`` (false), ``layer`` ("buildings"), ``clip_model``,
    ``clip_weights`` (text prompts), ``cache`` (true: use the mask cache), ``gsd`` (metres
    per pixel, ``"native"``, or null: the model's working resolution), ``assign_crs`` (the
    raster's CRS, e.g. "EPSG:32633", for a raster without one; null: the file's own).

    >>> p = extract_params({"raster": "a.tif", "tile_size": 512})
    >>> p["tile_size"], p["overlap"], p["device"], p["cache"]
    (512, 128, 'auto', True)
    >>> extract_params({"raster": "a.tif", "tile": 5})
    Traceback (most recent call last):
    ...
    fastsam_geo.worker.ProtocolError: unknown extract parameter(s): tile; known: ...
    """
    unknown = sorted(set(params) - _EXTRACT_KEYS)
    if unknown:
        raise ProtocolError(
            f"unknown extract parameter(s): {', '.join(unknown)}; known: {', '.join(sorted(_EXTRACT_KEYS))}"
        )
    if not params.get("raster"):
        raise ProtocolError("extract needs params.raster (the path of a GeoTIFF/COG/VRT)")
    out: dict[str, Any] = {
        "output": None,
        "weights": None,
        "device": "auto",
        "batch_size": 1,
        "tile_size": 1024,
        "overlap": 128,
        "bands": None,
        "stretch": "auto",
        "conf": None,
        "iou": 0.7,
        "prompts": None,
        "building_filter": None,
        "simplify_px": 1.0,
        "min_area_m2": 2.0,
        "regularize": False,
        "overwrite": False,
        "layer": "buildings",
        "clip_model": "ViT-B-32",
        "clip_weights": None,
        "cache": True,
        "gsd": None,
        "assign_crs": None,
    }
    out.update({k: v for k, v in params.items() if v is not None or k in ("output", "weights", "prompts")})
    for key in ("batch_size", "tile_size", "overlap"):
        out[key] = int(out[key])
    for key in ("conf", "iou", "simplify_px", "min_area_m2"):
        out[key] = None if key == "conf" and out[key] is None else float(out[key])
    out["device"] = str(out["device"] or "auto")
    out["weights"] = str(out["weights"]) if out["weights"] else None
    from fastsam_geo.modelmeta import parse_gsd

    try:
        out["gsd"] = parse_gsd(out["gsd"])
    except ValueError as exc:
        raise ProtocolError(str(exc)) from None
    return out


def prompts_from_json(spec: Mapping[str, Any] | None) -> Any:
    """A :class:`~fastsam_geo.prompts.Prompts` from its JSON form, or None for "everything".

    ``{"points": [[x, y, label], ...], "boxes": [[xmin, ymin, xmax, ymax], ...], "text": str,
    "crs": "EPSG:32633" | WKT | null (null: the raster's CRS), "text_threshold": float,
    "top_k": int}``; a point without a label is foreground (1).

    >>> p = prompts_from_json({"points": [[10, 20], [30, 40, 0]], "crs": "EPSG:3857"})
    >>> p.mode, p.points[1].label, p.crs
    ('points', 0, 'EPSG:3857')
    >>> prompts_from_json({}) is None, prompts_from_json(None) is None
    (True, True)
    """
    if not spec:
        return None
    from fastsam_geo.prompts import BoxPrompt, PointPrompt, Prompts

    unknown = set(spec) - {"points", "boxes", "text", "crs", "text_threshold", "top_k"}
    if unknown:
        raise ProtocolError(f"unknown prompt key(s): {', '.join(sorted(unknown))}")
    points = []
    for p in spec.get("points") or ():
        if len(p) not in (2, 3):
            raise ProtocolError(f"a point prompt is [x, y] or [x, y, label], got {p!r}")
        points.append(PointPrompt(float(p[0]), float(p[1]), int(p[2]) if len(p) == 3 else 1))
    boxes = []
    for b in spec.get("boxes") or ():
        if len(b) != 4:
            raise ProtocolError(f"a box prompt is [xmin, ymin, xmax, ymax], got {b!r}")
        x0, y0, x1, y1 = (float(v) for v in b)
        boxes.append(BoxPrompt(min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1)))
    kw: dict[str, Any] = {"points": points, "boxes": boxes, "text": spec.get("text") or None, "crs": spec.get("crs")}
    if spec.get("text_threshold") is not None:
        kw["text_threshold"] = float(spec["text_threshold"])
    if spec.get("top_k") is not None:  # 2.0 is 2; 2.5 or "2" are refused by Prompts, never rounded
        k = spec["top_k"]
        kw["text_top_k"] = int(k) if isinstance(k, float) and k.is_integer() else k
    prompts = Prompts(**kw)
    return None if prompts.is_empty else prompts


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


SegmenterFactory = Callable[[str | None, str, float | None, float], Any]


def _fastsam_factory(weights: str | None, device: str, conf: float | None, iou: float) -> Any:
    from fastsam_geo.segment import FastSAMSegmenter
    from fastsam_geo.segmenters import resolve_model

    # engine auto, as extract: a .pt's ONNX twin runs on ONNX Runtime when installed
    return FastSAMSegmenter(resolve_model(weights).path, device=device, conf=conf, iou=iou)


class Engine:
    """The worker's state: models kept warm, and the everything-mask cache.

    Segmenters are kept in a dict keyed by ``(weights, device, conf, iou)`` and wrapped, per
    run, in a :class:`~fastsam_geo.cache.CachedSegmenter` over one shared
    :class:`~fastsam_geo.cache.MaskCache`, so that re-prompting an area answers from the cache.

    Args:
        cache_dir: folder of the on-disk mask cache (default :func:`default_cache_dir`).
        segmenter_factory: ``factory(weights, device, conf, iou) -> Segmenter`` (default:
            :class:`~fastsam_geo.segment.FastSAMSegmenter`); tests plug in a model-free one.
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
        self.segmenters: dict[tuple[str | None, str, float | None, float], Any] = {}
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

    def segmenter(self, weights: str | None, device: str, conf: float | None, iou: float) -> Any:
        """The warm segmenter for these settings (loaded on first use; ``conf`` None: the model's)."""
        if weights:
            from fastsam_geo.weights import resolve_weights

            weights = str(resolve_weights(weights))
        key = (weights, device, None if conf is None else round(float(conf), 6), round(float(iou), 6))
        seg = self.segmenters.get(key)
        if seg is None:
            t0 = time.perf_counter()
            seg = self.segmenter_factory(weights, device, conf, iou)
            log.info(
                "loaded model %s on %s in %.1f s",
                getattr(seg, "weights_path", weights),
                device,
                time.perf_counter() - t0,
            )
            self.segmenters[key] = seg
        return seg

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
        from fastsam_geo.cache import CachedSegmenter, cache_key, raster_stamp, tile_grid
        from fastsam_geo.modelmeta import DEFAULT_CONF

        stamp = raster_stamp(raster)
        bands = f"{p['bands']}|{p['stretch']}"
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
                fingerprint["extra"] = {k: meta.get(k) for k in ("max_det", "min_area_px", "half") if k in meta}
            return cache_key(
                stamp,
                tile.window,
                weights_sha256=fingerprint["sha"],
                conf=fingerprint["conf"],
                iou=p["iou"],
                imgsz=fingerprint["imgsz"],
                bands=bands,
                extra={**fingerprint["extra"], "grid": tile_grid(tile)},
            )

        return _Recorded(CachedSegmenter(seg, self.cache, key_fn), seg)

    def warmup(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """Load the model of ``params`` (``weights``, ``device``, ``conf``, ``iou``)."""
        p = extract_params({"raster": "-", **{k: v for k, v in params.items() if k != "raster"}})
        seg = self.segmenter(p["weights"], p["device"], p["conf"], p["iou"])
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
        bf = p["building_filter"]
        if bf is None or isinstance(bf, bool):
            bfilter = BuildingFilter(enabled=bf is not False)
        else:
            bfilter = BuildingFilter(**{k: v for k, v in bf.items() if k in BuildingFilter.__dataclass_fields__})
        text_scorer = None
        if prompts is not None and prompts.mode == "text":
            text_scorer = self.text_scorer(p["clip_model"], p["clip_weights"], p["device"])
        if cancel():
            raise Cancelled("cancelled before it started; nothing was written.")

        def load() -> Any:
            seg = self.segmenter(p["weights"], p["device"], p["conf"], p["iou"])
            if hasattr(seg, "batch_size"):
                seg.batch_size = max(p["batch_size"], 1)
            return seg

        lazy = LazySegmenter(load)  # the raster and the prompts are checked before the model loads
        segmenter = self.cached(lazy, raster, p) if p["cache"] else lazy
        cache = self.cache if p["cache"] else None
        hits0, misses0 = (cache.hits, cache.misses) if cache is not None else (0, 0)
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
            building_filter=bfilter,
            text_scorer=text_scorer,
            simplify_px=p["simplify_px"],
            min_area_m2=p["min_area_m2"],
            regularize=bool(p["regularize"]),
            overwrite=bool(p["overwrite"]),
            layer=p["layer"],
            progress=progress,
            cancel=cancel,
            assign_crs=str(p["assign_crs"]) if p["assign_crs"] else None,
            resumable=False,  # the worker has no resume: a cancelled job leaves nothing beside the output
        )
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
            "models": [{"weights": k[0], "device": k[1], "conf": k[2], "iou": k[3]} for k in self.segmenters],
            "cache_dir": str(self.cache_dir),
            "cache_hits": self._cache.hits if self._cache is not None else 0,
            "cache_misses": self._cache.misses if self._cache is not None else 0,
            "torch": sys.modules["torch"].__version__ if "torch" in sys.modules else None,
        }


# ---------------------------------------------------------------------------- the server
@dataclass
class Job:
    """One queued or running request of the job thread."""

    id: Any
    cmd: str
    params: dict[str, Any]
    cancel: threading.Event = field(default_factory=threading.Event)


class WorkerServer:
    """Reads requests, answers them; long commands run one at a time in a job thread.

    Args:
        write: called with each reply (a dict); must be thread-safe (see :func:`line_writer`).
        engine: the engine (default: a new :class:`Engine`).

    The reading loop (:meth:`serve`) never blocks on a job, so a ``cancel`` is seen while a
    job runs: it sets the job's event, which the pipeline's cancel callback checks per tile.
    """

    def __init__(self, write: Callable[[Message], None], engine: Engine | None = None) -> None:
        self.write = write
        self.engine = engine or Engine()
        self.jobs: queue.Queue[Job | None] = queue.Queue()
        self.pending: dict[Any, Job] = {}
        self.current: Job | None = None
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._job_loop, name="fastsam-geo-jobs", daemon=True)
        self._thread.start()

    # -- replies
    def reply(self, rid: Any, result: Any) -> None:
        self.write({"id": rid, "type": "result", "result": result})

    def error(self, rid: Any, exc: BaseException) -> None:
        kind = type(exc).__name__
        self.write({"id": rid, "type": "error", "error": one_line(exc), "kind": kind})

    # -- the job thread
    def _job_loop(self) -> None:
        while True:
            job = self.jobs.get()
            if job is None:
                return
            with self._lock:
                self.current = job
            try:
                if job.cancel.is_set():
                    raise Cancelled("cancelled before it started; nothing was written.")
                if job.cmd == "extract":

                    def progress(done: int, total: int, rid: Any = job.id) -> None:
                        self.write({"id": rid, "type": "progress", "done": int(done), "total": int(total)})

                    result = self.engine.extract(job.id, job.params, progress, job.cancel.is_set)
                else:  # warmup
                    result = self.engine.warmup(job.params)
                self.reply(job.id, result)
            except Exception as exc:
                if not isinstance(exc, FastSAMGeoError):
                    log.error("job %s (%s) failed:\n%s", job.id, job.cmd, traceback.format_exc())
                self.error(job.id, exc)
            finally:
                with self._lock:
                    self.current = None
                    self.pending.pop(job.id, None)

    # -- the reading loop
    def handle(self, msg: Any) -> bool:
        """Answer one request; False when the server should stop (``shutdown``)."""
        rid = msg.get("id") if isinstance(msg, dict) else None
        try:
            if not valid_id(rid):
                bad, rid = rid, None  # answered with id null: the request's id cannot be written back
                raise ProtocolError(
                    f"request id {str(bad)[:50]} is not a string, a whole or finite number, or null; use e.g. 1"
                )
            if not isinstance(msg, dict) or not isinstance(msg.get("cmd"), str):
                raise ProtocolError(f"a request is an object with a 'cmd' string, got {str(msg)[:200]}")
            cmd = msg["cmd"]
            params = msg.get("params") or {}
            if not isinstance(params, dict):
                raise ProtocolError(f"params must be an object, got {type(params).__name__}")
            if cmd == "hello":
                self.reply(rid, self.hello())
            elif cmd == "status":
                with self._lock:
                    running = None if self.current is None else self.current.id
                    queued = [j for j in self.pending if j != running]
                self.reply(rid, {**self.engine.status(), "running": running, "queued": queued})
            elif cmd in ("extract", "warmup"):
                if cmd == "extract":
                    extract_params(params)  # malformed requests fail now, not in the queue
                job = Job(rid, cmd, params)
                with self._lock:
                    if rid in self.pending:
                        raise ProtocolError(f"request id {rid!r} is already in use by a queued or running job")
                    self.pending[rid] = job
                self.jobs.put(job)
            elif cmd == "cancel":
                self.reply(rid, {"cancelled": self.cancel(params.get("job"))})
            elif cmd == "shutdown":
                self.cancel(None)
                self.reply(rid, {"bye": True})
                return False
            else:
                raise ProtocolError(f"unknown command {cmd!r}; known: hello, status, extract, warmup, cancel, shutdown")
        except Exception as exc:
            self.error(rid, exc)
        return True

    def cancel(self, job_id: Any = None) -> bool:
        """Cancel job ``job_id`` (None: every job); True when something was cancelled."""
        with self._lock:
            if job_id is None:
                jobs = list(self.pending.values())
            else:
                jobs = [self.pending[job_id]] if job_id in self.pending else []
        for job in jobs:
            job.cancel.set()
        return bool(jobs)

    def hello(self) -> dict[str, Any]:
        """Who this worker is (answered without loading torch)."""
        try:
            from fastsam_geo.weights import resolve_weights

            default_weights, weights_error = str(resolve_weights(None)), None
        except FastSAMGeoError as exc:
            default_weights, weights_error = None, one_line(exc)
        return {
            "protocol": PROTOCOL,
            "version": __version__,
            "pid": os.getpid(),
            "python": sys.executable,
            "python_version": platform.python_version(),
            "platform": platform.platform(),
            "default_weights": default_weights,
            "weights_error": weights_error,
            "cache_dir": str(self.engine.cache_dir),
        }

    def serve(self, lines: Iterable[str]) -> int:
        """Answer each line of ``lines`` until ``shutdown`` or their end; returns the exit code."""
        for line in lines:
            line = line.strip()
            if not line:
                continue
            try:
                msg = json.loads(line)
            except ValueError as exc:
                self.error(None, ProtocolError(f"not JSON ({exc}): {line[:200]}"))
                continue
            if not self.handle(msg):
                break
        else:
            self.cancel(None)  # end of input: the client is gone
        self.close()
        return 0

    def close(self, timeout: float = 10.0) -> None:
        """Stop the job thread (after its current job notices the cancel), then the engine."""
        self.jobs.put(None)
        self._thread.join(timeout)
        self.engine.close()


def valid_id(rid: object) -> bool:
    """Whether a request id can be written back in a reply: a string, an integer, a finite
    number or null (JSON has no NaN or infinity; a list or an object is no id).

    >>> valid_id(1), valid_id("a"), valid_id(None), valid_id(float("nan")), valid_id([1]), valid_id(True)
    (True, True, True, False, False, False)
    """
    if rid is None or isinstance(rid, str):
        return True
    if isinstance(rid, bool) or not isinstance(rid, (int, float)):
        return False
    return math.isfinite(rid)


def line_writer(stream: IO[str]) -> Callable[[Message], None]:
    """A thread-safe writer of one JSON object per line, flushed at once. A message that is not
    valid JSON (a NaN in a result) is replaced by an error reply to the same request, so the
    worker never dies on what it writes."""
    lock = threading.Lock()

    def write(msg: Message) -> None:
        try:
            text = json.dumps(msg, default=str, allow_nan=False, separators=(",", ":"))
        except ValueError as exc:
            rid = msg.get("id") if isinstance(msg, dict) and valid_id(msg.get("id")) else None
            reply = {
                "id": rid,
                "type": "error",
                "error": f"reply cannot be written as JSON ({exc})",
                "kind": "ProtocolError",
            }
            text = json.dumps(reply, default=str, allow_nan=False, separators=(",", ":"))
        with lock:
            stream.write(text + "\n")
            stream.flush()

    return write


def protocol_stdout() -> IO[str]:
    """Keep the real stdout for the protocol and send everything else written to stdout to stderr.

    File descriptor 1 is duplicated for the protocol, then pointed at stderr, so that prints of
    Python code and of C libraries (ultralytics, torch) cannot corrupt the JSON stream.
    """
    try:
        sys.stdout.flush()
        fd = os.dup(sys.stdout.fileno())
        os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
        proto = os.fdopen(fd, "w", encoding="utf-8", newline="\n")
    except (AttributeError, OSError, ValueError):  # no real file descriptors (embedded, tests)
        proto = sys.stdout
    sys.stdout = sys.stderr
    return proto


def _stdin_lines() -> Iterable[str]:
    stream = sys.stdin.buffer if hasattr(sys.stdin, "buffer") else sys.stdin
    while True:
        raw = stream.readline()
        if not raw:
            return
        yield raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw


@click.command(short_help="Serve the engine as JSON lines on stdin/stdout (for the QGIS plugin).")
@click.option(
    "--cache-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help=f"Folder of the everything-mask cache (default: ${CACHE_ENV} or the user cache folder).",
)
def worker_command(cache_dir: Path | None) -> None:
    """Run the engine as a long-lived worker that reads JSON requests, one per line, on stdin and
    writes JSON replies (progress, results, errors) on stdout. Logs go to stderr. Used by the
    QGIS plugin; see the module documentation of fastsam_geo.worker for the protocol.

    \b
    Example:
      echo '{"id": 1, "cmd": "hello"}' | fastsam-geo worker
    """
    os.environ.setdefault("YOLO_VERBOSE", "False")
    write = line_writer(protocol_stdout())
    server = WorkerServer(write, Engine(cache_dir))
    log.info("fastsam-geo worker %s ready (pid %d, protocol %d)", __version__, os.getpid(), PROTOCOL)
    code = server.serve(_stdin_lines())
    sys.exit(code)


__all__ = [
    "PROTOCOL",
    "Engine",
    "Job",
    "ProtocolError",
    "WorkerServer",
    "default_cache_dir",
    "extract_params",
    "line_writer",
    "prompts_from_json",
    "worker_command",
]
