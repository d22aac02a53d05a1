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

import json
import os
import tempfile
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


def _read_pt_meta(path: Path) -> dict[str, Any]:
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
        raise WeightsError(f"{path}: cannot read the ONNX model ({type(exc).__name__}); use an .onnx file.") from None
    raw = props.get(META_KEY)
    return json.loads(raw) if raw else {}


def write_pt_meta(path: str | os.PathLike[str], meta: dict[str, Any]) -> None:
    """Merge ``meta`` into the ``"fastsam_geo"`` dict of the checkpoint at ``path`` (atomically)."""
    import torch

    p = Path(path)
    ckpt = torch.load(p, map_location="cpu", weights_only=False)
    if not isinstance(ckpt, dict):
        raise WeightsError(f"{p}: not an ultralytics checkpoint (a dict); cannot store metadata in it.")
    ckpt[META_KEY] = {**ckpt.get(META_KEY, {}), **meta}
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
