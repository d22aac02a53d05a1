"""Score a model on the fixed validation split (weights/prepare_real.py), as a user runs it.

Usage: python weights/eval_split.py WEIGHTS REAL_DIR OUT_DIR [--mode colour|grey|grey16] [-- EXTRACT_ARGS]

For each validation raster in REAL_DIR (banepa_val, kampala_val, rio_val_*, dhaka_val_*) it runs
``fastsam-geo extract`` with CLI defaults (plus EXTRACT_ARGS), then one ``fastsam-geo evaluate``
with a ``--pair`` per raster, and prints the per-source table and the pooled row.

Modes, to see how the model fares on the sensors users have:
- ``colour``: the rasters as they are;
- ``grey``: one band, the luminance (0.299 R + 0.587 G + 0.114 B) in 8 bits, as panchromatic
  imagery delivered in bytes;
- ``grey16``: the same luminance as 16-bit with an 11-bit range (x 8, plus a dark offset of 180),
  as panchromatic satellite imagery arrives.
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


def write_grey(src: Path, out: Path, bits16: bool) -> Path:
    """Write ``src`` as one grey band (8-bit, or 16-bit with an 11-bit range), nodata kept."""
    with rasterio.open(src) as ds:
        rgb = ds.read([1, 2, 3])
        valid = ds.dataset_mask() > 0
        profile = ds.profile.copy()
    grey = luminance(rgb)
    if bits16:
        data, dtype = np.where(valid, grey * 8 + 180, 0).astype(np.uint16), "uint16"
    else:
        data, dtype = np.where(valid, grey, 0).round().astype(np.uint8), "uint8"
    profile.update(count=1, dtype=dtype, nodata=0, photometric="minisblack")
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
    parser.add_argument("--mode", choices=("colour", "grey", "grey16"), default="colour")
    parser.add_argument("extract_args", nargs="*")
    args = parser.parse_args()
    args.out_dir.mkdir(parents=True, exist_ok=True)
    rasters = [p for g in VAL_GLOBS for p in sorted(args.real_dir.glob(g))]
    pairs: list[str] = []
    for raster in rasters:
        truth = raster.with_name(raster.stem + "_buildings.gpkg")
        if args.mode != "colour":
            raster = write_grey(raster, args.out_dir / f"{raster.stem}_{args.mode}.tif", args.mode == "grey16")
        pred = args.out_dir / f"{raster.stem}_pred.gpkg"
        cmd = [*FSG, "-q", "extract", str(raster), str(pred), "--weights", args.weights,
               "--overwrite", "--no-cache", *args.extract_args]
        subprocess.run(cmd, check=True)
        pairs += ["--pair", str(pred), str(truth), str(raster)]
    subprocess.run([*FSG, "evaluate", *pairs], check=True)


if __name__ == "__main__":
    main()
