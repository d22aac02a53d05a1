"""``fastsam-geo export``: a ``.pt`` FastSAM / YOLOv8-seg checkpoint to an ``.onnx`` file.

Runs ultralytics' ONNX exporter (``YOLO(pt).export(format="onnx", simplify=True)``, the graph
slimmed with onnxslim, offline), in a scratch folder so that nothing is written next to the
``.pt``, then records in the file's ``metadata_props["fastsam_geo"]`` (JSON, see
:mod:`fastsam_geo.modelmeta`): input size, batch, opset, half precision, class names, the
source ``.pt``'s sha256 and the model's working ground resolution (``gsd_m``: the ``.pt``'s own,
else :func:`fastsam_geo.modelmeta.default_gsd`; null when unknown). The ``.onnx`` appears in
place only when complete.

Needs the torch extra (``pip install "fastsam-geo[torch]"``); running the ``.onnx`` does not.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from fastsam_geo.errors import DependencyError, OutputError, WeightsError
from fastsam_geo.weights import resolve_weights, sha256_file


def parse_batch(value: str | int) -> int | str:
    """``"dynamic"`` or a positive batch size.

    >>> parse_batch("1"), parse_batch("dynamic"), parse_batch(4)
    (1, 'dynamic', 4)
    """
    if str(value).strip().lower() == "dynamic":
        return "dynamic"
    try:
        n = int(value)
    except ValueError:
        n = 0
    if n < 1:
        raise ValueError(f"--batch {value!r}: give a positive batch size or 'dynamic'")
    return n


def _source_meta(pt: Path) -> dict[str, Any]:
    """The ``.pt``'s own fastsam-geo metadata (``{}`` when it has none or it cannot be read)."""
    from fastsam_geo.modelmeta import read_model_meta

    try:
        return read_model_meta(pt)
    except Exception:  # an official FastSAM checkpoint has no fastsam-geo metadata
        return {}


def _run_exporter(pt: Path, imgsz: int, batch: int | str, opset: int | None, half: bool, device: str) -> Path:
    """ultralytics' exporter on ``pt`` (a copy in a scratch folder); the ``.onnx`` it wrote."""
    try:
        from ultralytics import YOLO
    except ImportError as e:
        raise DependencyError(f'export needs ultralytics and torch ({e}): pip install "fastsam-geo[torch]"') from e
    try:
        model = YOLO(str(pt))
    except Exception as e:
        raise WeightsError(f"Cannot load model weights {pt}: {' '.join(str(e).split())[:300]}") from e
    if model.task != "segment":
        raise WeightsError(f"{pt} holds a {model.task!r} model; export needs a FastSAM / YOLO-seg checkpoint")
    dynamic = batch == "dynamic"
    kwargs: dict[str, Any] = {"format": "onnx", "imgsz": imgsz, "simplify": True, "dynamic": dynamic}
    kwargs.update(batch=1 if dynamic else int(batch), device=device, opset=opset, verbose=False)
    if half:
        kwargs["quantize"] = 16
    out = model.export(**kwargs)
    if not out or not Path(out).is_file():
        raise OutputError(f"ultralytics' ONNX exporter wrote no file for {pt} (is onnx/onnxslim installed?)")
    return Path(out)


def export_onnx(
    pt: str | os.PathLike[str],
    output: str | os.PathLike[str],
    *,
    imgsz: int = 1024,
    batch: int | str = 1,
    opset: int | None = None,
    half: bool = False,
    device: str = "cpu",
    overwrite: bool = False,
) -> dict[str, Any]:
    """Export ``pt`` to the ONNX file ``output``; returns the metadata written into it.

    Raises:
        OutputError: ``output`` exists (without ``overwrite``), is not ``.onnx``, or cannot be written.
        WeightsError: ``pt`` is missing or not a segmentation checkpoint.
        DependencyError: torch / ultralytics are not installed.
    """
    from fastsam_geo.modelmeta import write_onnx_meta

    src = resolve_weights(pt)
    dst = Path(output).expanduser()
    if dst.suffix.lower() != ".onnx":
        raise OutputError(f"{dst}: the output of export must end in .onnx")
    if dst.exists() and not overwrite:
        raise OutputError(f"{dst} exists; pass --overwrite to replace it")
    if not dst.parent.is_dir():
        raise OutputError(f"{dst}: folder {dst.parent} does not exist")
    if imgsz < 32:
        raise ValueError(f"--imgsz {imgsz}: must be at least 32")
    batch = parse_batch(batch)
    with tempfile.TemporaryDirectory(prefix=".fastsam-geo-export-", dir=dst.parent) as tmp:
        local = Path(tmp) / (src.stem + ".pt")
        shutil.copyfile(src, local)
        onnx_file = _run_exporter(local, imgsz, batch, opset, half, device)
        meta = _export_meta(src, onnx_file, imgsz=imgsz, batch=batch, half=half)
        write_onnx_meta(onnx_file, meta)
        os.replace(onnx_file, dst)
    return meta


def _export_meta(src: Path, onnx_file: Path, *, imgsz: int, batch: int | str, half: bool) -> dict[str, Any]:
    """What ``export_onnx`` records: the ``.pt``'s own metadata plus the export settings."""
    import ast

    import onnx
    import ultralytics

    from fastsam_geo.modelmeta import default_gsd

    model = onnx.load(os.fspath(onnx_file), load_external_data=False)
    props = {p.key: p.value for p in model.metadata_props}
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
    try:
        names = {str(k): str(v) for k, v in ast.literal_eval(props.get("names", "{}")).items()}
    except (ValueError, SyntaxError):
        names = {}
    meta = dict(_source_meta(src))
    meta.update(
        {
            "format": "fastsam-geo onnx",
            "imgsz": [imgsz, imgsz],
            "batch": batch,
            "opset": opset,
            "half": bool(half),
            "names": names,
            "source": src.name,
            "source_sha256": sha256_file(src),
            "gsd_m": default_gsd(src, meta),
            "ultralytics": ultralytics.__version__,
            "exported": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }
    )
    return meta
