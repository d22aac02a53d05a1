"""Find FastSAM weights on disk, and fingerprint them.

Resolution order (DESIGN.md, "Weights"):

1. an explicit path that exists;
2. a bare file name, looked up in the repository's ``weights/`` folder, then in
   ``$FASTSAM_GEO_WEIGHTS`` (a file of that name, or a folder holding it);
3. nothing given: ``$FASTSAM_GEO_WEIGHTS`` when set, else the project's own small default model:
   ``weights/fastsam-geo-n.pt`` when torch is installed, else ``weights/fastsam-geo-n.onnx``
   (ONNX Runtime, the light install); a non-editable install finds both in
   ``<prefix>/share/fastsam-geo/weights`` (:data:`BUNDLED_DIR`);
4. ``FastSAM-s.pt`` / ``FastSAM-x.pt`` by bare name, for ultralytics to download, only when
   ``YOLO_OFFLINE`` is not set.

Anything else raises :class:`~fastsam_geo.errors.WeightsError` with one line that says what was
looked for, every place looked, and how to get ``FastSAM-s.pt``.

.. warning::
   ``.pt`` files are Python pickles: loading one can run arbitrary code. Only load weights from
   a source you trust. :func:`sha256_file` fingerprints the file that was used, so that a result
   can be traced back to the exact weights (the segmenter records it as ``weights_sha256``).

This module is pure Python: it never imports torch or ultralytics.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import sys
from pathlib import Path

from fastsam_geo.errors import WeightsError

WEIGHTS_DIR = Path(__file__).resolve().parents[1] / "weights"
"""The repository's ``weights/`` folder."""

BUNDLED_DIR = Path(sys.prefix) / "share" / "fastsam-geo" / "weights"
"""Where ``pip install fastsam-geo`` puts the bundled default model (pyproject's data-files)."""

ENV_VAR = "FASTSAM_GEO_WEIGHTS"
DEFAULT_WEIGHTS = "fastsam-geo-n.pt"
"""The project's own small default model, for real imagery at 0.25 m (trained by ``weights/make_real.sh``
on real and synthetic data; ``fastsam-geo-town-n.pt``, the synthetic-only first model, stays beside it)."""

DEFAULT_ONNX = "fastsam-geo-n.onnx"
"""The same model exported to ONNX (``weights/export_default.sh``): the default without torch."""


def torch_available() -> bool:
    """True when torch can be imported (checked without importing it)."""
    return importlib.util.find_spec("torch") is not None


def default_weights_name() -> str:
    """:data:`DEFAULT_WEIGHTS` (``.pt``) with torch installed, else :data:`DEFAULT_ONNX`."""
    return DEFAULT_WEIGHTS if torch_available() else DEFAULT_ONNX


def _bundled(name: str) -> Path | None:
    """``name`` in the repository's ``weights/`` or the installed :data:`BUNDLED_DIR`, if there."""
    for folder in (WEIGHTS_DIR, BUNDLED_DIR):
        if (folder / name).is_file():
            return folder / name
    return None

DOWNLOADABLE = frozenset({"FastSAM-s.pt", "FastSAM-x.pt"})
"""Names ultralytics can download by itself when online."""

FASTSAM_S_URL = "https://github.com/ultralytics/assets/releases/download/v8.2.0/FastSAM-s.pt"

_TRUE = frozenset({"1", "true", "yes", "on", "y", "t"})


def is_offline() -> bool:
    """True when ``YOLO_OFFLINE`` is set to a true value (as ultralytics reads it).

    >>> import os; old = os.environ.pop("YOLO_OFFLINE", None)
    >>> is_offline()
    False
    >>> os.environ["YOLO_OFFLINE"] = "1"; is_offline()
    True
    >>> os.environ["YOLO_OFFLINE"] = "0"; is_offline()
    False
    >>> _ = os.environ.pop("YOLO_OFFLINE") if old is None else os.environ.update(YOLO_OFFLINE=old)
    """
    return os.environ.get("YOLO_OFFLINE", "").strip().lower() in _TRUE


def _is_bare_name(weights: str | Path) -> bool:
    """A file name with no folder part (``"FastSAM-s.pt"``, not ``"./FastSAM-s.pt"``).

    >>> _is_bare_name("FastSAM-s.pt"), _is_bare_name("weights/FastSAM-s.pt"), _is_bare_name("./x.pt")
    (True, False, False)
    """
    s = os.fspath(weights)
    return bool(s) and os.sep not in s and (os.altsep is None or os.altsep not in s) and s not in {".", ".."}


def _not_found(what: str, places: list[str]) -> WeightsError:
    offline = " (YOLO_OFFLINE is set: no download attempted)" if is_offline() else ""
    return WeightsError(
        f"Model weights {what} not found{offline}; looked in: {'; '.join(places)}. "
        f"Get FastSAM-s.pt from {FASTSAM_S_URL} and put it in {WEIGHTS_DIR}/ "
        f"or set {ENV_VAR} to its path (a file, or the folder holding it)."
    )


def resolve_weights(weights: str | Path | None = None) -> Path:
    """The weights file to load, following the order in the module docstring.

    Returns an absolute path to an existing file, or, only when online and asked for
    ``FastSAM-s.pt`` / ``FastSAM-x.pt`` by bare name, that bare name for ultralytics to
    download.

    Raises:
        WeightsError: nothing found; the one-line message lists every place looked.
    """
    env = os.environ.get(ENV_VAR, "").strip()
    env_path = Path(env).expanduser() if env else None

    if weights is None:
        name = default_weights_name()
        found = _bundled(name) or (_bundled(DEFAULT_ONNX) if name != DEFAULT_ONNX else None)
        default = WEIGHTS_DIR / name
        if env_path is None:
            if found is not None:
                return found
            places = [str(default), str(BUNDLED_DIR / name), f"{ENV_VAR} (not set)"]
            raise _not_found(f"(default {name!r})", places)
        if env_path.is_file():
            return env_path.resolve()
        if not env_path.is_dir():
            raise _not_found(f"named by {ENV_VAR}", [f"{ENV_VAR}={env} (no such file)"])
        candidate = env_path / name  # a folder: the default name in it, then ours
        if candidate.is_file():
            return candidate.resolve()
        if found is not None:
            return found
        raise _not_found(f"(default {name!r})", [str(env_path / name), str(default)])

    path = Path(weights).expanduser()
    if path.is_file():
        return path.resolve()
    if path.is_dir():
        raise WeightsError(
            f"Model weights {os.fspath(weights)!r} is a folder, not a .pt file; pass the file inside it."
        )

    places = [str(path.resolve())]
    if _is_bare_name(weights):
        name = path.name
        candidate = _bundled(name)
        if candidate is not None:
            return candidate
        places.append(str(WEIGHTS_DIR / name))
        if env_path is None:
            places.append(f"{ENV_VAR} (not set)")
        elif env_path.is_dir():
            candidate = env_path / name
            if candidate.is_file():
                return candidate.resolve()
            places.append(str(candidate))
        elif env_path.is_file() and env_path.name == name:
            return env_path.resolve()
        else:
            places.append(f"{ENV_VAR}={env}")
        if name in DOWNLOADABLE and not is_offline():
            return Path(name)
    raise _not_found(repr(os.fspath(weights)), places)


def sha256_file(path: str | Path, chunk_size: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in chunks (never the whole file in memory).

    >>> import tempfile
    >>> with tempfile.NamedTemporaryFile(delete=False) as f:
    ...     _ = f.write(b"abc")
    >>> sha256_file(f.name)[:16]
    'ba7816bf8f01cfea'
    >>> os.unlink(f.name)
    """
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk_size):
            h.update(block)
    return h.hexdigest()
