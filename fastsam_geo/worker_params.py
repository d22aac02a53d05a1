"""The checks of the worker's requests: each field's JSON type, ``extract``'s ranges, prompts.

A value of another JSON type than its field takes (``"false"`` for true/false, ``1.9`` or
``true`` for a whole number, a misspelt key of an object) is refused in one line that names
the field, what was given and what is expected (:class:`~fastsam_geo.worker_protocol.ProtocolError`),
never read loosely; the ranges are those of ``extract`` (:mod:`fastsam_geo.validate`). Numbers
in messages are shown %g-style. :mod:`fastsam_geo.worker` re-exports the public names.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Iterable, Mapping
from functools import partial
from typing import Any

from fastsam_geo.worker_protocol import ProtocolError, valid_id

__all__ = ["cancel_job", "extract_params", "prompts_from_json"]


# ---------------------------------------------------------------------------- typed fields
_MAX_INT = 2**53  # JSON integers beyond this are not exact in most clients (and no option takes one)


def _shown(value: object, limit: int = 60) -> str:
    """A JSON value as an error message shows it: as JSON, numbers %g-style, cut to ``limit`` characters.

    >>> _shown("false"), _shown(True), _shown(None), _shown(2048), _shown(1.0), _shown(1e308), _shown(-(10**400))
    ('"false"', 'true', 'null', '2048', '1.0', '1e+308', '-1e+400')
    >>> _shown(float("nan")), _shown([1.5, "a"]), _shown({"min_area": 500}), _shown(0.1 + 0.2)
    ('NaN', '[1.5, "a"]', '{"min_area": 500}', '0.3')
    >>> _shown(list(range(100)))
    '[0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16...'
    """
    if isinstance(value, bool) or value is None or isinstance(value, str):
        text = json.dumps(value, ensure_ascii=False)
    elif isinstance(value, int):
        digits = str(abs(value))
        if len(digits) > 15:  # %g of an integer too large for a float
            mantissa = f"{digits[0]}.{digits[1:6]}".rstrip("0").rstrip(".")
            digits = f"{mantissa}e+{len(digits) - 1}"
        text = ("-" if value < 0 else "") + digits
    elif isinstance(value, float):
        if not math.isfinite(value):
            text = "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
        else:
            text = repr(value) if len(repr(value)) <= 12 else f"{value:.6g}"
    elif isinstance(value, (list, tuple)):
        text = "[" + ", ".join(_shown(v, limit) for v in value[:limit]) + "]"
    elif isinstance(value, Mapping):
        items = list(value.items())[:limit]
        text = "{" + ", ".join(f"{json.dumps(str(k))}: {_shown(v, limit)}" for k, v in items) + "}"
    else:
        text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _want(name: str, value: object, expected: str) -> ProtocolError:
    """The error of a field whose JSON value is not of the kind the protocol takes.

    >>> print(_want("params.overwrite", "false", "true or false"))
    params.overwrite: expected true or false, got "false"
    """
    return ProtocolError(f"{name}: expected {expected}, got {_shown(value)}")


def _bool(name: str, value: object) -> bool:
    """A JSON ``true`` or ``false``; a string ``"false"`` or a 0 is refused, never read as truthy.

    >>> _bool("params.cache", False)
    False
    >>> _bool("params.overwrite", "false")
    Traceback (most recent call last):
    ...
    fastsam_geo.worker_protocol.ProtocolError: params.overwrite: expected true or false, got "false"
    """
    if not isinstance(value, bool):
        raise _want(name, value, "true or false")
    return value


def _int(name: str, value: object, example: int) -> int:
    """A JSON whole number: not ``true``, not ``1.9`` (never rounded), at most 2**53 either way.

    >>> _int("params.tile_size", 512, 1024)
    512
    >>> _int("params.tta", 1.9, 12)
    Traceback (most recent call last):
    ...
    fastsam_geo.worker_protocol.ProtocolError: params.tta: expected a whole number (e.g. 12), got 1.9
    """
    if isinstance(value, bool) or not isinstance(value, int) or abs(value) > _MAX_INT:
        raise _want(name, value, f"a whole number (e.g. {example})")
    return value


def _number(name: str, value: object, example: float) -> float:
    """A finite JSON number, as a float: not ``true``, not a string, not NaN or infinity (JSON has
    neither, but Python's reader takes ``NaN`` and turns ``1e400`` into infinity).

    >>> _number("params.conf", 1, 0.25)
    1.0
    >>> _number("params.min_area_m2", 1e400, 2)
    Traceback (most recent call last):
    ...
    fastsam_geo.worker_protocol.ProtocolError: params.min_area_m2: expected a finite number (e.g. 2), got Infinity
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _want(name, value, f"a number (e.g. {example})")
    try:
        number = float(value)
    except OverflowError:  # an integer of hundreds of digits
        number = math.inf
    if not math.isfinite(number):
        raise _want(name, value, f"a finite number (e.g. {example})")
    return number


def _text(name: str, value: object, example: str) -> str:
    """A JSON string.

    >>> _text("params.layer", 5, '"buildings"')
    Traceback (most recent call last):
    ...
    fastsam_geo.worker_protocol.ProtocolError: params.layer: expected a string (e.g. "buildings"), got 5
    """
    if not isinstance(value, str):
        raise _want(name, value, f"a string (e.g. {example})")
    return value


def _object(name: str, value: object, known: Iterable[str], expected: str) -> Mapping[str, Any]:
    """A JSON object whose keys are all ``known`` (a misspelt key is refused, never dropped).

    >>> _object("params.building_filter", {"min_area": 500}, ("enabled", "min_area_m2"), "an object")
    Traceback (most recent call last):
    ...
    fastsam_geo.worker_protocol.ProtocolError: params.building_filter: unknown key(s) min_area; \
known: enabled, min_area_m2
    """
    if not isinstance(value, Mapping):
        raise _want(name, value, expected)
    names = sorted(known)
    unknown = sorted(k if isinstance(k, str) else _shown(k) for k in value if k not in names)
    if unknown:
        raise ProtocolError(f"{name}: unknown key(s) {', '.join(unknown)}; known: {', '.join(names)}")
    return value


def _list(name: str, value: object, expected: str) -> list[Any]:
    """A JSON array (null: empty).

    >>> _list("params.prompts.points", None, "a list"), _list("params.bands", [4, 3, 2], "a list")
    ([], [4, 3, 2])
    """
    if value is None:
        return []
    if not isinstance(value, list):
        raise _want(name, value, expected)
    return value


# ---------------------------------------------------------------------------- parameters
_FILTER_NUMBERS = {"min_area_m2": 8.0, "max_area_m2": 20000.0, "min_rectangularity": 0.55, "nms_iou": 0.7}
"""The numbers of :class:`~fastsam_geo.plan.BuildingFilter` and their defaults (examples in messages)."""

_CLI_FIELDS = {
    "--tile-size": "params.tile_size",
    "--overlap": "params.overlap",
    "--conf": "params.conf",
    "--iou": "params.iou",
    "--tta": "params.tta",
    "--batch-size": "params.batch_size",
    "--device": "params.device",
    "--simplify": "params.simplify_px",
    "--min-area": "params.building_filter.min_area_m2",
    "--max-area": "params.building_filter.max_area_m2",
}
"""``extract``'s options as the fields of an ``extract`` request (for the messages of validate)."""


def _field_names(message: str) -> str:
    """A message of :mod:`fastsam_geo.validate` with the CLI's option names as the request's fields.

    >>> _field_names("--overlap 128: use 0 to 127 px with --tile-size 256 (less than half a tile).")
    'params.overlap 128: use 0 to 127 px with params.tile_size 256 (less than half a tile).'
    """
    return re.sub(r"--[a-z][a-z-]*", lambda m: _CLI_FIELDS.get(m.group(0), m.group(0)), message)


def _building_filter(name: str, value: object) -> bool | dict[str, Any]:
    """``building_filter``: true or false (the default filter, or none), or an object of
    :class:`~fastsam_geo.plan.BuildingFilter`'s fields.

    >>> _building_filter("params.building_filter", {"enabled": False, "min_area_m2": 12})
    {'enabled': False, 'min_area_m2': 12.0}
    >>> _building_filter("params.building_filter", {"enabled": "false"})
    Traceback (most recent call last):
    ...
    fastsam_geo.worker_protocol.ProtocolError: params.building_filter.enabled: expected true or false, got "false"
    """
    if isinstance(value, bool):
        return value
    expected = 'true, false or an object such as {"enabled": true, "min_area_m2": 8}'
    spec = _object(name, value, ("enabled", *_FILTER_NUMBERS), expected)
    out: dict[str, Any] = {}
    for key, v in spec.items():
        if v is not None:
            out[key] = (
                _bool(f"{name}.{key}", v) if key == "enabled" else _number(f"{name}.{key}", v, _FILTER_NUMBERS[key])
            )
    return out


def _bands(name: str, value: object) -> list[int]:
    """``bands``: 1 or 3 band numbers from 1, as ``extract --bands`` takes them (a list here).

    >>> _bands("params.bands", [4, 3, 2])
    [4, 3, 2]
    >>> _bands("params.bands", "9,9,9")
    Traceback (most recent call last):
    ...
    fastsam_geo.worker_protocol.ProtocolError: params.bands: expected a list of 1 or 3 band numbers from 1 \
(e.g. [4, 3, 2]), got "9,9,9"
    """
    ok = isinstance(value, list) and len(value) in (1, 3)
    if not ok or not all(not isinstance(b, bool) and isinstance(b, int) and 1 <= b <= _MAX_INT for b in value):  # type: ignore[union-attr]
        raise _want(name, value, "a list of 1 or 3 band numbers from 1 (e.g. [4, 3, 2])")
    return list(value)  # type: ignore[arg-type]


def _stretch(name: str, value: object) -> str:
    """``stretch``: one of the modes ``extract --stretch`` takes.

    >>> _stretch("params.stretch", "none")
    'none'
    >>> _stretch("params.stretch", "bogus")
    Traceback (most recent call last):
    ...
    fastsam_geo.worker_protocol.ProtocolError: params.stretch: expected one of "auto", "none", "percentile", got "bogus"
    """
    from typing import get_args

    from fastsam_geo.radiometry import StretchMode

    modes = get_args(StretchMode)
    if value not in modes:
        raise _want(name, value, "one of " + ", ".join(f'"{m}"' for m in modes))
    return str(value)


def _gsd(name: str, value: object) -> float | str | None:
    """``gsd``: metres per pixel or ``"native"`` (a number as a string is no number here).

    >>> _gsd("params.gsd", 0.3), _gsd("params.gsd", "Native")
    (0.3, 'native')
    >>> _gsd("params.gsd", True)
    Traceback (most recent call last):
    ...
    fastsam_geo.worker_protocol.ProtocolError: params.gsd: true is not a ground resolution: give metres per pixel \
(e.g. 0.3) or "native".
    """
    from fastsam_geo.modelmeta import parse_gsd

    ok = isinstance(value, str) and value.strip().lower() == "native"
    ok = ok or (isinstance(value, (int, float)) and not isinstance(value, bool))
    try:
        if ok:
            return parse_gsd(value)  # type: ignore[arg-type]
    except (ValueError, OverflowError):
        pass
    raise ProtocolError(
        f'{name}: {_shown(value)} is not a ground resolution: give metres per pixel (e.g. 0.3) or "native".'
    )


def _is_str(value: object) -> bool:
    """Whether ``value`` is a string.

    >>> _is_str("a"), _is_str(1)
    (True, False)
    """
    return isinstance(value, str)


def _prompts_spec(name: str, value: object) -> Any:
    """``prompts``, checked by building them (:func:`prompts_from_json`), kept as JSON.

    >>> _prompts_spec("params.prompts", {"points": [[1, 2]]})
    {'points': [[1, 2]]}
    """
    prompts_from_json(value, name)  # type: ignore[arg-type]
    return value


_EXTRACT_READERS: dict[str, Callable[[str, Any], Any]] = {
    "raster": partial(_text, example='"ortho.tif"'),
    "output": partial(_text, example='"buildings.gpkg"'),
    "weights": partial(_text, example='"fastsam-geo-n.onnx"'),
    "device": partial(_text, example='"cpu"'),
    "batch_size": partial(_int, example=1),
    "tile_size": partial(_int, example=1024),
    "overlap": partial(_int, example=128),
    "bands": _bands,
    "stretch": _stretch,
    "conf": partial(_number, example=0.25),
    "iou": partial(_number, example=0.7),
    "tta": partial(_int, example=12),
    "refine": _bool,
    "prompts": _prompts_spec,
    "building_filter": _building_filter,
    "simplify_px": partial(_number, example=1.0),
    "min_area_m2": partial(_number, example=2.0),
    "regularize": _bool,
    "overwrite": _bool,
    "layer": partial(_text, example='"buildings"'),
    "clip_model": partial(_text, example='"ViT-B-32"'),
    "clip_weights": partial(_text, example='"clip.pt"'),
    "cache": _bool,
    "gsd": _gsd,
    "assign_crs": partial(_text, example='"EPSG:32633"'),
}
"""How each field of an ``extract`` request is read: the JSON type it must have (null: the default)."""

_EXTRACT_KEYS = frozenset(_EXTRACT_READERS)

_EXTRACT_DEFAULTS: dict[str, Any] = {
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
    "refine": True,
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


def extract_params(params: Mapping[str, Any]) -> dict[str, Any]:
    """Check the parameters of an ``extract`` request and fill in the defaults.

    Keys: ``raster`` (required), ``output`` (default: a new file in the worker's temporary
    folder), ``weights``, ``device`` ("auto"), ``batch_size`` (1), ``tile_size`` (1024),
    ``overlap`` (128), ``bands`` (band numbers read as RGB, e.g. [4, 3, 2]), ``stretch``
    ("auto"), ``conf`` (null: the model's stored threshold), ``iou`` (0.7),
    ``tta`` (12: views of each tile fused, 1, 2, 4, 8 or 12, see :mod:`fastsam_geo.tta`),
    ``refine`` (true: outlines snapped to the image's edges, :mod:`fastsam_geo.refine`),
    ``prompts`` (see :func:`prompts_from_json`), ``building_filter`` (``{"enabled": true,
    "min_area_m2": 8, "max_area_m2": 20000}``), ``simplify_px`` (1.0), ``min_area_m2`` (2.0),
    ``regularize`` (false), ``overwrite`` (false), ``layer`` ("buildings"), ``clip_model``,
    ``clip_weights`` (text prompts), ``cache`` (true: use the mask cache), ``gsd`` (metres
    per pixel, ``"native"``, or null: the model's working resolution), ``assign_crs`` (the
    raster's CRS, e.g. "EPSG:32633", for a raster without one; null: the file's own).

    Each value must have its JSON type (true/false, a whole number, a finite number, a string,
    an object without unknown keys; null: the default): ``"false"``, ``1.9`` or ``true`` for a
    number are refused naming the field (:class:`ProtocolError`), never read loosely. The ranges
    are ``extract``'s (:func:`fastsam_geo.validate.check_extract_options`, an ``OptionError``).

    >>> p = extract_params({"raster": "a.tif", "tile_size": 512})
    >>> p["tile_size"], p["overlap"], p["device"], p["cache"]
    (512, 128, 'auto', True)
    >>> extract_params({"raster": "a.tif", "tile": 5})
    Traceback (most recent call last):
    ...
    fastsam_geo.worker_protocol.ProtocolError: unknown extract parameter(s): tile; known: ...
    >>> extract_params({"raster": "a.tif", "overwrite": "false"})
    Traceback (most recent call last):
    ...
    fastsam_geo.worker_protocol.ProtocolError: params.overwrite: expected true or false, got "false"
    """
    unknown = sorted(set(params) - _EXTRACT_KEYS)
    if unknown:
        raise ProtocolError(
            f"unknown extract parameter(s): {', '.join(unknown)}; known: {', '.join(sorted(_EXTRACT_KEYS))}"
        )
    if params.get("raster") in (None, ""):
        raise ProtocolError("extract needs params.raster (the path of a GeoTIFF/COG/VRT)")
    from fastsam_geo.tta import DEFAULT_TTA

    out: dict[str, Any] = {**_EXTRACT_DEFAULTS, "tta": DEFAULT_TTA}
    for key, value in params.items():
        if value is not None:
            out[key] = _EXTRACT_READERS[key](f"params.{key}", value)
    out["device"] = out["device"] or "auto"
    out["weights"] = out["weights"] or None
    _check_ranges(out)
    return out


def _check_ranges(p: Mapping[str, Any]) -> None:
    """The ranges ``extract`` puts on the same values (:func:`~fastsam_geo.validate.check_extract_options`,
    the building filter's when it is on), named as the request's fields; ``min_area_m2`` >= 0.

    >>> _check_ranges(extract_params({"raster": "a.tif"}))
    >>> _check_ranges({**extract_params({"raster": "a.tif"}), "tile_size": 32})
    Traceback (most recent call last):
    ...
    fastsam_geo.errors.OptionError: params.tile_size 32: use at least 64 px (FastSAM's default is 1024).
    """
    from fastsam_geo.errors import OptionError
    from fastsam_geo.validate import check_extract_options, check_unit

    bf = p["building_filter"]
    spec = bf if isinstance(bf, dict) else {"enabled": bf is not False}
    filt = {**_FILTER_NUMBERS, **spec}
    on = bool(filt.get("enabled", True))
    try:
        check_extract_options(
            tile_size=p["tile_size"],
            overlap=p["overlap"],
            conf=p["conf"],
            iou=p["iou"],
            batch_size=p["batch_size"],
            device=p["device"],
            simplify_px=p["simplify_px"],
            min_area_m2=filt["min_area_m2"] if on else None,
            max_area_m2=filt["max_area_m2"] if on else None,
            tta=p["tta"],
        )
        if on:
            check_unit(filt["min_rectangularity"], "params.building_filter.min_rectangularity", 0.55)
            check_unit(filt["nms_iou"], "params.building_filter.nms_iou", 0.7)
    except OptionError as exc:
        raise OptionError(_field_names(str(exc))) from None
    if p["min_area_m2"] < 0:
        raise OptionError(f"params.min_area_m2 {p['min_area_m2']:g}: use an area of 0 m² or more (default 2).")


_PROMPT_KEYS = ("points", "boxes", "text", "crs", "text_threshold", "top_k")


def _real(name: str, value: object, example: str) -> float:
    """A JSON number as a float, infinite when too large (the prompt classes refuse what is not finite).

    >>> _real("x", 10**400, "1.5"), _real("x", 2, "1.5")
    (inf, 2.0)
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _want(name, value, f"a number (e.g. {example})")
    try:
        return float(value)
    except OverflowError:
        return math.inf if value > 0 else -math.inf


def _point(name: str, value: object) -> tuple[float, float, int]:
    """A point prompt ``[x, y]`` or ``[x, y, label]`` (label 1: building, the default; 0: background).

    >>> _point("p", [1, 2]), _point("p", [1, 2.5, 0])
    ((1.0, 2.0, 1), (1.0, 2.5, 0))
    >>> _point("params.prompts.points[0]", [1, 2, "a"])
    Traceback (most recent call last):
    ...
    fastsam_geo.worker_protocol.ProtocolError: params.prompts.points[0][2]: expected 0 (background) \
or 1 (building), got "a"
    """
    if not isinstance(value, list) or len(value) not in (2, 3):
        raise _want(name, value, "[x, y] or [x, y, label]")
    x, y = (_real(f"{name}[{i}]", v, "500120.5") for i, v in enumerate(value[:2]))
    label = value[2] if len(value) == 3 else 1
    if isinstance(label, bool) or not isinstance(label, int):
        raise _want(f"{name}[2]", label, "0 (background) or 1 (building)")
    return x, y, label


def _box(name: str, value: object) -> tuple[float, float, float, float]:
    """A box prompt ``[xmin, ymin, xmax, ymax]`` (corners in any order).

    >>> _box("b", [5, 6, 1, 2])
    (1.0, 2.0, 5.0, 6.0)
    """
    if not isinstance(value, list) or len(value) != 4:
        raise _want(name, value, "[xmin, ymin, xmax, ymax]")
    x0, y0, x1, y1 = (_real(f"{name}[{i}]", v, "500120.5") for i, v in enumerate(value))
    return min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1)


def prompts_from_json(spec: Mapping[str, Any] | None, name: str = "params.prompts") -> Any:
    """A :class:`~fastsam_geo.prompts.Prompts` from its JSON form, or None for "everything".

    ``{"points": [[x, y, label], ...], "boxes": [[xmin, ymin, xmax, ymax], ...], "text": str,
    "crs": "EPSG:32633" | WKT | null (null: the raster's CRS), "text_threshold": float,
    "top_k": int}``; a point without a label is foreground (1). A value of another JSON type is
    a :class:`ProtocolError` naming it (``name``: the field's name); values out of range (a
    label 5, NaN coordinates) are the prompt classes' :class:`~fastsam_geo.errors.PromptError`.

    >>> p = prompts_from_json({"points": [[10, 20], [30, 40, 0]], "crs": "EPSG:3857"})
    >>> p.mode, p.points[1].label, p.crs
    ('points', 0, 'EPSG:3857')
    >>> prompts_from_json({}) is None, prompts_from_json(None) is None
    (True, True)
    >>> prompts_from_json({"points": 5})
    Traceback (most recent call last):
    ...
    fastsam_geo.worker_protocol.ProtocolError: params.prompts.points: expected a list of [x, y, label], got 5
    """
    if spec is None:
        return None
    spec = _object(name, spec, _PROMPT_KEYS, 'an object such as {"points": [[x, y, 1]]}')
    if not spec:
        return None
    from fastsam_geo.prompts import BoxPrompt, PointPrompt, Prompts

    points = _list(f"{name}.points", spec.get("points"), "a list of [x, y, label]")
    boxes = _list(f"{name}.boxes", spec.get("boxes"), "a list of [xmin, ymin, xmax, ymax]")
    kw: dict[str, Any] = {
        "points": [PointPrompt(*_point(f"{name}.points[{i}]", p)) for i, p in enumerate(points)],
        "boxes": [BoxPrompt(*_box(f"{name}.boxes[{i}]", b)) for i, b in enumerate(boxes)],
        "text": spec.get("text") or None,
        "crs": None if spec.get("crs") is None else _text(f"{name}.crs", spec["crs"], '"EPSG:4326"'),
    }
    text = kw["text"]
    if text is not None and not (isinstance(text, str) or (isinstance(text, list) and all(map(_is_str, text)))):
        raise _want(f"{name}.text", text, 'a string (e.g. "building") or a list of strings')
    if spec.get("text_threshold") is not None:
        kw["text_threshold"] = _real(f"{name}.text_threshold", spec["text_threshold"], "0.22")
    if spec.get("top_k") is not None:  # 2.0 is 2; 2.5 is refused by Prompts, never rounded
        k = spec["top_k"]
        if isinstance(k, bool) or not isinstance(k, (int, float)):
            raise _want(f"{name}.top_k", k, "a whole number (e.g. 3)")
        kw["text_top_k"] = int(k) if isinstance(k, float) and k.is_integer() else k
    prompts = Prompts(**kw)
    return None if prompts.is_empty else prompts


# ---------------------------------------------------------------------------- cancel
def cancel_job(params: Mapping[str, Any]) -> Any:
    """The job a ``cancel`` request names: ``params.job``, an id as requests have them (None: every job).

    >>> cancel_job({"job": 7}), cancel_job({})
    (7, None)
    >>> cancel_job({"job": [1]})
    Traceback (most recent call last):
    ...
    fastsam_geo.worker_protocol.ProtocolError: params.job: expected the id of a job (a string or a number) \
or null (every job), got [1]
    """
    job = _object("params", params, ("job",), "an object").get("job")
    if not valid_id(job):
        raise _want("params.job", job, "the id of a job (a string or a number) or null (every job)")
    return job
