"""The wire of ``fastsam-geo worker``: message types, request checks, JSON lines in and out.

The protocol itself is described in :mod:`fastsam_geo.worker`, which re-exports every name
here. Nothing here loads a model: :func:`extract_params` and :func:`prompts_from_json` check a
request before it is queued, :func:`line_writer` and :func:`protocol_stdout` keep stdout for
protocol lines only.
"""

from __future__ import annotations

import json
import math
import os
import sys
import threading
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import IO, Any

from fastsam_geo.errors import FastSAMGeoError

__all__ = [
    "CACHE_ENV",
    "PROTOCOL",
    "ProtocolError",
    "default_cache_dir",
    "extract_params",
    "line_writer",
    "one_line",
    "prompts_from_json",
    "protocol_stdout",
    "valid_id",
]

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
        "tta",
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
    ``tta`` (12: views of each tile fused, 1, 2, 4, 8 or 12, see :mod:`fastsam_geo.tta`),
    ``prompts`` (see :func:`prompts_from_json`), ``building_filter`` (``{"enabled": true,
    "min_area_m2": 8, "max_area_m2": 20000}``), ``simplify_px`` (1.0), ``min_area_m2`` (2.0),
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
    fastsam_geo.worker_protocol.ProtocolError: unknown extract parameter(s): tile; known: ...
    """
    unknown = sorted(set(params) - _EXTRACT_KEYS)
    if unknown:
        raise ProtocolError(
            f"unknown extract parameter(s): {', '.join(unknown)}; known: {', '.join(sorted(_EXTRACT_KEYS))}"
        )
    if not params.get("raster"):
        raise ProtocolError("extract needs params.raster (the path of a GeoTIFF/COG/VRT)")
    from fastsam_geo.tta import DEFAULT_TTA, TTA_CHOICES

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
        "tta": DEFAULT_TTA,
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
    for key in ("batch_size", "tile_size", "overlap", "tta"):
        out[key] = int(out[key])
    if out["tta"] not in TTA_CHOICES:
        raise ProtocolError(f"tta={out['tta']}: use 1 (off), 2, 4, 8 or 12 views of each tile")
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


# ---------------------------------------------------------------------------- lines in and out
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
