"""The ``fastsam-geo`` command line: the only module that prints or shows progress bars."""

from __future__ import annotations

import contextlib
import glob
import json
import logging
import os
import signal
import sqlite3
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import click

from fastsam_geo import __version__
from fastsam_geo.errors import FastSAMGeoError

log = logging.getLogger("fastsam_geo")


def _one_line(text: str) -> str:
    """A message as one line (GDAL and click messages can hold newlines).

    >>> _one_line("a\\n  b")
    'a b'
    """
    return " ".join(str(text).split())


class _Group(click.Group):
    """Every user error is one line on stderr and exit code 1 (a traceback only with -v):
    fastsam-geo errors, click's usage errors and a full disk alike."""

    def invoke(self, ctx: click.Context) -> object:
        from fastsam_geo.errors import describe_os_error

        try:
            return super().invoke(ctx)
        except FastSAMGeoError as exc:
            if ctx.obj and ctx.obj.get("verbose", 0) > 0:
                raise
            click.echo(f"Error: {_one_line(str(exc))}", err=True)
            sys.exit(1)
        except (OSError, sqlite3.Error) as exc:  # e.g. the disk filled up under a library call
            message = describe_os_error(exc)
            if message is None or (ctx.obj and ctx.obj.get("verbose", 0) > 0):
                raise
            click.echo(f"Error: {message}", err=True)
            sys.exit(1)

    def main(self, *args: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        """Click's usage errors (bad values, missing arguments) as one line with exit code 1,
        like every other user error, instead of click's three lines and exit code 2."""
        kwargs["standalone_mode"] = False
        try:
            rv = super().main(*args, **kwargs)
        except click.exceptions.Exit as exc:
            sys.exit(exc.exit_code)
        except click.ClickException as exc:
            hint = ""
            if isinstance(exc, click.UsageError) and exc.ctx is not None and not isinstance(exc, click.BadParameter):
                hint = f" (see `{exc.ctx.command_path} --help`)"
            click.echo(f"Error: {_one_line(exc.format_message())}{hint}", err=True)
            sys.exit(1)
        except click.Abort as exc:
            click.echo("Aborted.", err=True)
            sys.exit(130 if isinstance(exc.__cause__, KeyboardInterrupt) else 1)
        sys.exit(rv if isinstance(rv, int) else 0)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", prog_name="fastsam-geo")
@click.option("-v", "--verbose", count=True, help="More logging (-vv for debug); tracebacks on errors.")
@click.option("-q", "--quiet", is_flag=True, help="Only errors; no progress bar.")
@click.pass_context
def main(ctx: click.Context, verbose: int, quiet: bool) -> None:
    """Building footprints from georeferenced imagery with FastSAM.

    \b
    Examples:
      fastsam-geo sample scene.tif --size 2048 --seed 7
      fastsam-geo train a.tif b.tif --labels footprints.gpkg -o weights/my.pt
    """
    ctx.ensure_object(dict)
    ctx.obj["verbose"] = verbose
    ctx.obj["quiet"] = quiet
    level = logging.WARNING if quiet else (logging.DEBUG if verbose > 1 else logging.INFO)
    root = logging.DEBUG if verbose > 1 else logging.WARNING  # other libraries' INFO stays quiet
    logging.basicConfig(level=root, format="%(message)s", stream=sys.stderr)
    logging.getLogger("fastsam_geo").setLevel(level)


@main.command(short_help="Write a synthetic scene (GeoTIFF + truth GeoPackage).")
@click.argument("output", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--size", default=2048, show_default=True, help="Width and height in pixels.")
@click.option("--seed", default=0, show_default=True, help="Random seed: the same seed gives the same scene.")
@click.option("--pixel-size", default=0.5, show_default=True, help="Ground resolution in metres.")
@click.option("--crs", default="EPSG:32633", show_default=True, help="Projected CRS of the scene.")
@click.option("--density", default=0.7, show_default=True, help="Building density, 0-1.")
@click.option("--overwrite", is_flag=True, help="Replace OUTPUT if it exists.")
def sample(output: Path, size: int, seed: int, pixel_size: float, crs: str, density: float, overwrite: bool) -> None:
    """Write a seeded synthetic aerial scene to OUTPUT and its building footprints to
    OUTPUT_buildings.gpkg (layer "buildings").

    \b
    Example:
      fastsam-geo sample sample_tiles/town.tif --size 1024 --seed 1
    """
    from fastsam_geo.output import guard_output
    from fastsam_geo.validate import check_size

    try:
        import geopandas  # noqa: F401  (the synthetic scene's truth is a GeoDataFrame)
    except ImportError:
        from fastsam_geo.errors import DependencyError
        from fastsam_geo.vectorio import VECTOR_EXTRA

        raise DependencyError(f"fastsam-geo sample needs geopandas: {VECTOR_EXTRA}") from None
    from fastsam_geo.synthetic import write_scene

    check_size(size)
    if not (pixel_size > 0 and pixel_size < 1e6):
        raise click.UsageError(f"--pixel-size {pixel_size}: use a ground resolution above 0 m, e.g. 0.5.")
    if not 0 <= density <= 1:
        raise click.UsageError(f"--density {density}: use a value from 0 to 1, e.g. 0.7.")
    from pyproj import CRS
    from pyproj.exceptions import CRSError

    try:
        if CRS.from_user_input(crs).is_geographic:
            raise click.UsageError(f"--crs {crs}: use a projected CRS in metres, e.g. EPSG:32633.")
    except CRSError:
        raise click.UsageError(f"--crs {crs!r}: not a CRS; give e.g. EPSG:32633.") from None
    if output.suffix.lower() not in (".tif", ".tiff"):
        raise click.UsageError(f"{output}: sample writes a GeoTIFF; give a .tif name.")
    truth = output.with_name(f"{output.stem}_buildings.gpkg")
    guard_output(output, (), overwrite)  # the raster and its truth: neither replaced without --overwrite
    guard_output(truth, (), overwrite)
    scene = write_scene(output, size, seed=seed, pixel_size=pixel_size, crs=crs, density=density)
    click.echo(f"{scene.raster}: {size} x {size} px, {len(scene.truth)} buildings", err=True)


@main.command(short_help="Fine-tune FastSAM on rasters and building footprints.")
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
@click.option("--hours", type=float, default=None, help="Stop after this many hours (ultralytics' time budget).")
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
        overwrite=overwrite,
    )
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
        click.echo("extract on the training rasters by confidence threshold (mean F1: of the rasters with buildings):")
        click.echo(result.calibration.table())
        click.echo(f"confidence threshold stored in the model (best mean object F1): {result.conf:.2f}")
        click.echo(result.calibration.source_table())
    elif result.conf is not None:
        click.echo(f"confidence threshold stored in the model (median of the sources'): {result.conf:.2f}")


@main.command(short_help="Export a .pt model to ONNX (runs without torch).")
@click.argument("model", type=click.Path(dir_okay=False))
@click.argument("output", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--imgsz",
    default=1024,
    show_default=True,
    help="Input size in pixels (square, a multiple of 32); tiles are padded to it, and extract refuses larger tiles.",
)
@click.option("--batch", default="1", show_default=True, help="Batch size of the graph, or 'dynamic' (any batch/size).")
@click.option("--opset", default=None, type=int, help="ONNX opset (default: ultralytics' choice for this torch).")
@click.option("--half", is_flag=True, help="Float16 weights (for GPUs; the CPU runs float32 faster).")
@click.option("--overwrite", is_flag=True, help="Replace OUTPUT if it exists.")
def export(model: str, output: Path, imgsz: int, batch: str, opset: int | None, half: bool, overwrite: bool) -> None:
    """Export the FastSAM / YOLO-seg checkpoint MODEL (.pt) to OUTPUT (.onnx) with ultralytics'
    exporter (onnxslim), and record input size, batch, opset, precision, class names, the
    .pt's sha256 and the working resolution in the file. Needs the torch extra; running the
    .onnx needs only onnxruntime (`pip install fastsam-geo`).

    \b
    Examples:
      fastsam-geo export weights/fastsam-geo-town-n.pt weights/fastsam-geo-town-n.onnx
      fastsam-geo export FastSAM-s.pt fastsam-s-dyn.onnx --batch dynamic --opset 17
    """
    from fastsam_geo.export import export_onnx, parse_batch

    try:
        parsed = parse_batch(batch)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--batch") from None
    t0 = time.perf_counter()
    meta = export_onnx(model, output, imgsz=imgsz, batch=parsed, opset=opset, half=half, overwrite=overwrite)
    click.echo(
        f"{output}: {meta['imgsz'][0]} px, batch {meta['batch']}, opset {meta['opset']}, "
        f"{'float16' if meta['half'] else 'float32'}, gsd_m {meta['gsd_m']} ({time.perf_counter() - t0:.1f} s)",
        err=True,
    )


#: Set by Ctrl-C (SIGINT) during an extract run (:func:`_sigint_latch`).
_INTERRUPTED = threading.Event()


@contextlib.contextmanager
def _sigint_latch() -> Iterator[None]:
    """Ctrl-C raises KeyboardInterrupt as usual *and* is remembered: a KeyboardInterrupt raised while
    Python runs a finalizer (``__del__``, a weakref callback) is printed and dropped, and the run
    would then finish with exit 0; the progress callback raises it again after the next tile."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    _INTERRUPTED.clear()

    def handler(signum: int, frame: Any) -> None:
        _INTERRUPTED.set()
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


@contextlib.contextmanager
def _progress_bar(label: str, enabled: bool) -> Iterator[Callable[[int, int], None]]:
    """A tqdm bar on stderr (tiles done, rate, time left) fed by ``progress(done, total)``;
    silent with -q and when stderr is not a terminal (logs, pipes, CI)."""
    try:
        from tqdm import tqdm
    except ImportError:  # a dependency of the package; an odd install without it just shows no bar
        enabled = False
    bar = None

    def progress(done: int, total: int) -> None:
        nonlocal bar
        if _INTERRUPTED.is_set():  # a Ctrl-C that a finalizer swallowed: the tile is booked, stop now
            raise KeyboardInterrupt
        if not enabled:
            return
        if bar is None:
            bar = tqdm(
                total=total,
                desc=label,
                unit="tile",
                file=sys.stderr,
                disable=None,  # off when stderr is not a TTY
                dynamic_ncols=True,
                leave=True,
            )
        bar.total = total
        bar.update(done - bar.n)

    try:
        yield progress
    finally:
        if bar is not None:
            bar.close()


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


RASTER_SUFFIXES = (".tif", ".tiff", ".vrt", ".jp2", ".img")


def _is_url(item: str) -> bool:
    """True for an http(s) or ftp URL, or a GDAL /vsicurl/ path.

    >>> _is_url("https://example.org/a.tif"), _is_url("/vsicurl/https://e.org/a.tif"), _is_url("a.tif")
    (True, True, False)
    """
    return item.lower().startswith(("http://", "https://", "ftp://", "/vsicurl/"))


def _name(raster: str) -> str:
    """The file name of a path or URL, for messages and layer names.

    >>> _name("https://example.org/data/ortho.tif?x=1"), _name("tiles/a.tif")
    ('ortho.tif', 'a.tif')
    """
    from urllib.parse import urlsplit

    if _is_url(raster):
        return Path(urlsplit(raster.removeprefix("/vsicurl/")).path).name or "raster"
    return Path(raster).name


def _expand_inputs(inputs: list[str]) -> list[str]:
    """Files, URLs, folders (their rasters) and quoted glob patterns, in a stable order.

    A name that exists is taken literally, even with glob characters (``ortho[2023].tif``).
    """
    out: list[str] = []
    for item in inputs:
        if "\x00" in item:
            raise click.BadParameter(f"{item!r}: a path cannot hold a NUL character.", param_hint="INPUTS")
        if _is_url(item):
            out.append(item)  # kept as text: Path() would turn https:// into https:/
            continue
        p = Path(item)
        if not p.exists() and any(ch in item for ch in "*?["):
            matches = sorted(glob.glob(item, recursive=True))
            if not matches:
                raise click.BadParameter(
                    f"{item}: no such file, and as a pattern it matches no file.", param_hint="INPUTS"
                )
            out.extend(matches)
        elif p.is_dir():
            found = sorted(str(f) for f in p.iterdir() if f.suffix.lower() in RASTER_SUFFIXES)
            if not found:
                raise click.BadParameter(
                    f"{item}: the folder holds no raster ({', '.join(RASTER_SUFFIXES)}); give files or a pattern.",
                    param_hint="INPUTS",
                )
            out.extend(found)
        else:
            out.append(item)
    return list(dict.fromkeys(out))


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


def _default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "fastsam-geo" / "masks"


def _model_options(f: Callable[..., Any]) -> Callable[..., Any]:
    opts = [
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
        click.option(
            "--conf",
            type=float,
            default=None,
            help="Minimum mask confidence (default: the model's, calibrated when it was trained; else 0.25).",
        ),
        click.option("--iou", default=0.7, show_default=True, help="NMS IoU threshold of the segmenter."),
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
        click.option("--no-filter", is_flag=True, help="Keep every mask (no building filter) in everything mode."),
        click.option("--min-area", default=12.0, show_default=True, help="Building filter: minimum area in m²."),
        click.option("--max-area", default=20000.0, show_default=True, help="Building filter: maximum area in m²."),
        click.option(
            "--regularize", is_flag=True, help="Square the outlines (right angles; holes kept; bad fits refused)."
        ),
        click.option("--simplify", default=1.0, show_default=True, help="Simplification tolerance in pixels."),
        click.option(
            "--cache-dir",
            type=click.Path(file_okay=False, path_type=Path),
            default=None,
            help="Where each tile's everything masks are kept (default: ~/.cache/fastsam-geo/masks).",
        ),
        click.option("--overwrite", is_flag=True, help="Replace OUTPUT if it exists."),
        click.option("--json", "as_json", is_flag=True, help="Print the run summary as JSON on stdout."),
    ]
    for opt in reversed(opts):
        f = opt(f)
    return f


def _default_overlap(tile_size: object) -> object:
    """An eighth of the tile (128 px for 1024 px tiles), for any tile size.

    >>> _default_overlap(1024), _default_overlap(256)
    (128, 32)
    """
    return tile_size // 8 if isinstance(tile_size, int) else 0


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


def _guard_inputs(inputs: list[str], output: Path, kw: dict[str, Any]) -> None:
    """Refuse an output that is one of the inputs, whatever the flags: the rasters (and a
    VRT's sources), the prompts file, the weights, the CLIP weights."""
    from fastsam_geo.output import refuse_input_as_output

    sources: list[object] = [*inputs, kw["prompt_file"], kw["weights"], kw["clip_weights"]]
    from fastsam_geo.raster import vrt_sources

    for raster in inputs:
        sources.extend(vrt_sources(raster))
    refuse_input_as_output(output, sources)


def _usable_cache_dir(cache_dir: Path | None, cache_only: bool) -> Path | None:
    """The mask cache folder, or None (with one warning) when it cannot be written: an
    optional cache never fails a run. ``prompt`` needs it, so there it is an error."""
    if cache_dir is None:
        return None
    from fastsam_geo.cache import probe_cache_dir

    problem = probe_cache_dir(cache_dir)
    if problem is None:
        return cache_dir
    if cache_only:
        raise click.UsageError(f"--cache-dir {cache_dir}: {problem}; `prompt` reads the masks from there.")
    log.warning("Warning: mask cache %s cannot be used (%s); going on without it.", cache_dir, problem)
    return None


def _run_extract(
    ctx: click.Context,
    inputs: list[str],
    output: Path,
    kw: dict[str, Any],
    *,
    layout: str,
    resume: bool,
    cache_only: bool,
    use_cache: bool,
    workers: int | None = None,
    scheduler: str | None = None,
    mosaic: bool = False,
) -> None:
    from fastsam_geo.locks import output_lock
    from fastsam_geo.output import check_output

    _check_options(kw)
    _guard_inputs(inputs, output, kw)
    check_output(output, overwrite=True)  # a folder, a missing or read-only folder, an unknown extension
    if not resume:
        check_output(output, kw["overwrite"])
    with output_lock(output), _sigint_latch():
        _run_locked(ctx, inputs, output, kw, layout, resume, cache_only, use_cache, workers, scheduler, mosaic)


def _run_locked(
    ctx: click.Context,
    inputs: list[str],
    output: Path,
    kw: dict[str, Any],
    layout: str,
    resume: bool,
    cache_only: bool,
    use_cache: bool,
    workers: int | None,
    scheduler: str | None,
    mosaic: bool,
) -> None:
    """_run_extract while this process holds the output's lock."""
    quiet = ctx.obj.get("quiet", False)
    options, scorer = _extract_options(kw, cache_only=cache_only, use_cache=use_cache)
    client, cluster = _connect(workers, scheduler, quiet, ctx.obj.get("verbose", 0) > 0)
    parts: list[tuple[str, Path]] = []
    vrt = output.with_name(f".{output.name}.mosaic.vrt")
    try:
        if mosaic:
            from fastsam_geo.mosaic import write_vrt

            sheets = write_vrt(inputs, vrt)
            if not quiet:
                click.echo(f"mosaic of {len(sheets)} sheets: {vrt}", err=True)
            jobs = [(vrt, output, sheets)]
        else:
            jobs = [(r, output, ()) for r in inputs]
        summaries = _extract_all(jobs, output, options, kw, scorer, client, parts, resume=resume, quiet=quiet)
        if len(jobs) > 1:
            _assemble(parts, output, layout, kw["overwrite"] or resume)
    except KeyboardInterrupt:
        click.echo(
            f"\nInterrupted. Finished tiles are kept: run the same command with --resume to continue into {output}.",
            err=True,
        )
        sys.exit(130)
    except FastSAMGeoError:
        if len(parts) > 1:  # a bad input: nothing to resume, no .part.gpkg left beside the output
            for _, part in parts:
                part.unlink(missing_ok=True)
        raise
    finally:
        vrt.unlink(missing_ok=True)
        if client is not None:
            client.close()
        if cluster is not None:
            cluster.close()
    if len(jobs) > 1 and not quiet:
        click.echo(f"{output}: {len(parts)} rasters, layout '{layout}'", err=True)
    if kw["as_json"]:
        click.echo(json.dumps([s.as_dict() for s in summaries] if len(jobs) > 1 else summaries[0].as_dict(), indent=2))


def _extract_options(kw: dict[str, Any], *, cache_only: bool, use_cache: bool) -> tuple[Any, Any]:
    """The run's ExtractOptions from the command line, and the CLIP scorer (loaded now) for --text."""
    from fastsam_geo.pipeline import BuildingFilter, build_options

    prompts = _build_prompts(
        kw["points"],
        kw["boxes"],
        kw["prompt_crs"],
        kw["prompt_file"],
        kw["text"],
        kw["text_threshold"],
        kw["top_k"],
        kw["prompts_layer"],
    )
    scorer = None
    if prompts is not None and prompts.text:
        from fastsam_geo.textprompt import ClipScorer, _import_open_clip

        _import_open_clip()  # without the torch extra: one line, before anything runs
        device = kw["device"]
        scorer = ClipScorer(kw["clip_model"], kw["clip_weights"], device="cpu" if device == "auto" else device)
        scorer.load()  # fail now, not after the first tiles' inference
    bands = [int(b) for b in _floats(kw["bands"], (1, 3), "--bands")] if kw["bands"] else None
    cache_dir = (kw["cache_dir"] or _default_cache_dir()) if (use_cache or cache_only) else None
    options = build_options(
        weights=kw["weights"],
        prompts=prompts,  # type: ignore[arg-type]
        tile_size=kw["tile_size"],
        overlap=kw["overlap"],
        bands=bands,
        stretch=kw["stretch"],
        gsd=kw["gsd"],
        device=kw["device"],
        batch_size=kw["batch_size"],
        conf=kw["conf"],
        iou=kw["iou"],
        building_filter=BuildingFilter(
            min_area_m2=kw["min_area"], max_area_m2=kw["max_area"], enabled=not kw["no_filter"]
        ),
        simplify_px=kw["simplify"],
        regularize=kw["regularize"],
        cache_dir=_usable_cache_dir(None if cache_dir is None else Path(cache_dir), cache_only),
        cache_only=cache_only,
        assign_crs=kw["assign_crs"],
        engine=kw["engine"],
    )
    return options, scorer


def _connect(workers: int | None, scheduler: str | None, quiet: bool, verbose: bool) -> tuple[Any, Any]:
    """A Dask client for --workers / --scheduler / $DASK_SCHEDULER_ADDRESS, else (None, None);
    Dask's own logs only with -v."""
    scheduler = scheduler or (None if workers else os.environ.get("DASK_SCHEDULER_ADDRESS"))
    if not workers and not scheduler:
        return None, None
    from fastsam_geo.cluster import connect

    client, cluster = connect(workers=workers, scheduler=scheduler, verbose=verbose)
    if not quiet:
        n = len(client.scheduler_info().get("workers", {}))
        click.echo(f"Dask: {n} workers at {client.scheduler.address}; dashboard {client.dashboard_link}", err=True)
    return client, cluster


def _part_path(output: Path, raster: str, k: int) -> Path:
    """Where raster ``k`` of a multi-raster run is written before assembly (numbered: two
    rasters of the same name in different folders must not share a part).

    >>> _part_path(Path("out/city.gpkg"), "x/a.tif", 1).name
    '.city.gpkg.1.a.part.gpkg'
    """
    return output.with_name(f".{output.name}.{k}.{Path(_name(raster)).stem}.part.gpkg")


def _extract_all(
    jobs: list[tuple[Any, Path, tuple[Any, ...]]],
    output: Path,
    options: Any,
    kw: dict[str, Any],
    scorer: Any,
    client: Any,
    parts: list[tuple[str, Path]],
    *,
    resume: bool,
    quiet: bool,
) -> list[Any]:
    """Run every raster (one call on a Dask cluster: their tiles spread together); returns the
    summaries and fills ``parts`` with (raster, part) pairs. Several rasters go to hidden parts,
    assembled later."""
    from dataclasses import replace

    from fastsam_geo.run import RasterJob, extract_rasters

    single = len(jobs) == 1
    todo: list[RasterJob] = []
    summaries = []
    with contextlib.ExitStack() as bars:
        for k, (raster, _, sheets) in enumerate(jobs):
            target = output if single else _part_path(output, str(raster), k)
            parts.append((str(raster), target))
            if not single and resume and target.exists():
                continue  # finished before the interruption
            overwrite = kw["overwrite"] or (not single and not resume)
            out = replace(options.output, overwrite=overwrite, resume=resume and _has_ledger(target))
            progress = bars.enter_context(_progress_bar(_name(str(raster)), not quiet))
            todo.append(RasterJob(raster, target, progress, sheets, replace(options, output=out)))
        groups = [todo] if client is not None else [[j] for j in todo]
        for group in groups:
            results = extract_rasters(group, options, text_scorer=scorer, client=client)
            for job, summary in zip(group, results, strict=True):
                summaries.append(summary)
                if not quiet:
                    _echo_summary(job.raster, summary)
    return summaries


def _echo_summary(raster: object, summary: Any) -> None:
    click.echo(
        f"{raster}: {summary.buildings} buildings ({summary.seam_merged} joined across seams) from "
        f"{summary.tiles_processed} tiles in {summary.seconds:.1f} s"
        + (f" ({summary.tiles_resumed} resumed)" if summary.tiles_resumed else "")
        + (f"; {summary.tiles_failed} tiles failed: {summary.failures[0]}" if summary.tiles_failed else ""),
        err=True,
    )


def _has_ledger(target: Path) -> bool:
    from fastsam_geo.ledger import ledger_path

    return ledger_path(target).exists()


def _assemble(parts: list[tuple[str, Path]], output: Path, layout: str, overwrite: bool) -> None:
    """One GeoPackage from per-raster parts: a layer per raster, or one merged layer."""
    from fastsam_geo import vectorio
    from fastsam_geo.output import check_output

    check_output(output, overwrite)
    tmp = output.with_name(f".{output.name}.assemble.gpkg")
    if tmp.exists():
        tmp.unlink()
    try:
        if layout == "layers":
            used: set[str] = set()
            for raster, part in parts:
                name = Path(_name(raster)).stem
                while name in used:
                    name += "_"
                used.add(name)
                f = vectorio.read_features(part, layer="buildings")
                vectorio.write_gpkg(tmp, name, f.geometry, f.columns.columns, f.crs)
        else:
            _assemble_merged(parts, tmp)
        os.replace(tmp, output)
    finally:
        if tmp.exists():
            tmp.unlink()
    for _, part in parts:
        part.unlink(missing_ok=True)


def _assemble_merged(parts: list[tuple[str, Path]], tmp: Path) -> None:
    """All parts in one ``buildings`` layer (in the first part's CRS), with a ``raster`` column
    after ``id`` and ids renumbered 1..N."""
    import numpy as np
    import shapely
    from pyproj import Transformer

    from fastsam_geo import vectorio

    feats = [(raster, vectorio.read_features(part, layer="buildings")) for raster, part in parts]
    crs = next((f.crs for _, f in feats if f.crs is not None), None)
    geoms, columns = [], []
    for raster, f in feats:
        g = f.geometry
        if crs is not None and f.crs is not None and not f.crs.equals(crs):
            tr = Transformer.from_crs(f.crs, crs, always_xy=True)
            g = shapely.transform(g, lambda xy, tr=tr: np.column_stack(tr.transform(xy[:, 0], xy[:, 1])))
        cols = dict(f.columns.columns)
        first = list(cols)[:1]
        cols = {**{k: cols[k] for k in first}, "raster": [_name(raster)] * len(f), **cols}
        geoms.append(g)
        columns.append(cols)
    names = list(dict.fromkeys(k for c in columns for k in c))
    merged = {
        k: np.concatenate([vectorio._as_array(c.get(k, [None] * len(g))) for c, g in zip(columns, geoms, strict=True)])
        for k in names
    }
    n = sum(len(g) for g in geoms)
    merged["id"] = np.arange(1, n + 1, dtype=np.int64)
    all_geoms = np.concatenate(geoms) if geoms else np.empty(0, dtype=object)
    schema = {k: _merged_type(k, [c[k] for c in columns if k in c]) for k in names}
    vectorio.write_gpkg(tmp, "buildings", all_geoms, merged, crs, schema=schema)


def _merged_type(name: str, parts: list[object]) -> str:
    """The GeoPackage type of a merged column: the parts' own type when they agree."""
    from fastsam_geo import vectorio

    kinds = {vectorio.column_type(p) for p in parts if len(p)}  # type: ignore[arg-type]
    return kinds.pop() if len(kinds) == 1 else ("INTEGER" if name == "id" else "TEXT")


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


@main.command(short_help="Extract building polygons from rasters.")
@click.argument("paths", nargs=-1, required=True, metavar="INPUTS... OUTPUT")
@_OUTPUT_OPTION
@_model_options
@click.option(
    "--layout",
    type=click.Choice(["layers", "merged"]),
    default="layers",
    show_default=True,
    help="Several rasters: one layer per raster, or one merged layer with a 'raster' column.",
)
@click.option(
    "--resume", is_flag=True, help="Continue an interrupted run into OUTPUT; finished tiles are not computed again."
)
@click.option("--no-cache", is_flag=True, help="Do not keep the everything masks (no re-prompting later).")
@click.option(
    "--mosaic", is_flag=True, help="Treat INPUTS (same CRS, resolution, aligned grids) as one surface (a GDAL VRT)."
)
@click.option("--workers", type=int, default=None, help="Run tiles on a local Dask cluster of N worker processes.")
@click.option(
    "--scheduler",
    default=None,
    metavar="ADDRESS",
    help="Run tiles on the Dask cluster at ADDRESS, e.g. tcp://host:8786 (default: $DASK_SCHEDULER_ADDRESS).",
)
@click.pass_context
def extract(
    ctx: click.Context,
    paths: tuple[str, ...],
    output_opt: str | None,
    layout: str,
    resume: bool,
    no_cache: bool,
    mosaic: bool,
    workers: int | None,
    scheduler: str | None,
    **kw: Any,
) -> None:
    """Extract building polygons from INPUTS (GeoTIFF, COG or VRT files, folders, or quoted
    glob patterns) into OUTPUT (.gpkg, .geojson, .fgb). Several rasters go into one
    GeoPackage: a layer per raster (--layout layers) or one merged layer.

    Without prompts every object is segmented and a building filter keeps the
    building-like ones. Prompts narrow it down: --point/--box in map coordinates, a
    --prompts vector file, or --text scored with CLIP. Each tile's everything masks are
    cached, so `fastsam-geo prompt` can re-select later without inference.

    \b
    Examples:
      fastsam-geo extract ortho.tif buildings.gpkg
      fastsam-geo extract 'tiles/*.tif' city.gpkg --layout merged
      fastsam-geo extract ortho.tif b.gpkg --point 500120.5,4649880.0 --point 500200,4649800,0
      fastsam-geo extract ortho.tif b.gpkg --text building --text-threshold 0.22 --clip-weights clip.pt
      fastsam-geo extract big.tif b.gpkg --resume      # after a crash or Ctrl-C
      fastsam-geo extract 'sheets/*.tif' city.gpkg --mosaic --workers 4
      fastsam-geo extract 'sheets/*.tif' city.gpkg --mosaic --scheduler tcp://head:8786
    """
    if workers is not None and workers < 1:
        raise click.BadParameter("--workers must be 1 or more.", param_hint="--workers")
    inputs, output = _split_output(paths, output_opt, "INPUTS")
    _run_extract(
        ctx,
        _expand_inputs(inputs),
        output,
        kw,
        layout=layout,
        resume=resume,
        cache_only=False,
        use_cache=not no_cache,
        workers=workers,
        scheduler=scheduler,
        mosaic=mosaic,
    )


@main.command(short_help="Re-select buildings with new prompts from the mask cache (no inference).")
@click.argument("paths", nargs=-1, required=True, metavar="RASTER OUTPUT")
@_OUTPUT_OPTION
@_model_options
@click.pass_context
def prompt(ctx: click.Context, paths: tuple[str, ...], output_opt: str | None, **kw: Any) -> None:
    """Apply new prompts to RASTER using the everything masks cached by an earlier
    `fastsam-geo extract` (same weights, --conf, --iou, --bands, --gsd): no model runs, so a new
    click or a new text costs milliseconds per tile. Tiles not in the cache are an error.

    \b
    Examples:
      fastsam-geo extract ortho.tif all.gpkg                     # segments and caches
      fastsam-geo prompt ortho.tif one.gpkg --point 500120.5,4649880.0
      fastsam-geo prompt ortho.tif boxed.gpkg --prompts boxes.gpkg
    """
    if not (kw["points"] or kw["boxes"] or kw["prompt_file"] or kw["text"]):
        raise click.UsageError("give a prompt: --point, --box, --prompts or --text.")
    rasters, output = _split_output(paths, output_opt, "RASTER")
    if len(rasters) != 1:
        raise click.UsageError(f"prompt takes one RASTER, got {len(rasters)}: {' '.join(rasters)}.")
    _run_extract(
        ctx, _expand_inputs(rasters), output, kw, layout="layers", resume=False, cache_only=True, use_cache=True
    )


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


@main.command(short_help="Score predicted footprints against the truth (F1, pixel F1, seam score).")
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
        pixel = "" if scores.pixel_f1 is None else f"  pixel F1 {scores.pixel_f1:.3f}"
        outside = f"  ({scores.truth_outside} truth outside the raster)" if scores.truth_outside else ""
        click.echo(
            f"F1 {scores.f1:.3f}  precision {scores.precision:.3f}  recall {scores.recall:.3f}  "
            f"mean IoU {scores.mean_iou:.3f}  TP {scores.tp} FP {scores.fp} FN {scores.fn}  seam score {seam}"
            f"  merged {scores.merged} split {scores.split}"
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
    from fastsam_geo.validate import check_tiling

    overlap = _default_overlap(tile_size) if overlap is None else overlap
    check_tiling(tile_size, overlap)
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
    head = f"{'source':<22} {'truth':>6} {'TP':>5} {'FP':>5} {'FN':>5} {'prec':>6} {'recall':>6} {'F1':>6} "
    click.echo(head + f"{'pixelF1':>7} {'seam':>6} {'mIoU':>5} {'merged':>6} {'split':>5}")
    for name, s in rows:
        pix = "-" if s.pixel_f1 is None else f"{s.pixel_f1:.3f}"
        seam = "-" if s.seam_score is None else f"{s.seam_score:.3f}"
        click.echo(
            f"{name[:22]:<22} {s.tp + s.fn:>6} {s.tp:>5} {s.fp:>5} {s.fn:>5} {s.precision:>6.3f} "
            f"{s.recall:>6.3f} {s.f1:>6.3f} {pix:>7} {seam:>6} {s.mean_iou:>5.3f} {s.merged:>6} {s.split:>5}"
        )


@main.command(short_help="Choose a model's confidence threshold on labelled rasters.")
@click.argument("weights", type=click.Path(exists=True, dir_okay=False))
@click.argument("rasters", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False))
@click.option("--labels", required=True, multiple=True, help="Footprint vectors (one file, or one per raster).")
@click.option("--gsd", type=_Gsd(), default=None, help=_GSD_HELP)
@click.option("--device", default="cpu", show_default=True, help="cpu, cuda, cuda:0, mps.")
@click.option("--write", is_flag=True, help="Store the chosen threshold in WEIGHTS (.pt or .onnx), for `extract`.")
def calibrate(
    weights: str, rasters: tuple[str, ...], labels: tuple[str, ...], gsd: Any, device: str, write: bool
) -> None:
    """Run `extract` (CLI defaults) on RASTERS at each confidence threshold from 0.08 to 0.4 and
    score each result against --labels (object F1 at IoU 0.5, pixel F1). The threshold with the
    best object F1 averaged over the rasters that have truth buildings (each counts once, and
    each threshold is averaged with its neighbours) is the model's; --write stores it in
    WEIGHTS, so that `extract` without --conf uses it. `train` ends with the same step on its
    rasters.

    \b
    Example:
      fastsam-geo calibrate weights/mine.pt block_a.tif block_b.tif --labels osm.gpkg --write
    """
    from fastsam_geo.calibrate import calibrate_conf, check_store, store_conf

    if len(labels) not in (1, len(rasters)):
        raise click.BadParameter(f"give one --labels file or one per raster ({len(rasters)})", param_hint="--labels")
    if write:
        check_store(weights, [*rasters, *labels])
    cal = calibrate_conf(weights, list(rasters), list(labels) if len(labels) > 1 else labels[0], gsd=gsd, device=device)
    click.echo(cal.table())
    if cal.conf is None:
        raise click.ClickException(
            "no threshold finds any truth building on these rasters (check that --labels overlap them): "
            "nothing to calibrate on."
        )
    click.echo(f"best threshold: {cal.conf:.2f}" + (f" (stored in {weights})" if write else ""))
    click.echo(cal.source_table())
    if write:
        store_conf(weights, cal.conf)


@main.command(short_help="Describe a raster: size, CRS, bands, tiles, device, weights.")
@click.argument("raster")
@click.option("--tile-size", default=1024, show_default=True)
@click.option("--overlap", default=None, type=int, help="Tile overlap in pixels (default: tile size / 8).")
@click.option("-w", "--weights", default=None, help="Weights to resolve (default lookup otherwise).")
@click.option("--gsd", type=_Gsd(), default=None, help=_GSD_HELP)
def info(raster: str, tile_size: int, overlap: int | None, weights: str | None, gsd: Any) -> None:
    """What RASTER is, its ground resolution, how it would be tiled at the model's working
    resolution, and which device and weights would be used.

    \b
    Example:
      fastsam-geo info ortho.tif --tile-size 1024
    """
    from fastsam_geo.modelmeta import default_conf, default_gsd, read_model_meta, working_gsd
    from fastsam_geo.raster import RasterSource
    from fastsam_geo.tiling import TileGrid

    model_gsd, model_conf, w, w_error = None, None, None, ""
    try:
        from fastsam_geo.weights import resolve_weights

        w = resolve_weights(weights)
        meta = read_model_meta(w)
        model_gsd, model_conf = default_gsd(w, meta), default_conf(meta)
    except FastSAMGeoError as exc:
        if weights is not None:  # the file asked for is not a model: say so, never "none stored"
            raise
        w, w_error = None, str(exc)
    from fastsam_geo.validate import check_tiling

    overlap = _default_overlap(tile_size) if overlap is None else overlap
    check_tiling(tile_size, overlap)
    with RasterSource(raster) as src:
        n = src.info
        src.set_gsd(working_gsd(gsd, model_gsd))
        i = src.info
        grid = TileGrid(i.width, i.height, tile_size, overlap, i.transform)
        stretch = (
            "none (8-bit)" if src.stretch is None else f"global percentiles lo={src.stretch.lo} hi={src.stretch.hi}"
        )
        radiometry = getattr(src, "radiometry", "")
    click.echo(f"raster:   {i.path}")
    click.echo(f"size:     {n.width} x {n.height} px, {n.count} band(s) {n.dtype}, RGB from bands {n.bands}")
    click.echo(
        f"crs:      {n.crs.to_string()}  pixel {n.res[0]:g} x {n.res[1]:g}  nodata {n.nodata}  overviews {n.overviews}"
    )
    click.echo(f"ground:   {n.native_gsd_m:.3g} m per pixel (native)")
    click.echo(f"stretch:  {stretch}" + (f" ({radiometry})" if radiometry else ""))
    origin = "--gsd" if gsd is not None else ("the model's" if model_gsd else "none stored in the model")
    working = f"{i.gsd_m:.3g} m per pixel" + (" (resampled)" if i.resampled else " (native, not resampled)")
    click.echo(f"working:  {working}; {origin}" + (f" {model_gsd:g} m" if model_gsd and gsd is None else ""))
    click.echo(f"grid:     {i.width} x {i.height} px, pixel {i.res[0]:.6g} x {i.res[1]:.6g} map units")
    click.echo(f"tiles:    {len(grid)} ({grid.shape[0]} x {grid.shape[1]}) of {tile_size} px, overlap {overlap}")
    click.echo(f"weights:  {w}" if w is not None else f"weights:  not found ({w_error})")
    if model_conf is not None:
        click.echo(f"conf:     {model_conf:g} (the model's confidence threshold; --conf overrides it)")
    try:
        import torch

        dev = "cuda" if torch.cuda.is_available() else ("mps" if torch.backends.mps.is_available() else "cpu")
        click.echo(f"device:   {dev} (torch {torch.__version__}, {torch.get_num_threads()} threads)")
    except ImportError:
        click.echo('device:   torch not installed (.pt weights need: pip install "fastsam-geo[torch]")')
    try:
        import onnxruntime

        providers = ", ".join(onnxruntime.get_available_providers())
        click.echo(f"onnx:     onnxruntime {onnxruntime.__version__} ({providers})")
    except ImportError:
        click.echo("onnx:     onnxruntime not installed (.onnx weights need: pip install onnxruntime)")


from fastsam_geo.worker import worker_command  # noqa: E402

main.add_command(worker_command, name="worker")
