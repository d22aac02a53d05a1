"""Fine-tune FastSAM (a YOLOv8-seg model) on GeoTIFFs and building footprints.

:func:`fastsam_geo.dataset.build_dataset` turns rasters + footprint vectors into a YOLO-seg
dataset; ``train`` runs ultralytics on it, validates each source and calibrates the confidence
threshold; the result loads back with ``FastSAMSegmenter``.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import geopandas as gpd

from fastsam_geo.calibrate import Calibration, calibrate_conf, per_raster, store_conf
from fastsam_geo.dataset import DatasetSummary, build_dataset, check_labels, label_name
from fastsam_geo.errors import FastSAMGeoError
from fastsam_geo.locks import output_lock
from fastsam_geo.output import staged_file
from fastsam_geo.tta import DEFAULT_TTA
from fastsam_geo.validate import check_train_options, check_tta


def _check_train_output(
    out: Path,
    rasters: Sequence[str | os.PathLike[str]],
    labels: object,
    base: str,
    overwrite: bool,
) -> None:
    """Refuse an output that is not a ``.pt``, is an input or exists without ``overwrite``."""
    from fastsam_geo.output import guard_output

    label_paths = [lab for lab in per_raster(labels, len(rasters)) if isinstance(lab, (str, os.PathLike))]
    guard_output(out, [*rasters, *label_paths, base], overwrite)
    if out.suffix.lower() != ".pt":
        raise FastSAMGeoError(
            f"{out}: train writes a PyTorch checkpoint; give a .pt name (export it to ONNX afterwards)."
        )
    kind = Path(base).suffix.lower()
    if kind not in (".pt", ".yaml", ".yml"):
        raise FastSAMGeoError(
            f"--base {base}: give a .pt checkpoint to fine-tune (e.g. FastSAM-s.pt) or a model yaml "
            "(e.g. yolov8n-seg.yaml)."
        )
    if kind == ".pt" and os.sep in str(base) and not Path(base).is_file():
        raise FastSAMGeoError(f"--base {base}: no such checkpoint; check the path.")


def _write_model(
    best: Path,
    out: Path,
    meta: dict[str, object],
    ds: DatasetSummary,
    rasters: Sequence[str | os.PathLike[str]],
    labels: object,
    work: Path,
    *,
    batch: int,
    device: str,
    labels_layer: str | None = None,
    tta: int = DEFAULT_TTA,
) -> tuple[list[SourceScore], float | None, Calibration]:
    """Copy the trained weights to ``out`` with their metadata, the per-source validation and
    the calibrated threshold, through a staging file beside ``out``: a failure or Ctrl-C never
    leaves a half-written model there (an earlier ``out`` stays as it was)."""
    from fastsam_geo.modelmeta import write_pt_meta

    gsd = meta["gsd_m"]
    with staged_file(out) as tmp:
        shutil.copyfile(best, tmp)
        imgsz = int(meta["imgsz"])  # type: ignore[call-overload]
        per_source = validate_per_source(tmp, ds, rasters, work, imgsz=imgsz, batch=batch, device=device)
        write_pt_meta(tmp, meta)  # the working resolution first: the calibration reads at it
        # the threshold: the extract pipeline's best object F1 on the training rasters, else (no threshold
        # finds a truth building there) the median of the sources' best-F1 thresholds on their crops
        cal = calibrate_conf(tmp, rasters, labels, gsd=gsd, device=device, labels_layer=labels_layer, tta=tta)  # type: ignore[arg-type]
        conf = cal.conf if cal.conf is not None else calibrated_conf(per_source)
        if conf is not None:  # the views it was chosen for, when extract chose it
            store_conf(tmp, conf, tta if cal.conf is not None else None)
    return per_source, conf, cal


@dataclass
class SourceScore:
    """Validation of the trained model on the validation crops of one source (one raster)."""

    source: str
    images: int
    instances: int
    precision: float
    recall: float
    map50: float
    map50_95: float
    conf: float | None = None  # the confidence of the best mask F1 on these crops


@dataclass
class TrainResult:
    """Where the trained weights went, how long it took, and the validation of each source."""

    weights: Path
    seconds: float
    epochs: int
    dataset: DatasetSummary
    per_source: list[SourceScore] = field(default_factory=list)
    conf: float | None = None  # the confidence threshold stored in the weights
    calibration: Calibration | None = None  # how it was chosen (None: by calibrated_conf)


def source_names(rasters: Sequence[str | os.PathLike[str]]) -> list[str]:
    """A unique, readable name per raster (its file stem; ``_2``... for repeated stems).

    >>> source_names(["a/x.tif", "b/x.tif", "c/y.tif"])
    ['x', 'x_2', 'y']
    """
    seen: dict[str, int] = {}
    out = []
    for r in rasters:
        stem = Path(r).stem
        seen[stem] = seen.get(stem, 0) + 1
        out.append(stem if seen[stem] == 1 else f"{stem}_{seen[stem]}")
    return out


def validate_per_source(
    weights: str | os.PathLike[str],
    dataset: DatasetSummary,
    rasters: Sequence[str | os.PathLike[str]],
    work: Path,
    *,
    imgsz: int,
    batch: int,
    device: str,
) -> list[SourceScore]:
    """Mask precision, recall, mAP50 and mAP50-95 of ``weights`` on each source's validation crops.

    One ultralytics ``val`` per source, on a data yaml whose ``val`` lists that source's crops
    (:func:`build_dataset` names each crop after its raster: ``<stem>_<index>_<tile>.png``).
    Sources without a validation crop are left out.
    """
    from ultralytics import YOLO

    from fastsam_geo.modelmeta import best_conf

    root = Path(dataset.data_yaml).parent
    model = YOLO(str(weights), task="segment")
    scores = []
    for r_i, (raster, name) in enumerate(zip(rasters, source_names(rasters), strict=True)):
        pattern = f"{glob.escape(Path(raster).stem)}_{r_i:03d}_*.png"  # "a[1].tif": "[" is a pattern character
        images = sorted((root / "images" / "val").glob(pattern))
        if not images:
            continue
        listing = work / f"val_{r_i:03d}.txt"
        listing.write_text("".join(f"{p.resolve()}\n" for p in images))
        yaml = work / f"val_{r_i:03d}.yaml"
        yaml.write_text(
            f"path: {root.resolve()}\ntrain: images/train\nval: {listing.resolve()}\nnames:\n  0: building\n"
        )
        labels = [root / "labels" / "val" / f"{p.stem}.txt" for p in images]
        instances = sum(len(lab.read_text().splitlines()) for lab in labels if lab.exists())
        m = model.val(
            data=str(yaml),
            imgsz=imgsz,
            batch=batch,
            device=device,
            plots=False,
            verbose=False,
            workers=0,
            project=str((work / "runs").resolve()),
            name=f"val_{r_i:03d}",
            exist_ok=True,
            single_cls=True,
        )
        seg = m.seg
        conf = best_conf(seg.px, seg.f1_curve) if len(getattr(seg, "f1_curve", [])) else None
        scores.append(
            SourceScore(
                name, len(images), instances, float(seg.mp), float(seg.mr), float(seg.map50), float(seg.map), conf
            )
        )
    return scores


def calibrated_conf(per_source: Sequence[SourceScore]) -> float | None:
    """The model's confidence threshold: the median over sources of each source's best-F1 one.

    Each source counts once, however many crops it has (a synthetic town scores its objects
    high, a real orthophoto low: pooling the crops would let the easy source decide). A small
    model trained briefly scores real buildings at 0.1-0.2, where a fixed 0.25 drops most.

    >>> s = [SourceScore("a", 1, 1, 0, 0, 0, 0, conf=c) for c in (0.1, 0.4, 0.12)]
    >>> calibrated_conf(s), calibrated_conf([])
    (0.12, None)
    """
    confs = sorted(sc.conf for sc in per_source if sc.conf is not None)
    if not confs:
        return None
    mid = len(confs) // 2
    return round(confs[mid] if len(confs) % 2 else (confs[mid - 1] + confs[mid]) / 2, 2)


def load_base(base: str) -> Any:
    """``base`` loaded as an ultralytics YOLO segmentation model, or a one-line error.

    A ``.pt`` is found as ``--weights`` is (:func:`~fastsam_geo.weights.resolve_weights`: a path,
    a bundled model by name, ``FASTSAM_GEO_WEIGHTS``; FastSAM-s/x downloaded only when online); a
    file ultralytics cannot load (not a checkpoint, truncated) is told, not raised as a traceback.
    """
    from ultralytics import YOLO

    from fastsam_geo.weights import resolve_weights

    source = str(resolve_weights(base)) if Path(base).suffix.lower() == ".pt" else base
    try:
        return YOLO(source, task="segment")
    except Exception as exc:  # ultralytics raises anything from pickle, torch or its own checks
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise FastSAMGeoError(
            f"--base {base}: cannot load it as a YOLOv8-seg / FastSAM model ({reason}); give a .pt checkpoint "
            "(e.g. weights/fastsam-geo-n.pt) or a model yaml (e.g. yolov8n-seg.yaml)."
        ) from None


def check_freeze(freeze: int, layers: int, base: str) -> None:
    """Refuse a ``--freeze`` that leaves nothing to learn: the last layer (the head) must train.

    >>> check_freeze(10, 23, "m.pt")
    >>> check_freeze(23, 23, "m.pt")
    Traceback (most recent call last):
    ...
    fastsam_geo.errors.FastSAMGeoError: --freeze 23: m.pt has 23 layers and the last (the head) must learn; \
freeze at most 22 (10 keeps a YOLOv8-seg backbone as it is).
    """
    if freeze < 0 or freeze >= layers:
        raise FastSAMGeoError(
            f"--freeze {freeze}: {base} has {layers} layers and the last (the head) must learn; "
            f"freeze at most {layers - 1} (10 keeps a YOLOv8-seg backbone as it is)."
        )


def ultralytics_args(
    ds: DatasetSummary,
    work: Path,
    *,
    epochs: int,
    imgsz: int,
    batch: int,
    device: str,
    workers: int,
    seed: int,
    time_hours: float | None = None,
    lr0: float | None = None,
    freeze: int = 0,
) -> dict[str, object]:
    """The arguments of ultralytics' ``Model.train`` for the dataset ``ds``.

    ``lr0``: AdamW at this initial learning rate (without it ultralytics picks the optimiser and its
    rate: AdamW at about 0.002 for a few hundred crops). ``freeze``: the first ``freeze`` layers keep
    their weights and batch-norm statistics (10: a YOLOv8-seg backbone).
    """
    kwargs: dict[str, object] = {
        "data": str(ds.data_yaml),
        "epochs": epochs,
        "imgsz": imgsz,
        "batch": batch,
        "device": device,
        "workers": workers,
        "seed": seed,
        "deterministic": True,
        "plots": False,
        "project": str((work / "runs").resolve()),
        "name": "train",
        "exist_ok": True,
        "single_cls": True,
        "amp": device != "cpu",
        "verbose": False,
        "patience": 0,
        "flipud": 0.5,  # imagery seen from above has no "up": flip both ways (ultralytics: lr only)
    }
    if time_hours:
        kwargs["time"] = time_hours
    if lr0 is not None:
        kwargs.update(optimizer="AdamW", lr0=lr0)
    if freeze:
        kwargs["freeze"] = freeze
    return kwargs


def epoch_cap(limit: int) -> Any:
    """An ultralytics ``on_fit_epoch_end`` callback that keeps ``epochs`` a cap under a time budget.

    With ``time`` ultralytics re-estimates the number of epochs that fill the budget after each
    epoch, and stretches its learning-rate schedule to them: ``--epochs 1 --hours 0.01`` ran 15.
    This callback brings the estimate back to ``limit`` when it is above it (the schedule then
    ends at ``limit``) and stops after epoch ``limit``.
    """

    def cap(trainer: Any) -> None:
        if trainer.epochs > limit:
            trainer.epochs = trainer.args.epochs = limit
            trainer._setup_scheduler()
            trainer.scheduler.last_epoch = trainer.epoch
        trainer.stop |= trainer.epoch + 1 >= limit

    return cap


@contextlib.contextmanager
def removed_on_failure(work: Path) -> Iterator[None]:
    """Run the block; if it fails, remove what it made of ``work``: the whole folder when the
    block created it, else its ``dataset/`` when the block created that. Never a folder that
    holds ultralytics' checkpoints (``runs/``): hours of training are not thrown away because a
    step after them failed."""
    made_work, made_ds = not work.exists(), not (work / "dataset").exists()
    try:
        yield
    except BaseException:
        if not (work / "runs").exists():
            if made_work:
                shutil.rmtree(work, ignore_errors=True)
            elif made_ds:
                shutil.rmtree(work / "dataset", ignore_errors=True)
        raise


def train(
    rasters: Sequence[str | os.PathLike[str]],
    labels: str | os.PathLike[str] | gpd.GeoDataFrame | Sequence[str | os.PathLike[str]],
    output: str | os.PathLike[str],
    *,
    base: str = "yolov8n-seg.yaml",
    epochs: int = 50,
    imgsz: int = 512,
    batch: int = 8,
    device: str = "cpu",
    workers: int = 2,
    seed: int = 0,
    time_hours: float | None = None,
    work_dir: str | os.PathLike[str] | None = None,
    threads: int | None = None,
    gsd: float | None = None,
    augment: bool = False,
    min_valid: float = 0.05,
    min_crops: int = 0,
    labels_layer: str | None = None,
    keep: str = "best",
    overwrite: bool = False,
    tta: int = DEFAULT_TTA,
    lr0: float | None = None,
    freeze: int = 0,
) -> TrainResult:
    """Build the dataset, fine-tune ``base`` with ultralytics, copy the best weights to ``output``.

    ``base`` is a FastSAM/YOLOv8-seg checkpoint to fine-tune (``FastSAM-s.pt``) or a model
    yaml to train from scratch (``yolov8n-seg.yaml``; no download needed). ``gsd`` is the
    working ground resolution (metres per pixel) every raster is read at; it is stored in
    the output checkpoint (see :mod:`fastsam_geo.modelmeta`), so ``extract`` reads tiles at
    the same resolution. ``augment``, ``min_valid``, ``min_crops`` and ``labels_layer``: see
    :func:`~fastsam_geo.dataset.build_dataset`. ``keep``: the epoch whose weights are written, ``best``
    on the validation crops or ``last`` (when continuing a model trained on the same rasters with
    another seed, some validation crops were its training crops, and ``best`` favours the first epoch).
    ``tta``: the views of each tile fused when the threshold is calibrated at the end, as you will
    extract (:func:`~fastsam_geo.calibrate.calibrate_conf`; default: extract's). ``lr0`` and
    ``freeze``: see :func:`ultralytics_args` (both are stored in the output's metadata when given).

    ``output`` (a ``.pt``) is never one of the inputs (rasters, labels, ``base``) and replaces an
    existing file only with ``overwrite``; the model is written to a staging file beside it and
    moved into place at the end. Labels without a polygon on the rasters are refused before
    anything is written (:func:`check_labels`).
    """
    out = Path(output)
    check_tta(tta)
    sizes = {"epochs": epochs, "imgsz": imgsz, "batch": batch, "workers": workers}
    check_train_options(**sizes, hours=time_hours, gsd=gsd, min_valid=min_valid, lr0=lr0)
    if min_crops and not augment:
        raise FastSAMGeoError(
            f"--min-crops {min_crops} adds sensor copies of a raster's crops: it needs --augment; add it, "
            "or leave out --min-crops."
        )
    _check_train_output(out, rasters, labels, base, overwrite)  # in seconds, before torch is imported
    check_labels(rasters, labels, labels_layer)
    from fastsam_geo.engine_torch import set_torch_threads

    os.environ.setdefault("YOLO_OFFLINE", "1")
    set_torch_threads(threads)
    model = load_base(base)
    check_freeze(freeze, len(model.model.model), base)  # before the dataset: a bad --freeze costs seconds
    work = Path(work_dir) if work_dir else out.with_suffix("").parent / "train_work"
    with output_lock(out), removed_on_failure(work):  # one writer: a second train to the same -o is told at once
        ds = build_dataset(
            rasters,
            labels,
            work / "dataset",
            crop=imgsz,
            seed=seed,
            gsd=gsd,
            augment=augment,
            min_valid=min_valid,
            min_crops=min_crops,
            labels_layer=labels_layer,
        )
        if ds.instances == 0:
            raise FastSAMGeoError(
                f"{label_name(per_raster(labels, len(rasters))[0])}: {ds.images} training crops but no building "
                "larger than 12 px at this resolution; give larger footprints or a finer --gsd."
            )
        if time_hours:
            model.add_callback("on_fit_epoch_end", epoch_cap(epochs))
        t0 = time.perf_counter()
        model.train(
            **ultralytics_args(
                ds,
                work,
                epochs=epochs,
                imgsz=imgsz,
                batch=batch,
                device=device,
                workers=workers,
                seed=seed,
                time_hours=time_hours,
                lr0=lr0,
                freeze=freeze,
            )
        )
        seconds = time.perf_counter() - t0
        best = Path(model.trainer.best if keep == "best" else model.trainer.last)
        if not best.exists():
            best = Path(model.trainer.last)
        ran = int(model.trainer.epoch) + 1  # the epochs run (with --hours, trainer.epochs is its estimate)
        meta = {"gsd_m": gsd, "imgsz": imgsz, "base": str(base), "epochs": ran}
        meta.update({k: v for k, v in (("lr0", lr0), ("freeze", freeze)) if v})
        per_source, conf, cal = _write_model(
            best, out, meta, ds, rasters, labels, work, batch=batch, device=device, labels_layer=labels_layer, tta=tta
        )
        return TrainResult(
            weights=out,
            seconds=seconds,
            epochs=ran,
            dataset=ds,
            per_source=per_source,
            conf=conf,
            calibration=cal if cal.conf is not None else None,
        )
