"""``fastsam-geo evaluate``: predicted footprints scored against the truth."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from .common import _checked_overlap


@click.command(short_help="Score predicted footprints against the truth (F1, pixel F1, seam score).")
@click.argument("pred", required=False, type=click.Path(dir_okay=False, path_type=Path))
@click.argument("truth", required=False, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--iou", "iou_threshold", default=0.5, show_default=True, help="IoU for a match (SpaceNet: 0.5).")
@click.option(
    "--raster",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="The raster PRED came from: only truth inside its valid-data footprint counts, pixel F1 is "
    "scored on its grid, and with --tile-size/--overlap it gives the tile seams for the seam score.",
)
@click.option(
    "--pair",
    "pairs",
    nargs=3,
    multiple=True,
    type=click.Path(dir_okay=False, path_type=Path),
    metavar="PRED TRUTH RASTER",
    help="One source to score (repeatable): a per-source table and the pooled scores.",
)
@click.option("--tile-size", default=1024, show_default=True)
@click.option("--overlap", default=None, type=int, help="Tile overlap in pixels (default: tile size / 8).")
@click.option("--json", "as_json", is_flag=True, help="Print the scores as JSON.")
@click.option("--truth-layer", default=None, help="Layer of TRUTH to score against (a file of several layers).")
@click.option("--pred-layer", default=None, help="Layer of PRED to score (default: its only layer, or 'buildings').")
def evaluate(
    pred: Path | None,
    truth: Path | None,
    iou_threshold: float,
    raster: Path | None,
    pairs: tuple[tuple[Path, Path, Path], ...],
    tile_size: int,
    overlap: int | None,
    as_json: bool,
    truth_layer: str | None,
    pred_layer: str | None,
) -> None:
    """Building F1 of PRED against TRUTH (SpaceNet rule: one-to-one matches at IoU >= 0.5),
    precision, recall, mean IoU, and the seam score (share of truth buildings crossing a
    tile seam that come out as exactly one polygon; needs --raster). With --raster only
    the truth buildings on the raster's valid pixels count (at least half their area), and
    pixel precision/recall/F1 are added. Several sources: repeat --pair PRED TRUTH RASTER.

    \b
    Examples:
      fastsam-geo evaluate buildings.gpkg truth.gpkg --raster ortho.tif
      fastsam-geo evaluate --pair a.gpkg osm.gpkg a.tif --pair b.gpkg osm.gpkg b.tif
    """
    from fastsam_geo.evaluate import evaluate as run_eval
    from fastsam_geo.evaluate import pooled
    from fastsam_geo.validate import check_fraction

    check_fraction(iou_threshold, "--iou", 0.5)  # before any footprint is read: a bad value costs nothing
    if (pred is None) != (truth is None):
        raise click.UsageError("give both PRED and TRUTH, or --pair PRED TRUTH RASTER.")
    if pred is None and not pairs:
        raise click.UsageError("give PRED and TRUTH, or one or more --pair PRED TRUTH RASTER.")
    if raster is not None and pred is None:
        raise click.UsageError("--raster goes with PRED and TRUTH; use --pair PRED TRUTH RASTER for several.")
    sources: list[tuple[str, Any]] = []
    if pred is not None and truth is not None:
        if raster is None:
            p_in, t_in = _layer_of(pred, "prediction", pred_layer), _layer_of(truth, "truth", truth_layer)
            sources.append((pred.stem, run_eval(p_in, t_in, iou_threshold=iou_threshold)))
        else:
            args = (iou_threshold, tile_size, overlap, pred_layer, truth_layer)
            sources.append((raster.stem, _score_on_raster(pred, truth, raster, *args)))
    for p, t, r in pairs:
        args = (iou_threshold, tile_size, overlap, pred_layer, truth_layer)
        sources.append((r.stem, _score_on_raster(p, t, r, *args)))
    if len(sources) == 1:
        scores = sources[0][1]
        if as_json:
            click.echo(json.dumps(scores.as_dict(), indent=2))
            return
        seam = "n/a"
        if scores.seam_score is not None:
            seam = f"{scores.seam_score:.3f} ({scores.seam_single}/{scores.seam_total})"
            if scores.away_score is not None:
                seam += f" (away from seams {scores.away_score:.3f}, {scores.away_single}/{scores.away_total})"
        pixel = "" if scores.pixel_f1 is None else f"  pixel F1 {scores.pixel_f1:.3f}"
        outside = f"  ({scores.truth_outside} truth outside the raster)" if scores.truth_outside else ""
        click.echo(
            f"F1 {scores.f1:.3f}  precision {scores.precision:.3f}  recall {scores.recall:.3f}  "
            f"mean IoU {scores.mean_iou:.3f}  TP {scores.tp} FP {scores.fp} FN {scores.fn}  seam score {seam}"
            f"  merged {scores.merged} split {scores.split} missed {scores.missed} unmapped {scores.unmapped}"
            f"{pixel}{outside}"
        )
        return
    total = pooled([s for _, s in sources])
    if as_json:
        click.echo(json.dumps({**{n: s.as_dict() for n, s in sources}, "all": total.as_dict()}, indent=2))
        return
    _print_table([*sources, ("all (pooled)", total)])


def _layer_of(path: Path, role: str, layer: str | None) -> Any:
    """``path`` itself, or its layer ``layer`` read (and checked) as footprints."""
    if layer is None:
        return path
    from fastsam_geo.evaluate import load_footprints

    return load_footprints(path, role, layer)


def _score_on_raster(
    pred: Path,
    truth: Path,
    raster: Path,
    iou: float,
    tile_size: int,
    overlap: int | None,
    pred_layer: str | None = None,
    truth_layer: str | None = None,
) -> Any:
    """Scores of one source on its raster, seams from the grid the prediction was made on."""
    from fastsam_geo.evaluate import evaluate_on_raster, seam_lines
    from fastsam_geo.raster import RasterSource
    from fastsam_geo.tiling import TileGrid

    overlap = _checked_overlap(tile_size, overlap)
    with RasterSource(raster, gsd=_prediction_gsd(pred)) as src:
        grid = TileGrid(src.info.width, src.info.height, tile_size, overlap, src.info.transform)
    p_in, t_in = _layer_of(pred, "prediction", pred_layer), _layer_of(truth, "truth", truth_layer)
    return evaluate_on_raster(p_in, t_in, raster, iou_threshold=iou, seams=seam_lines(grid))


def _prediction_gsd(pred: Path) -> float | None:
    """The working gsd a fastsam-geo GeoPackage was extracted at (its metadata), else None."""
    try:
        from fastsam_geo.output import read_run_tables

        meta = read_run_tables(pred)[0]
        return float(meta["gsd_m"]) if meta.get("gsd_m") else None
    except Exception:  # another tool's file, or an older fastsam-geo output: the raster's own grid
        return None


def _print_table(rows: list[tuple[str, Any]]) -> None:
    w = max(22, *(len(name) for name, _ in rows))
    head = f"{'source':<{w}} {'truth':>6} {'TP':>5} {'FP':>5} {'FN':>5} {'prec':>6} {'recall':>6} {'F1':>6} "
    kinds = f"{'merged':>6} {'split':>5} {'missed':>6} {'unmapped':>8}"
    click.echo(head + f"{'pixelF1':>7} {'seam':>6} {'away':>6} {'mIoU':>5} " + kinds)
    for name, s in rows:
        pix = "-" if s.pixel_f1 is None else f"{s.pixel_f1:.3f}"
        seam = "-" if s.seam_score is None else f"{s.seam_score:.3f}"
        away = "-" if s.seam_score is None or s.away_score is None else f"{s.away_score:.3f}"
        click.echo(
            f"{name:<{w}} {s.tp + s.fn:>6} {s.tp:>5} {s.fp:>5} {s.fn:>5} {s.precision:>6.3f} {s.recall:>6.3f} "
            f"{s.f1:>6.3f} {pix:>7} {seam:>6} {away:>6} {s.mean_iou:>5.3f} "
            f"{s.merged:>6} {s.split:>5} {s.missed:>6} {s.unmapped:>8}"
        )
