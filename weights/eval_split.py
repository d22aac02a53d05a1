"""Score a model on the fixed validation split (weights/prepare_real.py), as a user runs it.

Usage: python weights/eval_split.py WEIGHTS REAL_DIR OUT_DIR [--mode MODE] [-- EXTRACT_ARGS]

For each validation raster in REAL_DIR (banepa_val, kampala_val, rio_val_*, dhaka_val_*) it runs
``fastsam-geo extract`` with CLI defaults (plus EXTRACT_ARGS), then one ``fastsam-geo evaluate``
with a ``--pair`` per raster, and prints the per-source table and the pooled row.

Modes, to see how the model fares on the sensors users have:
- ``colour``: the rasters as they are;
- ``grey``: one band, the luminance (0.299 R + 0.587 G + 0.114 B) in 8 bits, as panchromatic
  imagery delivered in bytes;
- ``grey16``: the same luminance as 16-bit with an 11-bit range (x 8, plus a dark offset of 180);
- ``lin11``, ``lin16``, ``refl``: the luminance as linear radiance (``(L / 255) ** 2.2``), as
  panchromatic sensor products arrive: 11-bit in uint16 (0.8 x 2047 + 120), full-range uint16
  (x 60000 + 900) and float32 reflectance (x 0.45 + 0.02, nodata NaN).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import numpy as np
import rasterio

FSG = [sys.executable, "-m", "fastsam_geo"]
VAL_GLOBS = ("banepa_val.tif", "kampala_val.tif", "rio_val_*.tif", "dhaka_val_*.tif")


def luminance(rgb: np.ndarray) -> np.ndarray:
    """Rec. 601 luminance of a (3, H, W) array, as float32.

    >>> luminance(np.array([[[255]], [[255]], [[255]]], dtype=np.uint8)).round(3).tolist()
    [[255.0]]
    """
    r, g, b = (rgb[i].astype(np.float32) for i in range(3))
    return 0.299 * r + 0.587 * g + 0.114 * b


def grey_band(grey: np.ndarray, valid: np.ndarray, mode: str) -> tuple[np.ndarray, float]:
    """Luminance ``grey`` (0-255) as one band of ``mode`` (see the module) and its nodata value.

    >>> grey_band(np.array([[255.0, 0.0]]), np.array([[True, False]]), "lin16")
    (array([[60900,     0]], dtype=uint16), 0)
    """
    linear = (grey / 255.0) ** 2.2
    if mode == "grey16":
        return np.where(valid, grey * 8 + 180, 0).astype(np.uint16), 0
    if mode == "lin11":
        return np.where(valid, linear * 2047 * 0.8 + 120, 0).astype(np.uint16), 0
    if mode == "lin16":
        return np.where(valid, linear * 60000 + 900, 0).astype(np.uint16), 0
    if mode == "refl":
        return np.where(valid, linear * 0.45 + 0.02, np.nan).astype(np.float32), float("nan")
    return np.where(valid, grey, 0).round().astype(np.uint8), 0


def write_grey(src: Path, out: Path, mode: str) -> Path:
    """Write ``src`` as one grey band of ``mode`` (``grey``, ``grey16``, ...), nodata kept."""
    with rasterio.open(src) as ds:
        rgb = ds.read([1, 2, 3])
        valid = ds.dataset_mask() > 0
        profile = ds.profile.copy()
    data, nodata = grey_band(luminance(rgb), valid, mode)
    profile.update(count=1, dtype=data.dtype.name, nodata=nodata, photometric="minisblack")
    profile.pop("compress", None)
    with rasterio.open(out, "w", **profile) as dst:
        dst.write(data, 1)
        dst.colorinterp = [rasterio.enums.ColorInterp.gray]
    return out


def main() -> None:
    """Run extract on each validation raster and print evaluate's per-source and pooled table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("weights")
    parser.add_argument("real_dir", type=Path)
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--mode", choices=("colour", "grey", "grey16", "lin11", "lin16", "refl"), default="colour")
    parser.add_argument("extract_args", nargs="*")
    args = parser.parse_args()
    args.out_dir.mkdir(parents=True, exist_ok=True)
    rasters = [p for g in VAL_GLOBS for p in sorted(args.real_dir.glob(g))]
    pairs: list[str] = []
    for raster in rasters:
        truth = raster.with_name(raster.stem + "_buildings.gpkg")
        if args.mode != "colour":
            raster = write_grey(raster, args.out_dir / f"{raster.stem}_{args.mode}.tif", args.mode)
        pred = args.out_dir / f"{raster.stem}_pred.gpkg"
        cmd = [*FSG, "-q", "extract", str(raster), str(pred), "--weights", args.weights,
               "--overwrite", "--no-cache", *args.extract_args]
        subprocess.run(cmd, check=True)
        pairs += ["--pair", str(pred), str(truth), str(raster)]
    subprocess.run([*FSG, "evaluate", *pairs], check=True)


if __name__ == "__main__":
    main()
