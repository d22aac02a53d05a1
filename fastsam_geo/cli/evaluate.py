"""``fastsam-geo evaluate``: predicted footprints scored against the truth."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import click

log = logging.getLogger("fastsam_geo")


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
@click.option(
    "--tile-size",
    default=None,
    type=int,
    help="Tile size PRED was extracted with, for the seam score (default: the one PRED records, else 1024).",
)
@click.option(
    "--overlap",
    default=None,
    type=int,
    help="Tile overlap in pixels, for the seam score (default: the one PRED records, else tile size / 8).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the scores as JSON.")
@click.option("--truth-layer", default=None, help="Layer of TRUTH to score against (a file of several layers).")
@click.option("--pred-layer", default=None, help="Layer of PRED to score (default: its only layer, or 'buildings').")
def evaluate(
    pred: Path | None,
    truth: Path | None,
    iou_threshold: float,
    raster: Path | None,
    pairs: tuple[tuple[Path, Path, Path], ...],
    tile_size: int | None,
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
    found: list[tuple[Path, Any]] = []
    args = (iou_threshold, tile_size, overlap, pred_layer, truth_layer)
    if pred is not None and truth is not None:
        if raster is None:
            layers = {"pred_layer": pred_layer, "truth_layer": truth_layer}
            found.append((pred, run_eval(pred, truth, iou_threshold=iou_threshold, **layers)))
        else:
            found.append((raster, _score_on_raster(pred, truth, raster, *args)))
    for p, t, r in pairs:
        found.append((r, _score_on_raster(p, t, r, *args)))
    sources = list(zip(_source_names([path for path, _ in found]), [s for _, s in found], strict=True))
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


def _source_names(paths: list[Path]) -> list[str]:
    """A unique name per source: the file's stem when no other source has it, else the path as
    given; never ``all`` (the pooled entry), a path given twice numbered.

    >>> _source_names([Path("a/r.tif"), Path("b/r.tif"), Path("c.tif"), Path("all.tif")])
    ['a/r.tif', 'b/r.tif', 'c', 'all.tif']
    >>> _source_names([Path("r.tif"), Path("r.tif")])
    ['r.tif', 'r.tif #2']
    """
    stems = [p.stem for p in paths]
    names: list[str] = []
    taken = {"all", "all (pooled)"}
    for path, stem in zip(paths, stems, strict=True):
        name = stem if stems.count(stem) == 1 and stem not in taken else str(path)
        base, k = name, 1
        while name in taken:
            k += 1
            name = f"{base} #{k}"
        taken.add(name)
        names.append(name)
    return names


def _score_on_raster(
    pred: Path,
    truth: Path,
    raster: Path,
    iou: float,
    tile_size: int | None,
    overlap: int | None,
    pred_layer: str | None = None,
    truth_layer: str | None = None,
) -> Any:
    """Scores of one source on its raster, seams from the grid the prediction was made on."""
    from fastsam_geo.evaluate import evaluate_on_raster, seam_lines
    from fastsam_geo.raster import RasterSource
    from fastsam_geo.tiling import TileGrid

    meta = _prediction_meta(pred)
    tile_size, overlap = _seam_tiling(pred, meta, tile_size, overlap)
    gsd = float(meta["gsd_m"]) if _number(meta.get("gsd_m")) else None
    with RasterSource(raster, gsd=gsd) as src:
        grid = TileGrid(src.info.width, src.info.height, tile_size, overlap, src.info.transform)
    layers = {"pred_layer": pred_layer, "truth_layer": truth_layer}
    return evaluate_on_raster(pred, truth, raster, iou_threshold=iou, seams=seam_lines(grid), **layers)


def _prediction_meta(pred: Path) -> dict[str, str]:
    """The run metadata of a fastsam-geo GeoPackage (working gsd, tile size, overlap), else empty."""
    try:
        from fastsam_geo.output import read_run_tables

        return read_run_tables(pred)[0]
    except Exception:  # another tool's file, or an older fastsam-geo output: the raster's own grid
        return {}


def _number(value: str | None) -> float | None:
    """``value`` as a positive number, else None (missing, empty, not a number).

    >>> _number("256"), _number(""), _number(None), _number("x")
    (256.0, None, None, None)
    """
    try:
        number = float(value) if value else None
    except ValueError:
        return None
    return number if number is not None and number > 0 else None


def _seam_tiling(pred: Path, meta: dict[str, str], tile_size: int | None, overlap: int | None) -> tuple[int, int]:
    """``(tile size, overlap)`` of the seams: as given, else as PRED records them (``meta``), else
    1024 and an eighth of it; a warning on stderr when the given ones differ from the recorded."""
    from fastsam_geo.validate import check_tiling

    from .common import _default_overlap

    recorded = _number(meta.get("tile_size"))
    rec_tile = int(recorded) if recorded else None
    rec_overlap = _number(meta.get("overlap"))
    given = (tile_size, overlap)
    tile = tile_size if tile_size is not None else rec_tile or 1024
    if overlap is None:
        overlap = int(rec_overlap or 0) if rec_tile == tile else _default_overlap(tile)
    check_tiling(tile, overlap)
    if rec_tile and given != (None, None) and (tile, overlap) != (rec_tile, int(rec_overlap or 0)):
        log.warning(
            "Warning: %s was extracted with --tile-size %d --overlap %d; the seam score uses --tile-size %d "
            "--overlap %d as given, not the seams the prediction was cut at.",
            pred,
            rec_tile,
            int(rec_overlap or 0),
            tile,
            overlap,
        )
    return tile, int(overlap)


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
