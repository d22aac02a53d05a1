"""``fastsam-geo export``: a .pt model to ONNX."""

from __future__ import annotations

import time
from pathlib import Path

import click


@click.command(short_help="Export a .pt model to ONNX (runs without torch).")
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
