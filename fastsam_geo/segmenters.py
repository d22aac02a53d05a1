"""The model of a run, resolved once, and the segmenters built from it (shared by every executor).

:func:`resolve_model` turns the ``weights`` and ``engine`` a user gave into one
:class:`ResolvedModel` (path, sha256, engine, working resolution, threshold) at plan time; the
executors (:mod:`fastsam_geo.run` in this process, :mod:`fastsam_geo.cluster` on Dask workers)
build their segmenters from that value with :func:`make_segmenter` and never resolve the
weights again. Engine choice (``engine="auto"``): a ``.pt`` whose ONNX twin (the same model
exported by ``fastsam-geo export``, recorded by its ``source_sha256``) lies beside it runs on
ONNX Runtime when onnxruntime is installed (2.75x faster end to end on a CPU, same objects:
``benchmarks/RESULTS.md``); ``"torch"`` or ``"onnx"`` choose explicitly.

This module imports neither torch nor onnxruntime; both :mod:`~fastsam_geo.run` and
:mod:`~fastsam_geo.cluster` import it, and it imports neither of them.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fastsam_geo.errors import PromptError, WeightsError
from fastsam_geo.masks import InstanceMasks
from fastsam_geo.segment import cpu_threads
from fastsam_geo.tiling import Tile

if TYPE_CHECKING:
    from fastsam_geo.plan import ModelOptions, RunPlan
    from fastsam_geo.segment import Segmenter

ENGINES = ("auto", "onnx", "torch")
"""Values of ``--engine`` / ``engine=``."""


@dataclass(frozen=True)
class ResolvedModel:
    """The FastSAM model of a run, resolved once at plan time.

    Attributes:
        path: the weights file that runs (``.onnx`` or ``.pt``), or a bare official name that
            ultralytics downloads (online only; sha256 is then None).
        sha256: the file's sha256 (traceability: written to the output's metadata).
        engine: ``"onnx"`` (ONNX Runtime) or ``"torch"``.
        gsd: the model's working resolution in metres per pixel, or None (native resolution).
        conf: the confidence threshold stored with the model (else 0.25).
    """

    path: str
    sha256: str | None
    engine: str
    gsd: float | None
    conf: float


def onnxruntime_available() -> bool:
    """True when onnxruntime can be imported (checked without importing it)."""
    return importlib.util.find_spec("onnxruntime") is not None


def onnx_twin(pt: Path, sha256: str | None) -> Path | None:
    """The ONNX export of ``pt`` lying beside it (``X.onnx`` for ``X.pt``), or None.

    It counts as the twin only when its metadata names ``pt`` as its source: by sha256 when
    recorded (``fastsam-geo export`` records it), else by file name.
    """
    from fastsam_geo.modelmeta import read_model_meta

    twin = pt.with_suffix(".onnx")
    if not twin.is_file():
        return None
    try:
        meta = read_model_meta(twin)
    except Exception:  # a broken twin is not a twin: the .pt runs
        return None
    recorded = meta.get("source_sha256")
    if recorded:
        return twin if recorded == sha256 else None
    return twin if meta.get("source") == pt.name else None


def _twin_fits(twin: Path, tile_size: int | None) -> bool:
    """True when ``twin`` takes ``tile_size`` px tiles without shrinking them (a fixed input at
    least that large, a dynamic input, or no tile size to check)."""
    from fastsam_geo.modelmeta import onnx_input_size

    if tile_size is None:
        return True
    try:
        fixed = onnx_input_size(twin)
    except Exception:  # unreadable: the engine that loads it says why
        return True
    return fixed is None or tile_size <= min(fixed)


def _choose(path: Path, sha: str | None, engine: str, tile_size: int | None = None) -> Path:
    """The file that runs for ``engine`` (see the module docstring); one clear error otherwise.
    ``auto`` keeps the ``.pt`` (torch installed) when its twin's fixed input is smaller than
    ``tile_size``: the twin would shrink each tile."""
    onnx = path.suffix.lower() == ".onnx"
    if engine == "torch" and onnx:
        raise WeightsError(
            f"--engine torch needs .pt weights; {path} is an ONNX export (give its .pt, or use --engine onnx)."
        )
    if onnx or engine == "torch" or not path.is_file():
        return path
    twin = onnx_twin(path, sha)
    if engine == "onnx" and twin is None:
        beside = path.with_suffix(".onnx")
        if beside.exists():  # another model's export, or this one's before its weights changed
            raise WeightsError(
                f"--engine onnx: {beside.name} beside {path} was not exported from it (its metadata name "
                f"another source); export it again with: fastsam-geo export {path} {beside} --overwrite "
                "(or use --engine torch)."
            )
        raise WeightsError(
            f"--engine onnx: no ONNX export of {path} beside it ({beside.name}); "
            f"make one with: fastsam-geo export {path} {beside} (or use --engine torch)."
        )
    if twin is not None and engine == "onnx":
        return twin
    torch = importlib.util.find_spec("torch") is not None
    if twin is not None and onnxruntime_available() and (not torch or _twin_fits(twin, tile_size)):
        return twin
    return path


def resolve_model(
    weights: str | os.PathLike[str] | None, engine: str = "auto", tile_size: int | None = None
) -> ResolvedModel:
    """The model ``weights`` (a path, a name, or None: the default) and ``engine`` stand for;
    ``tile_size``: the run's tiles (``auto`` runs the ``.pt`` when its twin's input is smaller).

    Raises:
        WeightsError: the weights cannot be found, or ``engine`` cannot run them.
    """
    from fastsam_geo.modelmeta import default_conf, default_gsd, read_model_meta
    from fastsam_geo.weights import resolve_weights, sha256_file

    if engine not in ENGINES:
        raise WeightsError(f"engine {engine!r} is not one of {', '.join(ENGINES)}; use auto, onnx or torch.")
    path = resolve_weights(None if weights is None else os.fspath(weights))
    sha = sha256_file(path) if path.is_file() else None
    chosen = _choose(path, sha, engine, tile_size)
    if chosen != path:
        path, sha = chosen, sha256_file(chosen)
    try:
        meta = read_model_meta(path) if path.is_file() else {}
    except (WeightsError, ImportError):  # an unreadable file: the engine that loads it says why, in one line
        meta = {}
    return ResolvedModel(
        path=os.fspath(path),
        sha256=sha,
        engine="onnx" if path.suffix.lower() == ".onnx" else "torch",
        gsd=default_gsd(path, meta),
        conf=default_conf(meta),
    )


# ---------------------------------------------------------------------------------- segmenters
class CacheOnly:
    """A segmenter that never runs a model: for re-prompting tiles already in the cache.

    Its ``metadata`` is what a CPU ``FastSAMSegmenter`` with the same settings reports, so
    its cache keys are the ones ``extract`` wrote.
    """

    def __init__(
        self,
        raster: str | os.PathLike[str],
        model: ResolvedModel,
        conf: float,
        iou: float,
        tta: int = 1,
        refine: bool = True,
    ) -> None:
        from fastsam_geo.segment import mask_settings

        self.raster = raster
        self.weights_path = Path(model.path)
        self.weights_sha256 = model.sha256
        self.engine = model.engine
        self.metadata = mask_settings(model.sha256 or model.path, conf=conf, iou=iou, tta=tta, refine=refine)

    def segment(self, tiles: Sequence[Tile]) -> list[InstanceMasks]:
        """Refuses: a tile reached here is not in the cache."""
        ids = ", ".join(t.id for t in tiles[:3])
        raise PromptError(
            f"{self.raster}: tile(s) {ids} not in the mask cache; run `fastsam-geo extract` over this raster "
            "first (with the same weights, --engine, --conf, --iou, --tta, --bands and --gsd), or use `extract` with "
            "these prompts."
        )


def inner(segmenter: Any) -> Any:
    """The segmenter behind a cache wrapper."""
    return getattr(segmenter, "segmenter", segmenter)


def with_cache(segmenter: Any, raster: str | os.PathLike[str], cache_dir: str | os.PathLike[str], bands: str) -> Any:
    """Wrap ``segmenter`` so that tiles already segmented come from ``cache_dir``.

    Keys come from the segmenter's ``metadata`` (weights sha256, conf, iou, max_det...), the
    same way the QGIS worker builds them, so both share the cache.
    """
    from fastsam_geo.cache import CachedSegmenter, MaskCache, key_fn_for

    settings = getattr(segmenter, "metadata", None)
    if settings is None:  # a plugged-in segmenter without metadata: key on its type
        settings = {"weights_sha256": type(segmenter).__name__, "conf": 0.0, "iou": 0.0, "imgsz": None}
    return CachedSegmenter(segmenter, MaskCache(cache_dir), key_fn_for(raster, settings, bands))


def cache_bands_key(plan: RunPlan) -> str:
    """The bands/stretch part of a cache key: the bands the plan resolved, not the ones asked for."""
    return bands_key(plan.bands, plan.options.tiling.stretch)


def bands_key(bands: Sequence[int], stretch: object) -> str:
    """The bands/stretch part of a cache key from the resolved band numbers.

    >>> bands_key((1, 2, 3), "auto")
    '[1, 2, 3]|auto'
    """
    return f"{[int(b) for b in bands]}|{stretch}"


def make_segmenter(
    model: ModelOptions,
    resolved: ResolvedModel,
    *,
    raster: str = "",
    cache_only: bool = False,
    threads: int | None = None,
) -> Segmenter:
    """The FastSAM segmenter of ``resolved`` with ``model``'s settings (or the cache-only one)."""
    conf = model.conf if model.conf is not None else resolved.conf
    if cache_only:
        return CacheOnly(raster, resolved, conf, model.iou, model.tta, model.refine)  # type: ignore[return-value]
    from fastsam_geo.segment import FastSAMSegmenter

    return FastSAMSegmenter(
        resolved.path,
        device=model.device,
        batch_size=model.batch_size,
        conf=conf,
        iou=model.iou,
        threads=threads,
        tta=model.tta,
        refine=model.refine,
    )


@dataclass(frozen=True)
class ModelLabel:
    """What a run's output and resume ledger record of its model.

    ``segmenter`` names the family that decides the polygons (``FastSAM`` for every FastSAM
    engine and executor: the weights' sha256 tells the files apart; a plugged-in segmenter's
    class name otherwise), never where the tiles ran.
    """

    weights: str | None
    sha256: str | None
    segmenter: str
    engine: str | None


def label_of_model(resolved: ResolvedModel) -> ModelLabel:
    """The label of a run of ``resolved``."""
    return ModelLabel(resolved.path, resolved.sha256, "FastSAM", resolved.engine)


def label_of(segmenter: Any) -> ModelLabel:
    """The label of a run of ``segmenter`` (cache wrappers looked through)."""
    from fastsam_geo.segment import FastSAMSegmenter

    seg = inner(segmenter)
    path = str(getattr(seg, "weights_path", "") or "") or None
    sha = getattr(seg, "weights_sha256", None)
    engine = getattr(seg, "engine", None)
    if engine is not None and str(engine).startswith("onnx"):  # OnnxFastSAMSegmenter says "onnxruntime"
        engine = "onnx"
    if isinstance(seg, (FastSAMSegmenter, CacheOnly)):
        return ModelLabel(path, sha, "FastSAM", engine)
    return ModelLabel(path, sha, type(seg).__name__, engine)


__all__ = [
    "ENGINES",
    "CacheOnly",
    "ModelLabel",
    "ResolvedModel",
    "bands_key",
    "cache_bands_key",
    "cpu_threads",
    "inner",
    "label_of",
    "label_of_model",
    "make_segmenter",
    "resolve_model",
    "with_cache",
]
