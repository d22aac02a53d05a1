"""``fastsam-geo train``: fine-tune FastSAM on rasters and building footprints."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from .options import _LABELS_LAYER_HELP, _tta_option

if TYPE_CHECKING:
    from fastsam_geo.train import TrainResult


@click.command(short_help="Fine-tune FastSAM on rasters and building footprints.")
@click.argument("rasters", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False))
@click.option("--labels", required=True, multiple=True, help="Footprint vectors (one file, or one per raster).")
@click.option(
    "-o",
    "--output",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Where to write the trained .pt.",
)
@click.option(
    "--base",
    default="yolov8n-seg.yaml",
    show_default=True,
    help="Checkpoint to fine-tune (e.g. FastSAM-s.pt) or a model yaml to train from scratch.",
)
@click.option("--epochs", default=50, show_default=True)
@click.option(
    "--imgsz",
    default=512,
    show_default=True,
    help="Training crop size in pixels (same ground resolution as the rasters).",
)
@click.option("--batch", default=8, show_default=True)
@click.option("--device", default="cpu", show_default=True, help="cpu, cuda, cuda:0, mps.")
@click.option("--workers", default=2, show_default=True, help="Data-loader workers.")
@click.option("--seed", default=0, show_default=True)
@click.option(
    "--hours",
    type=float,
    default=None,
    help="Time budget in hours: ultralytics fits its learning-rate schedule to it; --epochs stays a cap.",
)
@click.option(
    "--gsd",
    type=click.FloatRange(min=0.01, max=100.0),
    default=None,
    help="Working ground resolution in metres per pixel: every raster is read resampled to it, "
    "and it is stored in the model for `extract` (default: each raster's own).",
)
@click.option(
    "--work-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Dataset and run folder (default: beside OUTPUT).",
)
@click.option(
    "--augment/--no-augment",
    default=False,
    show_default=True,
    help="Add one copy of each training crop as another sensor sees it (grey, coarser, radiometry), turned 90 deg.",
)
@click.option("--labels-layer", default=None, help=_LABELS_LAYER_HELP)
@click.option(
    "--min-valid",
    type=click.FloatRange(min=0.0, max=1.0, min_open=True),
    default=0.05,
    show_default=True,
    help="Leave out crops with less than this share of pixels holding data (footprints are clipped to the data).",
)
@click.option(
    "--min-crops",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="With --augment: a raster with fewer training images gets more sensor copies of its crops "
    "until it has this many.",
)
@click.option(
    "--keep",
    type=click.Choice(["best", "last"]),
    default="best",
    show_default=True,
    help="Write the epoch best on the validation crops, or the last one (continuing a model trained on the "
    "same rasters with another --seed: its training crops are among the validation crops).",
)
@click.option(
    "--lr0",
    type=click.FloatRange(min=0.0, max=1.0, min_open=True),
    default=None,
    help="Initial learning rate, with AdamW (default: ultralytics picks the optimiser and its rate, "
    "about 0.002 for a few hundred crops).",
)
@click.option(
    "--freeze",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="Keep the first N layers of --base as they are (10: the backbone of a YOLOv8-seg / FastSAM model): "
    "fewer weights learn from a few footprints.",
)
@_tta_option("For the confidence threshold calibrated at the end, as you will extract. ")
@click.option("--overwrite", is_flag=True, help="Replace --output if it exists (never an input).")
def train(
    rasters: tuple[str, ...],
    labels: tuple[str, ...],
    output: Path,
    base: str,
    epochs: int,
    imgsz: int,
    batch: int,
    device: str,
    workers: int,
    seed: int,
    hours: float | None,
    gsd: float | None,
    work_dir: Path | None,
    augment: bool,
    min_valid: float,
    min_crops: int,
    labels_layer: str | None,
    keep: str,
    tta: int,
    lr0: float | None,
    freeze: int,
    overwrite: bool,
) -> None:
    """Build a YOLO-seg dataset from RASTERS and --labels footprints, fine-tune BASE with
    ultralytics, and write the best weights to --output. The result loads as --weights.

    \b
    Example:
      fastsam-geo train town1.tif town2.tif --labels truth.gpkg -o weights/town.pt --epochs 30
    """
    from fastsam_geo.train import train as run_train

    lab: object = labels[0] if len(labels) == 1 else list(labels)
    result = run_train(
        list(rasters),
        lab,
        output,
        base=base,
        epochs=epochs,
        imgsz=imgsz,
        batch=batch,
        device=device,
        workers=workers,
        seed=seed,
        time_hours=hours,
        work_dir=work_dir,
        gsd=gsd,
        augment=augment,
        min_valid=min_valid,
        min_crops=min_crops,
        labels_layer=labels_layer,
        keep=keep,
        overwrite=overwrite,
        tta=tta,
        lr0=lr0,
        freeze=freeze,
    )
    _report(result)


def _report(result: TrainResult) -> None:
    """What `train` says when it is done: the run, the validation by source, the threshold stored."""
    click.echo(
        f"{result.weights}: {result.epochs} epochs in {result.seconds:.0f} s "
        f"({result.dataset.images} crops, {result.dataset.instances} buildings)",
        err=True,
    )
    if result.per_source:
        head = f"{'validation by source':<24} {'crops':>5} {'bldgs':>6} {'mask P':>7} {'mask R':>7} {'mAP50':>6}"
        click.echo(f"{head} {'conf':>5}")
        for sc in result.per_source:
            conf = "-" if sc.conf is None else f"{sc.conf:.2f}"
            click.echo(
                f"{sc.source[:24]:<24} {sc.images:>5} {sc.instances:>6} {sc.precision:>7.3f} {sc.recall:>7.3f} "
                f"{sc.map50:>6.3f} {conf:>5}"
            )
    if result.calibration is not None:
        click.echo(
            f"extract --tta {result.calibration.tta} on the training rasters by confidence threshold "
            "(mean F1: of the rasters with buildings):"
        )
        click.echo(result.calibration.table())
        click.echo(f"confidence threshold stored in the model (best mean object F1): {result.conf:.2f}")
        click.echo(result.calibration.source_table())
    elif result.conf is not None:
        click.echo(f"confidence threshold stored in the model (median of the sources'): {result.conf:.2f}")
