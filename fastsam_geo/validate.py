"""Check option values before any work starts: one line naming the option and a value that works.

Every check returns nothing or raises :class:`~fastsam_geo.errors.OptionError`, a
``ValueError``: the CLI prints it as one ``Error:`` line (exit 1); the QGIS plugin shows it
in its message bar. :func:`check_extract_options` is called by ``extract_buildings`` itself,
so the Python API refuses the same values as the command line.

Limits chosen here (and why):

- ``tile_size`` >= 64 px: FastSAM downsamples by 32; below 64 px a building no longer fits
  and a 10 000 px raster becomes tens of thousands of tiles.
- ``0 <= overlap < tile_size / 2``: at half a tile or more, every pixel lies in four tiles
  or more and the "core" of a tile (what it owns) vanishes.
- ``conf`` and ``iou`` in [0, 1]: both are probabilities / ratios.
"""

from __future__ import annotations

import math
import numbers
import os
from collections.abc import Iterable

from fastsam_geo.errors import OptionError

MIN_TILE_SIZE = 64
#: The network runs on a whole tile: 8192 px tiles take about 7 GB of input tensors and prototypes
#: per view at float32; a larger one was a numpy "array is too big" traceback, or gigabytes first.
MAX_TILE_SIZE = 8192
DEVICES = ("auto", "cpu", "cuda", "mps")


def _is_int(value: object) -> bool:
    """An integer (numpy's included), not a bool.

    >>> import numpy as np
    >>> _is_int(3), _is_int(np.int64(3)), _is_int(True), _is_int(3.0)
    (True, True, False, False)
    """
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def check_finite(values: Iterable[float], option: str, text: str) -> None:
    """Refuse NaN and infinite coordinates.

    >>> check_finite([1.0, 2.0], "--point", "1,2")
    >>> check_finite([float("nan"), 2.0], "--point", "nan,2")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    fastsam_geo.errors.OptionError: --point 'nan,2': coordinates must be finite numbers, e.g. ...
    """
    if not all(math.isfinite(v) for v in values):
        example = "500120.5,4649880.0" if option == "--point" else "500100,4649800,500200,4649900"
        raise OptionError(f"{option} {text!r}: coordinates must be finite numbers, e.g. {option} {example}.")


def check_tiling(tile_size: object, overlap: object) -> None:
    """Tile size and overlap in pixels.

    >>> check_tiling(1024, 128)
    >>> check_tiling(7, 0)
    Traceback (most recent call last):
    ...
    fastsam_geo.errors.OptionError: --tile-size 7: use at least 64 px (FastSAM's default is 1024).
    >>> check_tiling(256, 128)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    fastsam_geo.errors.OptionError: --overlap 128: use 0 to 127 px with --tile-size 256 (less than half a tile), ...
    >>> check_tiling(10**15, 0)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    fastsam_geo.errors.OptionError: --tile-size 1000000000000000: use at most 8192 px ...
    """
    if not _is_int(tile_size) or tile_size < MIN_TILE_SIZE:  # type: ignore[operator]
        raise OptionError(f"--tile-size {tile_size}: use at least {MIN_TILE_SIZE} px (FastSAM's default is 1024).")
    if tile_size > MAX_TILE_SIZE:  # type: ignore[operator]
        raise OptionError(
            f"--tile-size {tile_size}: use at most {MAX_TILE_SIZE} px (the network runs on a whole tile; "
            "FastSAM's default is 1024)."
        )
    if not _is_int(overlap) or not 0 <= overlap < tile_size / 2:  # type: ignore[operator]
        half = (tile_size + 1) // 2 - 1
        raise OptionError(
            f"--overlap {overlap}: use 0 to {half} px with --tile-size {tile_size} (less than half a tile), "
            f"e.g. --overlap {tile_size // 8}."
        )


def check_workers(workers: int, cores: int | None = None) -> None:
    """``--workers``: 1 to 4 worker processes per core (``cores``: this machine's). More start
    processes that only wait for a core, each with its own model in memory; a huge number hung
    while memory grew (a LocalCluster of that many).

    >>> check_workers(2, cores=2)
    >>> check_workers(99, cores=2)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    fastsam_geo.errors.OptionError: --workers 99: use 1 to 8 (4 per core of this machine's 2); ...
    """
    if cores is None:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    most = 4 * cores
    if not 1 <= workers <= most:
        raise OptionError(
            f"--workers {workers}: use 1 to {most} (4 per core of this machine's {cores}); for more, start a "
            "Dask cluster and pass --scheduler tcp://HOST:8786."
        )


def check_unit(value: float, option: str, default: float) -> None:
    """A probability or a ratio: 0 to 1.

    >>> check_unit(0.25, "--conf", 0.25)
    >>> check_unit(2, "--conf", 0.25)
    Traceback (most recent call last):
    ...
    fastsam_geo.errors.OptionError: --conf 2: use a value from 0 to 1 (default 0.25).
    """
    if not (isinstance(value, (int, float)) and math.isfinite(value) and 0 <= value <= 1):
        raise OptionError(f"{option} {value}: use a value from 0 to 1 (default {default}).")


def check_fraction(value: float, option: str, example: float) -> None:
    """A share or a rate above 0 and at most 1 (NaN refused).

    >>> check_fraction(0.5, "--iou", 0.5)
    >>> check_fraction(float("nan"), "--iou", 0.5)
    Traceback (most recent call last):
    ...
    fastsam_geo.errors.OptionError: --iou nan: use a value above 0 and at most 1, e.g. --iou 0.5.
    """
    if not (isinstance(value, (int, float)) and math.isfinite(value) and 0 < value <= 1):
        raise OptionError(f"{option} {value}: use a value above 0 and at most 1, e.g. {option} {example}.")


def check_positive(value: float | None, option: str, example: float) -> None:
    """None (not given) or a finite number above 0 (NaN refused).

    >>> check_positive(None, "--hours", 1.5), check_positive(0.25, "--hours", 1.5)
    (None, None)
    >>> check_positive(-1, "--hours", 1.5)
    Traceback (most recent call last):
    ...
    fastsam_geo.errors.OptionError: --hours -1: use a number above 0, e.g. --hours 1.5.
    """
    if value is not None and not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
        raise OptionError(f"{option} {value}: use a number above 0, e.g. {option} {example}.")


def check_train_options(
    *,
    epochs: object,
    imgsz: object,
    batch: object,
    workers: object,
    hours: float | None,
    gsd: float | None,
    min_valid: float,
    lr0: float | None,
) -> None:
    """``train``'s numbers, told in one line before the dataset is built (ultralytics raises on
    some only after it, as a traceback, and rounds a crop size up to the stride silently).

    >>> check_train_options(epochs=50, imgsz=512, batch=8, workers=2, hours=None, gsd=0.25, min_valid=0.05, lr0=None)
    >>> check_train_options(epochs=50, imgsz=500, batch=8, workers=2, hours=None, gsd=0.25, min_valid=0.05, lr0=None)
    Traceback (most recent call last):
    ...
    fastsam_geo.errors.OptionError: --imgsz 500: give a crop size that is a multiple of 32 (the model's stride), \
at least 64, e.g. 480 or 512.
    """
    for value, option, least in ((epochs, "--epochs", 1), (batch, "--batch", 1), (workers, "--workers", 0)):
        if not _is_int(value) or value < least:  # type: ignore[operator]
            raise OptionError(f"{option} {value}: use {least} or more.")
    if not _is_int(imgsz) or imgsz < 64 or imgsz % 32:  # type: ignore[operator]
        near = f"{imgsz // 32 * 32} or {(imgsz // 32 + 1) * 32}" if _is_int(imgsz) and imgsz > 64 else "512"  # type: ignore[operator]
        raise OptionError(
            f"--imgsz {imgsz}: give a crop size that is a multiple of 32 (the model's stride), at least 64, "
            f"e.g. {near}."
        )
    check_positive(hours, "--hours", 1.5)
    check_positive(gsd, "--gsd", 0.25)
    check_fraction(min_valid, "--min-valid", 0.05)
    if lr0 is not None:
        check_fraction(lr0, "--lr0", 0.0005)


def check_areas(min_area: float, max_area: float) -> None:
    """Building filter areas in m²: 0 <= min < max.

    >>> check_areas(12, 20000)
    >>> check_areas(500, 10)
    Traceback (most recent call last):
    ...
    fastsam_geo.errors.OptionError: --min-area 500 is larger than --max-area 10: give a minimum below the maximum (m²).
    """
    for v, opt in ((min_area, "--min-area"), (max_area, "--max-area")):
        if not (math.isfinite(v) and v >= 0):
            raise OptionError(f"{opt} {v:g}: use an area of 0 m² or more.")
    if min_area >= max_area:
        raise OptionError(
            f"--min-area {min_area:g} is larger than --max-area {max_area:g}: give a minimum below the maximum (m²)."
        )


def check_device(device: str) -> None:
    """``auto``, ``cpu``, ``cuda``, ``cuda:N`` or ``mps``.

    >>> check_device("cuda:1")
    >>> check_device("tpu")
    Traceback (most recent call last):
    ...
    fastsam_geo.errors.OptionError: --device 'tpu': use auto, cpu, cuda, cuda:N (e.g. cuda:0) or mps.
    """
    d = str(device).lower()
    base, _, num = d.partition(":")
    if d in DEVICES or (base == "cuda" and num.isdigit()):
        return
    raise OptionError(f"--device {device!r}: use auto, cpu, cuda, cuda:N (e.g. cuda:0) or mps.")


def check_extract_options(
    *,
    tile_size: object,
    overlap: object,
    conf: float | None,
    iou: float,
    batch_size: int | None,
    device: str | None,
    simplify_px: float,
    min_area_m2: float | None = None,
    max_area_m2: float | None = None,
    tta: object = 1,
) -> None:
    """All the option checks of an extract run; raises :class:`OptionError` on the first bad one.

    >>> check_extract_options(tile_size=1024, overlap=128, conf=0.25, iou=0.7, batch_size=None,
    ...                       device="auto", simplify_px=1.0)
    """
    check_tiling(tile_size, overlap)
    if conf is not None:  # None: the model's own threshold
        check_unit(conf, "--conf", 0.25)
    check_unit(iou, "--iou", 0.7)
    check_tta(tta)
    if batch_size is not None and (not _is_int(batch_size) or batch_size < 1):
        raise OptionError(f"--batch-size {batch_size}: use 1 or more tiles per forward pass.")
    if isinstance(device, str):  # torch devices and CUDA indexes passed through the API are left to torch
        check_device(device)
    if not (math.isfinite(simplify_px) and simplify_px >= 0):
        raise OptionError(f"--simplify {simplify_px:g}: use a tolerance of 0 px (off) or more, e.g. --simplify 1.")
    if min_area_m2 is not None and max_area_m2 is not None:
        check_areas(min_area_m2, max_area_m2)


def check_tta(tta: object) -> None:
    """A count of views fused per tile (:mod:`fastsam_geo.tta`).

    >>> check_tta(3)
    Traceback (most recent call last):
    ...
    fastsam_geo.errors.OptionError: --tta 3: use 1 (off), 2, 4, 8 or 12 views of each tile, e.g. --tta 12.
    """
    from fastsam_geo.tta import TTA_CHOICES

    if not _is_int(tta) or tta not in TTA_CHOICES:
        raise OptionError(f"--tta {tta}: use 1 (off), 2, 4, 8 or 12 views of each tile, e.g. --tta 12.")


MAX_SCENE_SIZE = 32768


def check_size(size: int, option: str = "--size", minimum: int = 64, maximum: int = MAX_SCENE_SIZE) -> None:
    """A synthetic scene's side in pixels: at least ``minimum``, at most ``maximum``.

    32768 px (a 1 Gpx, roughly 2 GB GeoTIFF) takes about ten minutes to render on one core;
    larger test rasters are better built as sheets under one VRT.

    >>> check_size(0)
    Traceback (most recent call last):
    ...
    fastsam_geo.errors.OptionError: --size 0: use at least 64 px, e.g. --size 2048.
    >>> check_size(999999999)
    Traceback (most recent call last):
    ...
    fastsam_geo.errors.OptionError: --size 999999999: use at most 32768 px (larger: several sheets under one VRT).
    """
    if size < minimum:
        raise OptionError(f"{option} {size}: use at least {minimum} px, e.g. {option} 2048.")
    if size > maximum:
        raise OptionError(
            f"{option} {size}: use at most {maximum} px (larger: several sheets under one VRT)."
        )


def check_run(jobs: Iterable[object], options: object) -> None:
    """The checks of :func:`check_extract_options` on an ``ExtractOptions`` (and each job's own),
    and that no job's output is one of its inputs (the raster, its VRT sources, the weights)."""
    from fastsam_geo.output import refuse_input_as_output
    from fastsam_geo.raster import vrt_sources

    for job in jobs:
        o = getattr(job, "options", None) or options
        t, m, sel = o.tiling, o.model, o.select  # type: ignore[attr-defined]
        bf = sel.building_filter
        check_extract_options(
            tile_size=t.tile_size,
            overlap=t.overlap,
            conf=m.conf,
            iou=m.iou,
            batch_size=m.batch_size,
            device=m.device,
            simplify_px=sel.simplify_px,
            min_area_m2=bf.min_area_m2 if bf.enabled else None,
            max_area_m2=bf.max_area_m2 if bf.enabled else None,
            tta=m.tta,
        )
        raster = job.raster
        refuse_input_as_output(job.output, [raster, m.weights, *vrt_sources(raster)])
