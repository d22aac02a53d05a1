"""What a model file says about itself: its working ground resolution and how it was made.

fastsam-geo stores a small JSON-able dict with each model it trains or exports:

- ``.pt`` (ultralytics checkpoint, a pickled dict): under the key ``"fastsam_geo"``;
- ``.onnx``: in the model's ``metadata_props`` under the key ``"fastsam_geo"``, as JSON.

The key that matters for inference is ``gsd_m``: the ground resolution (metres per pixel)
the model was trained at, to which ``extract`` resamples tiles. A file without it (the
official FastSAM weights, a plain YOLO-seg model) gets :func:`default_gsd`.

Reading a ``.pt`` needs torch (it is a pickle); reading an ``.onnx`` needs only ``onnx``
or ``onnxruntime``. Neither is imported at module level.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from fastsam_geo.errors import WeightsError

META_KEY = "fastsam_geo"

#: Working resolution assumed for the official FastSAM weights (FastSAM-s.pt / FastSAM-x.pt),
#: which carry no metadata. They were trained on SA-1B photographs, not orthophotos; 0.3 m
#: puts a 10 m house at about 33 px, the object size they segment best. Chosen, not measured
#: here: the official weights cannot be downloaded on this project's machines.
OFFICIAL_FASTSAM_GSD_M = 0.3
OFFICIAL_FASTSAM_NAMES = ("FastSAM-s.pt", "FastSAM-x.pt", "FastSAM-s.onnx", "FastSAM-x.onnx")


def read_model_meta(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The fastsam-geo metadata stored in a ``.pt`` or ``.onnx`` model file (``{}`` if none)."""
    p = Path(path)
    if p.suffix.lower() == ".onnx":
        return _read_onnx_meta(p)
    return _read_pt_meta(p)


class _Stub:
    """Stands for any class or tensor storage in a checkpoint read by :func:`_peek_pt_meta`."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        pass

    def __call__(self, *args: object, **kwargs: object) -> _Stub:
        return _Stub()

    def __setstate__(self, state: object) -> None:
        pass

    def __setitem__(self, key: object, value: object) -> None:
        pass

    def append(self, item: object) -> None:
        pass

    def extend(self, items: object) -> None:
        pass


_SAFE_BUILTINS = {("builtins", n) for n in ("dict", "list", "tuple", "set", "frozenset", "int", "float", "str")}


def _peek_pt_meta(path: Path) -> dict[str, Any] | None:
    """The metadata of a zip-format ``.pt`` without loading the model (None: cannot tell).

    The checkpoint's pickle is read with every class and tensor replaced by a stub, so no code
    from the file runs and no weights are loaded: milliseconds instead of a full ``torch.load``.
    """
    import io
    import pickle
    import zipfile

    class _Peek(pickle.Unpickler):
        def find_class(self, module: str, name: str) -> Any:
            if (module, name) in _SAFE_BUILTINS:
                return super().find_class(module, name)
            return _Stub

        def persistent_load(self, pid: object) -> Any:
            return _Stub()

    try:
        with zipfile.ZipFile(path) as zf:
            pkl = next((n for n in zf.namelist() if n.endswith("/data.pkl") or n == "data.pkl"), None)
            if pkl is None:
                return None
            obj = _Peek(io.BytesIO(zf.read(pkl))).load()
    except Exception:
        return None
    if not isinstance(obj, dict):
        return None
    meta = obj.get(META_KEY)
    if not isinstance(meta, dict):
        return {}
    if any(isinstance(v, _Stub) for v in meta.values()):  # a value of another type: read it properly
        return None
    return dict(meta)


def _read_pt_meta(path: Path) -> dict[str, Any]:
    peeked = _peek_pt_meta(path)
    if peeked is not None:
        return peeked
    import torch

    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:
        raise WeightsError(f"{path}: cannot read the checkpoint ({type(exc).__name__}); use a .pt file.") from None
    meta = ckpt.get(META_KEY) if isinstance(ckpt, dict) else None
    return dict(meta) if isinstance(meta, dict) else {}


def _read_onnx_meta(path: Path) -> dict[str, Any]:
    try:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        props = session.get_modelmeta().custom_metadata_map
    except Exception as exc:
        raise WeightsError(
            f"{path}: not a readable ONNX model ({type(exc).__name__}: damaged, or another file named .onnx); "
            "export one with `fastsam-geo export MODEL.pt OUT.onnx`."
        ) from None
    raw = props.get(META_KEY)
    return json.loads(raw) if raw else {}


def write_pt_meta(path: str | os.PathLike[str], meta: dict[str, Any], drop: Sequence[str] = ()) -> None:
    """Merge ``meta`` into the ``"fastsam_geo"`` dict of the checkpoint at ``path``, without the keys
    ``drop`` (atomically)."""
    import torch

    p = Path(path)
    ckpt = torch.load(p, map_location="cpu", weights_only=False)
    if not isinstance(ckpt, dict):
        raise WeightsError(f"{p}: not an ultralytics checkpoint (a dict); cannot store metadata in it.")
    ckpt[META_KEY] = {k: v for k, v in {**ckpt.get(META_KEY, {}), **meta}.items() if k not in drop}
    fd, tmp = tempfile.mkstemp(dir=p.parent, prefix=f".{p.name}.", suffix=".tmp")
    os.close(fd)
    try:
        torch.save(ckpt, tmp)
        os.replace(tmp, p)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def default_gsd(path: str | os.PathLike[str], meta: dict[str, Any]) -> float | None:
    """The working resolution of a model: its stored ``gsd_m``, the official FastSAM choice, or None.

    None means "no known working resolution": tiles are read at the raster's own resolution.

    >>> default_gsd("weights/m.pt", {"gsd_m": 0.25})
    0.25
    >>> default_gsd("/x/FastSAM-s.pt", {})
    0.3
    >>> default_gsd("/x/my-yolo.pt", {}) is None
    True
    """
    if meta.get("gsd_m"):
        return float(meta["gsd_m"])
    if Path(path).name in OFFICIAL_FASTSAM_NAMES:
        return OFFICIAL_FASTSAM_GSD_M
    return None


#: Confidence threshold of a model whose file does not store one (ultralytics' own default).
DEFAULT_CONF = 0.25


def default_conf(meta: dict[str, Any]) -> float:
    """The confidence threshold of a model: its stored ``conf`` (calibrated when it was trained), else 0.25.

    >>> default_conf({"conf": 0.12}), default_conf({}), default_conf({"conf": "bad"})
    (0.12, 0.25, 0.25)
    """
    try:
        value = float(meta.get("conf", DEFAULT_CONF))
    except (TypeError, ValueError):
        return DEFAULT_CONF
    return value if 0.0 < value < 1.0 else DEFAULT_CONF


def conf_meta(conf: float, tta: int | None = None) -> dict[str, Any]:
    """The metadata of a stored threshold: ``conf``, and ``conf_tta`` (the views it was chosen for) when known.

    >>> conf_meta(0.25, 12), conf_meta(0.3)
    ({'conf': 0.25, 'conf_tta': 12}, {'conf': 0.3})
    """
    return {"conf": float(conf)} | ({} if tta is None else {"conf_tta": int(tta)})


def conf_views(meta: dict[str, Any]) -> str:
    """Where a model's stored threshold came from, for ``info``: the views it was chosen for, if stored.

    >>> conf_views({"conf": 0.25, "conf_tta": 12}), conf_views({"conf": 0.25}), conf_views({"conf_tta": "x"})
    (', chosen for --tta 12', '', '')
    """
    try:
        return f", chosen for --tta {int(meta['conf_tta'])}" if "conf" in meta else ""
    except (KeyError, TypeError, ValueError):
        return ""


def best_conf(px: Any, f1: Any, lo: float = 0.05, hi: float = 0.5) -> float:
    """The confidence that maximises a validation F1-confidence curve (as ultralytics picks it:
    the curve smoothed by a box filter of 10 % of its length), kept within ``[lo, hi]``, to 0.01.

    ``px`` holds the confidences (ultralytics: 1000 in [0, 1]) and ``f1`` the F1 at each
    (one row per class is averaged).

    >>> import numpy as np
    >>> px = np.linspace(0, 1, 1000)
    >>> best_conf(px, np.exp(-((px - 0.13) / 0.05) ** 2))
    0.13
    >>> best_conf(px, 1 - px)   # the best F1 at the lowest confidence: kept at lo
    0.05
    """
    import numpy as np

    y = np.asarray(f1, dtype=np.float64)
    y = y.mean(axis=0) if y.ndim == 2 else y
    nf = round(len(y) * 0.1 * 2) // 2 + 1  # ultralytics' smooth(): odd box-filter width
    p = np.ones(nf // 2)
    yp = np.concatenate((p * y[0], y, p * y[-1]), 0)
    smooth = np.convolve(yp, np.ones(nf) / nf, mode="valid")
    return round(min(max(float(np.asarray(px)[int(smooth.argmax())]), lo), hi), 2)


def weights_conf(weights: str | os.PathLike[str] | None) -> float:
    """The confidence threshold stored with the weights ``weights`` resolves to (else 0.25), read cheaply."""
    from fastsam_geo.weights import resolve_weights

    try:
        return default_conf(read_model_meta(resolve_weights(weights)))
    except (WeightsError, ImportError):
        return DEFAULT_CONF


def parse_gsd(value: float | str | None) -> float | str | None:
    """A ``--gsd`` value checked: None (the model's), ``"native"`` (no resampling) or metres > 0.

    >>> parse_gsd("0.25"), parse_gsd("Native"), parse_gsd(None), parse_gsd(0.5)
    (0.25, 'native', None, 0.5)
    >>> parse_gsd("fast")
    Traceback (most recent call last):
    ...
    ValueError: gsd='fast' is not a ground resolution: give metres per pixel (e.g. 0.3) or 'native'.
    """
    if value is None:
        return None
    if isinstance(value, str) and value.strip().lower() == "native":
        return "native"
    try:
        metres = float(value)
    except (TypeError, ValueError):
        metres = float("nan")
    if not 0.001 <= metres <= 1000.0:  # NaN fails too
        raise ValueError(
            f"gsd={value!r} is not a ground resolution: give metres per pixel (e.g. 0.3) or 'native'."
        )
    return metres


def working_gsd(gsd: float | str | None, model_gsd: float | None) -> float | None:
    """The resolution tiles are read at: ``gsd`` if given, ``"native"`` -> None, else the model's.

    >>> working_gsd(None, 0.25), working_gsd("native", 0.25), working_gsd(0.5, 0.25), working_gsd(None, None)
    (0.25, None, 0.5, None)
    """
    checked = parse_gsd(gsd)
    if checked == "native":
        return None
    if checked is None:
        return model_gsd
    return float(checked)


def weights_gsd(weights: str | os.PathLike[str] | None) -> float | None:
    """The working resolution of the weights that ``weights`` resolves to, read cheaply (no model load).

    None when the weights cannot be found (the segmenter that loads them reports that).
    """
    from fastsam_geo.weights import resolve_weights

    try:
        path = resolve_weights(weights)
        return default_gsd(path, read_model_meta(path))
    except (WeightsError, ImportError):  # ImportError: a .pt without torch (the segmenter says so in one line)
        return None


def onnx_input_size(weights: str | os.PathLike[str] | None) -> tuple[int, int] | None:
    """The fixed input size ``(height, width)`` of the ONNX model ``weights`` resolves to, read from
    its graph; None for a ``.pt``, a dynamic-size graph, or weights that cannot be found or read
    (the segmenter that loads them reports that)."""
    from fastsam_geo.weights import resolve_weights

    try:
        path = resolve_weights(weights)
    except (WeightsError, ImportError):
        return None
    if path.suffix.lower() != ".onnx":
        return None
    try:
        st = path.stat()
    except OSError:
        return None
    return _graph_input_size(str(path.resolve()), st.st_mtime_ns, st.st_size)


@functools.lru_cache(maxsize=16)
def _graph_input_size(path: str, mtime_ns: int, size: int) -> tuple[int, int] | None:
    """The fixed ``(height, width)`` of an ONNX graph's input, read once per file version (building
    the session to read it takes a noticeable part of a second: engine auto and the plan's tile
    check both ask for it on every run)."""
    try:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        shape = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"]).get_inputs()[0].shape
    except Exception:
        return None
    if len(shape) == 4 and isinstance(shape[2], int) and isinstance(shape[3], int):
        return int(shape[2]), int(shape[3])
    return None


def parse_meta(text: str | None) -> dict[str, Any]:
    """The metadata dict from its JSON text (``{}`` for nothing, bad JSON or a non-object).

    >>> parse_meta('{"gsd_m": 0.5}'), parse_meta(None), parse_meta("[1]")
    ({'gsd_m': 0.5}, {}, {})
    """
    if not text:
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        return {}
    return value if isinstance(value, dict) else {}


def write_onnx_meta(path: str | os.PathLike[str], meta: dict[str, Any]) -> None:
    """Store ``meta`` as JSON under ``metadata_props["fastsam_geo"]`` of an ``.onnx`` file (in place;
    needs the ``onnx`` package, in the torch extra), atomically. Used by ``fastsam-geo export``."""
    import onnx

    model = onnx.load(os.fspath(path))
    for prop in list(model.metadata_props):
        if prop.key == META_KEY:
            model.metadata_props.remove(prop)
    entry = model.metadata_props.add()
    entry.key, entry.value = META_KEY, json.dumps(meta, sort_keys=True)
    p = Path(path)
    fd, tmp = tempfile.mkstemp(dir=p.parent, prefix=f".{p.name}.", suffix=".tmp.onnx")
    os.close(fd)
    try:  # written beside it and moved into place: a failure leaves the model as it was
        onnx.save(model, tmp)
        shutil.copymode(p, tmp)
        os.replace(tmp, p)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
