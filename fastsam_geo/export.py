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

import contextlib
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from fastsam_geo.errors import DependencyError, OptionError, OutputError, WeightsError
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


def _run_exporter(
    pt: Path, imgsz: int, batch: int | str, opset: int | None, half: bool, device: str, shown: Path | None = None
) -> Path:
    """ultralytics' exporter on ``pt`` (a copy in a scratch folder); the ``.onnx`` it wrote.
    Messages name ``shown``, the file the user gave, never the scratch copy."""
    shown = shown or pt
    try:
        from ultralytics import YOLO
    except ImportError as e:
        raise DependencyError(f'export needs ultralytics and torch ({e}): pip install "fastsam-geo[torch]"') from e
    try:
        model = YOLO(str(pt))
    except Exception as e:
        reason = " ".join(str(e).replace(str(pt), str(shown)).split())[:300]
        raise WeightsError(f"Cannot load model weights {shown}: {reason}") from e
    if model.task != "segment":
        raise WeightsError(f"{shown} holds a {model.task!r} model; export needs a FastSAM / YOLO-seg checkpoint")
    dynamic = batch == "dynamic"
    kwargs: dict[str, Any] = {"format": "onnx", "imgsz": imgsz, "simplify": True, "dynamic": dynamic}
    kwargs.update(batch=1 if dynamic else int(batch), device=device, opset=opset, verbose=False)
    if half:
        kwargs["quantize"] = 16
    try:
        with _quiet_ultralytics():  # its "Predict: yolo predict model=<scratch copy>" names a folder that goes
            out = model.export(**kwargs)
    except (AssertionError, RuntimeError, ValueError) as e:  # torch / onnx refusing the settings
        reason = " ".join(str(e).replace(str(pt), str(shown)).split())[:300]
        raise OutputError(f"{shown}: the ONNX export failed ({reason}); try the default --opset and --batch.") from e
    if not out or not Path(out).is_file():
        raise OutputError(f"ultralytics' ONNX exporter wrote no file for {pt} (is onnx/onnxslim installed?)")
    return Path(out)


@contextlib.contextmanager
def _quiet_ultralytics() -> Iterator[None]:
    """ultralytics' logger at WARNING for the block, unless fastsam-geo logs at DEBUG (``-vv``)."""
    from ultralytics.utils import LOGGER

    level = LOGGER.level
    if not logging.getLogger("fastsam_geo").isEnabledFor(logging.DEBUG):
        LOGGER.setLevel(max(level, logging.WARNING))
    try:
        yield
    finally:
        LOGGER.setLevel(level)


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
    from fastsam_geo.output import guard_output

    src = resolve_weights(pt)
    if src.suffix.lower() != ".pt":
        raise WeightsError(
            f"{src}: export converts a PyTorch .pt checkpoint, and this is a {src.suffix or 'file without extension'}; "
            "give the .pt it came from (an .onnx runs as it is: extract --weights)."
        )
    dst = Path(output).expanduser()
    if dst.suffix.lower() != ".onnx":
        raise OutputError(f"{dst}: the output of export must end in .onnx")
    guard_output(dst, [src], overwrite)
    check_export_options(imgsz, opset)
    batch = parse_batch(batch)
    with tempfile.TemporaryDirectory(prefix=".fastsam-geo-export-", dir=dst.parent) as tmp:
        local = Path(tmp) / (src.stem + ".pt")
        shutil.copyfile(src, local)
        onnx_file = _run_exporter(local, imgsz, batch, opset, half, device, shown=src)
        meta = _export_meta(src, onnx_file, imgsz=imgsz, batch=batch, half=half)
        write_onnx_meta(onnx_file, meta)
        os.replace(onnx_file, dst)
    return meta


#: The model's stride: its input sides are multiples of it.
STRIDE = 32
#: Largest input side export accepts (a 8192 px graph already needs tens of GB to run).
MAX_IMGSZ = 8192
#: The opsets ultralytics' YOLO-seg export can write (it needs 11 or more).
MIN_OPSET = 11


def _max_opset() -> int:
    """The newest opset torch's ONNX exporter writes (20 when torch does not say)."""
    try:
        from torch.onnx import _constants

        return int(getattr(_constants, "ONNX_TORCHSCRIPT_EXPORTER_MAX_OPSET", _constants.ONNX_MAX_OPSET))
    except Exception:
        return 20


def check_export_options(imgsz: object, opset: object) -> None:
    """Refuse, with one line each, an input size that is not a positive multiple of the stride
    (ultralytics would round 100 up to 128 and the report would say 100) and an opset the
    exporter cannot write.

    >>> check_export_options(1024, None)
    >>> check_export_options(100, None)
    Traceback (most recent call last):
    ...
    fastsam_geo.errors.OptionError: --imgsz 100: give a multiple of 32 (the model's stride) from 32 to 8192, e.g. 96...
    """
    if isinstance(imgsz, bool) or not isinstance(imgsz, int) or not STRIDE <= imgsz <= MAX_IMGSZ or imgsz % STRIDE:
        near = ""
        if isinstance(imgsz, int) and STRIDE < imgsz < MAX_IMGSZ:
            near = f", e.g. {imgsz // STRIDE * STRIDE} or {(imgsz // STRIDE + 1) * STRIDE}"
        raise OptionError(
            f"--imgsz {imgsz}: give a multiple of {STRIDE} (the model's stride) from {STRIDE} to {MAX_IMGSZ}"
            f"{near or ', e.g. 1024'}."
        )
    if opset is not None:
        top = _max_opset()
        if isinstance(opset, bool) or not isinstance(opset, int) or not MIN_OPSET <= opset <= top:
            raise OptionError(
                f"--opset {opset}: this exporter writes opsets {MIN_OPSET} to {top}; give one of them, "
                "or leave --opset out for the exporter's choice."
            )


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
    dims = [d.dim_value if d.HasField("dim_value") else None for d in model.graph.input[0].type.tensor_type.shape.dim]
    size = [int(dims[2]), int(dims[3])] if len(dims) == 4 and dims[2] and dims[3] else [imgsz, imgsz]
    meta = dict(_source_meta(src))
    meta.update(
        {
            "format": "fastsam-geo onnx",
            "imgsz": size,  # the graph's own input size (a dynamic graph: the size it was exported at)
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
