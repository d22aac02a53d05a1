"""Pixel precision/recall of the default model on the 10 real SpaceNet Rio chips in ../shared (not committed).

Run: YOLO_OFFLINE=1 .venv/bin/python benchmarks/spacenet_pixels.py
"""

import glob
import os
import tempfile

import geopandas as gpd
import numpy as np
import rasterio
import rasterio.features

from fastsam_geo.pipeline import extract_buildings
from fastsam_geo.segment import FastSAMSegmenter

seg = FastSAMSegmenter()
tp = fp = fn = 0
d = tempfile.mkdtemp()
for img in sorted(glob.glob("/work/shared/data/spacenet_rio/images/*.tif")):
    out = os.path.join(d, os.path.basename(img) + ".gpkg")
    extract_buildings(img, out, segmenter=seg, overwrite=True)
    pred = gpd.read_file(out, layer="buildings")
    with rasterio.open(img.replace("images", "building_masks")) as m:
        truth = m.read(1) > 0
        p = (
            rasterio.features.rasterize(list(pred.geometry), out_shape=truth.shape, transform=m.transform).astype(bool)
            if len(pred)
            else np.zeros_like(truth)
        )
    tp += (p & truth).sum()
    fp += (p & ~truth).sum()
    fn += (~p & truth).sum()
P = tp / (tp + fp) if tp + fp else 0
R = tp / (tp + fn)
print(f"pixel precision {P:.3f} recall {R:.3f} F1 {2 * P * R / (P + R) if P + R else 0:.3f}")
