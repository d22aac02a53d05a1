"""The options several commands share (extract and prompt: :func:`_model_options`, in groups),
and turning their values into checked values (prompts, bands, -o/--output)."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from fastsam_geo.errors import FastSAMGeoError
from fastsam_geo.tta import DEFAULT_TTA

from .common import _default_overlap


def _floats(text: str, n: tuple[int, ...], what: str) -> list[float]:
    try:
        vals = [float(v) for v in text.replace(" ", "").split(",")]
    except ValueError:
        raise click.BadParameter(f"{text!r}: {what} must be comma-separated numbers", param_hint=what) from None
    if len(vals) not in n:
        raise click.BadParameter(f"{text!r}: {what} takes {' or '.join(map(str, n))} numbers", param_hint=what)
    if what in ("--point", "--box"):
        from fastsam_geo.validate import check_finite

        try:
            check_finite(vals, what, text)
        except FastSAMGeoError as exc:
            raise click.BadParameter(str(exc), param_hint=what) from None
    if what == "--bands" and not all(v.is_integer() and v >= 1 for v in vals):
        raise click.BadParameter(f"{text!r}: --bands takes band numbers from 1, e.g. --bands 4,3,2", param_hint=what)
    return vals


class _Gsd(click.ParamType):
    """``--gsd METRES|native``: a ground resolution in metres per pixel, or no resampling."""

    name = "METRES|native"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        from fastsam_geo.modelmeta import parse_gsd

        try:
            return parse_gsd(value)
        except ValueError:
            self.fail(f"{value!r} is not a ground resolution: give metres per pixel (e.g. 0.3) or 'native'.")


_GSD_HELP = (
    "Working ground resolution in metres per pixel: tiles are read resampled to it "
    "(default: the model's, stored in its weights; 'native': the raster's own)."
)
_LABELS_LAYER_HELP = (
    "The layer to read from each --labels file (default: its only layer, else `buildings`; "
    "a file of several other layers is refused with their names)."
)


def _default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "fastsam-geo" / "masks"


def _weights_options() -> list[Callable[..., Any]]:
    """The model and where it runs."""
    return [
        click.option(
            "-w",
            "--weights",
            default=None,
            help="FastSAM weights, .pt or .onnx (the engine: --engine); default: weights/ or $FASTSAM_GEO_WEIGHTS.",
        ),
        click.option(
            "--engine",
            type=click.Choice(["auto", "onnx", "torch"]),
            default="auto",
            show_default=True,
            help="auto: a .pt's ONNX twin beside it runs on ONNX Runtime when installed; onnx; torch.",
        ),
        click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda, cuda:0, mps."),
        click.option(
            "--batch-size",
            default=None,
            type=int,
            help="Tiles per forward pass (default: 1 on the CPU, where batching is slower; 4 on a GPU).",
        ),
    ]


def _tiling_options() -> list[Callable[..., Any]]:
    """How the rasters are read: tiles, bands, stretch, resolution, CRS."""
    return [
        click.option(
            "--tile-size", default=1024, show_default=True, help="Tile size in pixels (also the inference size)."
        ),
        click.option(
            "--overlap", default=None, type=int, help="Tile overlap in pixels (default: tile size / 8, 128 for 1024)."
        ),
        click.option(
            "--bands", default=None, help="Band numbers read as RGB, e.g. 4,3,2 (default: colour interpretation)."
        ),
        click.option(
            "--stretch",
            type=click.Choice(["auto", "none", "percentile"]),
            default="auto",
            show_default=True,
            help="auto: 8-bit as is, other dtypes stretched with global 2-98 % percentiles.",
        ),
        click.option("--gsd", type=_Gsd(), default=None, help=_GSD_HELP),
        click.option(
            "--assign-crs",
            default=None,
            metavar="CRS",
            help="The rasters' CRS (e.g. EPSG:32633), as gdal_translate -a_srs: for rasters without one.",
        ),
    ]


def _tta_option(help_extra: str = "") -> Callable[..., Any]:
    """``--tta``: the views of each tile fused (``help_extra`` says what for, in a command that is not extract)."""
    return click.option(
        "--tta",
        type=int,
        default=DEFAULT_TTA,
        show_default=True,
        help=help_extra + "Views of each tile whose objects are fused: 8, 4 or 2 flips and quarter turns "
        "(more buildings found, fewer neighbours merged); 12: the 8 and four flips 1.6x coarser, "
        "which add large roofs. N times the inference; 1: off, the fastest.",
    )


def _threshold_options() -> list[Callable[..., Any]]:
    """The segmenter's thresholds."""
    return [
        click.option(
            "--conf",
            type=float,
            default=None,
            help="Minimum mask confidence (default: the model's, calibrated when it was trained; else 0.25).",
        ),
        click.option("--iou", default=0.7, show_default=True, help="NMS IoU threshold of the segmenter."),
        _tta_option(),
    ]


def _prompt_options() -> list[Callable[..., Any]]:
    """Point, box, file and text prompts."""
    return [
        click.option(
            "--point",
            "points",
            multiple=True,
            metavar="X,Y[,LABEL]",
            help="Point prompt in --prompt-crs; LABEL 1 = building (default), 0 = background. Repeatable.",
        ),
        click.option(
            "--box",
            "boxes",
            multiple=True,
            metavar="XMIN,YMIN,XMAX,YMAX",
            help="Box prompt in --prompt-crs. Repeatable.",
        ),
        click.option(
            "--prompt-crs", default=None, help="CRS of --point/--box (default: the raster's), e.g. EPSG:4326."
        ),
        click.option(
            "--prompts",
            "prompt_file",
            type=click.Path(dir_okay=False, path_type=Path),
            default=None,
            help="Vector file of prompts: points (field 'label') and polygons (used as boxes).",
        ),
        click.option(
            "--prompts-layer",
            default=None,
            help="Layer of --prompts to read (needed when the file holds several layers).",
        ),
        click.option("--text", default=None, help='Text prompt scored with CLIP, e.g. "building".'),
        click.option(
            "--text-threshold", default=None, type=float, help="Keep every mask whose CLIP score is above this."
        ),
        click.option("--top-k", default=None, type=int, help="Keep the k masks with the best CLIP scores."),
        click.option("--clip-model", default="ViT-B-32", show_default=True, help="open_clip model name."),
        click.option("--clip-weights", default=None, help="open_clip checkpoint file or pretrained tag."),
    ]


def _polygon_options() -> list[Callable[..., Any]]:
    """The building filter and the outlines."""
    return [
        click.option("--no-filter", is_flag=True, help="Keep every mask (no building filter) in everything mode."),
        click.option(
            "--min-area",
            default=8.0,
            show_default=True,
            help="Building filter: minimum area in m² (holes in a building smaller than this are filled).",
        ),
        click.option("--max-area", default=20000.0, show_default=True, help="Building filter: maximum area in m²."),
        click.option(
            "--regularize", is_flag=True, help="Square the outlines (right angles; holes kept; bad fits refused)."
        ),
        click.option("--simplify", default=1.0, show_default=True, help="Simplification tolerance in pixels."),
        click.option(
            "--refine/--no-refine",
            default=True,
            show_default=True,
            help="Snap each mask's outline to the image's edges (a guided filter); --no-refine: the model's masks.",
        ),
    ]


def _output_options() -> list[Callable[..., Any]]:
    """The mask cache and the output."""
    return [
        click.option(
            "--cache-dir",
            type=click.Path(file_okay=False, path_type=Path),
            default=None,
            help="Where each tile's everything masks are kept (default: ~/.cache/fastsam-geo/masks).",
        ),
        click.option("--overwrite", is_flag=True, help="Replace OUTPUT if it exists."),
        click.option("--json", "as_json", is_flag=True, help="Print the run summary as JSON on stdout."),
    ]


def _model_options(f: Callable[..., Any]) -> Callable[..., Any]:
    opts = [
        *_weights_options(),
        *_tiling_options(),
        *_threshold_options(),
        *_prompt_options(),
        *_polygon_options(),
        *_output_options(),
    ]
    for opt in reversed(opts):
        f = opt(f)
    return f


def _check_options(kw: dict[str, Any]) -> None:
    """Every option value of extract/prompt, before any file is opened (one line each)."""
    from fastsam_geo.validate import check_areas, check_extract_options

    if kw["overlap"] is None:
        kw["overlap"] = _default_overlap(kw["tile_size"])
    check_extract_options(
        tile_size=kw["tile_size"],
        overlap=kw["overlap"],
        conf=kw["conf"],
        iou=kw["iou"],
        batch_size=kw["batch_size"],
        device=kw["device"],
        simplify_px=kw["simplify"],
        tta=kw["tta"],
    )
    if not kw["no_filter"]:
        check_areas(kw["min_area"], kw["max_area"])
    if kw["text_threshold"] is not None and not -1 <= kw["text_threshold"] <= 1:
        raise click.UsageError(
            f"--text-threshold {kw['text_threshold']}: a CLIP cosine score lies in -1 to 1, e.g. 0.22."
        )
    if kw["top_k"] is not None and kw["top_k"] < 1:
        raise click.UsageError(f"--top-k {kw['top_k']}: keep 1 mask or more.")
    if kw["text"] is not None and not kw["text"].strip():
        raise click.UsageError('--text is empty: give the object to find, e.g. --text "building".')


_OUTPUT_OPTION = click.option(
    "-o",
    "--output",
    "output_opt",
    default=None,
    metavar="OUTPUT",
    help="The output file, instead of the last positional argument (as rio's commands accept).",
)


def _split_output(paths: tuple[str, ...], output_opt: str | None, what: str) -> tuple[list[str], Path]:
    """Inputs and the output from the positional arguments and -o/--output.

    >>> _split_output(("a.tif", "b.gpkg"), None, "INPUTS")
    (['a.tif'], PosixPath('b.gpkg'))
    >>> _split_output(("a.tif", "c.tif"), "b.gpkg", "INPUTS")
    (['a.tif', 'c.tif'], PosixPath('b.gpkg'))
    """
    if output_opt is not None:
        if not paths:
            raise click.UsageError(f"give {what} before -o/--output.")
        return list(paths), Path(output_opt)
    if len(paths) < 2:
        raise click.UsageError(f"give {what} and OUTPUT (or -o OUTPUT), e.g. ortho.tif buildings.gpkg.")
    return list(paths[:-1]), Path(paths[-1])


def _build_prompts(
    points: tuple[str, ...],
    boxes: tuple[str, ...],
    prompt_crs: str | None,
    prompt_file: Path | None,
    text: str | None,
    text_threshold: float | None,
    top_k: int | None,
    prompts_layer: str | None = None,
) -> object:
    if not (points or boxes or prompt_file or text):
        return None
    from fastsam_geo.prompts import BoxPrompt, PointPrompt, Prompts, read_prompt_file

    if prompt_file is not None:
        base = read_prompt_file(prompt_file, layer=prompts_layer)
        pts, bxs, crs = list(base.points), list(base.boxes), base.crs
    else:
        pts, bxs, crs = [], [], prompt_crs
    for p in points:
        v = _floats(p, (2, 3), "--point")
        if len(v) == 3 and v[2] not in (0, 1):
            raise click.BadParameter(f"{p!r}: the label is 1 (building) or 0 (background)", param_hint="--point")
        pts.append(PointPrompt(v[0], v[1], int(v[2]) if len(v) == 3 else 1))
    for b in boxes:
        v = _floats(b, (4,), "--box")
        bxs.append(BoxPrompt(min(v[0], v[2]), min(v[1], v[3]), max(v[0], v[2]), max(v[1], v[3])))
    kw: dict[str, object] = {"points": tuple(pts), "boxes": tuple(bxs), "text": text, "crs": crs}
    if text_threshold is not None:
        kw["text_threshold"] = text_threshold
    if top_k is not None:
        kw["text_top_k"] = top_k
    return Prompts(**kw)
