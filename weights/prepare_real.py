"""Cut the real sets in ../shared/data into the fixed train / validation files of the default model.

Usage: python weights/prepare_real.py SHARED_DATA_DIR OUT_DIR

Writes (never into the repository; the data may not be committed):
- banepa_train.tif / banepa_val.tif: the Banepa mosaic cut at column 2048 (the validation part is
  the eastern 512 px strip, one column of the original 512 px chips, 20 % of the area), with the
  OSM footprints clipped to each part (banepa_*_buildings.gpkg);
- kampala_train.tif / kampala_val.tif: the 112 Kampala tiles stitched into two sparse mosaics
  (an internal mask marks the missing tiles). Validation = the eastern edge of the main cluster, 24 tiles (tile
  x 1238457-1238459); footprints clipped to the tiles present;
- rio_train_*.tif / rio_val_*.tif: SpaceNet Rio chips img50-53, 55, 57-59 for training, img54 and img56 for
  validation, with footprints vectorized from their building masks (touching buildings fused);
- dhaka_train_*.tif / dhaka_val_*.tif: the 8 Dhaka tiles, OAM-393761-226416-19 and -226417-19 held out for
  validation, each with the OSM footprints clipped to it.

The split is fixed: every figure in weights/MODEL_CARD.md uses it.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import geopandas as gpd
import numpy as np
import rasterio
import rasterio.features
import rasterio.merge
import shapely
from rasterio.windows import Window

BANEPA_SPLIT_COL = 2048
KAMPALA_VAL_X = range(1238457, 1238460)
RIO_VAL = ("img54", "img56")
DHAKA_VAL = ("OAM-393761-226416-19", "OAM-393761-226417-19")


def _write_window(src_path: Path, window: Window, out: Path) -> None:
    with rasterio.open(src_path) as src:
        profile = src.profile | {
            "width": int(window.width),
            "height": int(window.height),
            "transform": src.window_transform(window),
            "compress": "deflate",
            "photometric": "rgb",
            "tiled": True,
            "blockxsize": 256,
            "blockysize": 256,
        }
        profile.pop("jpeg_quality", None)
        with rasterio.open(out, "w", **profile) as dst:
            dst.write(src.read(window=window))


def _clip_labels(labels: gpd.GeoDataFrame, raster: Path, out: Path, footprint: object = None) -> int:
    with rasterio.open(raster) as src:
        area = footprint if footprint is not None else shapely.box(*src.bounds)
        gdf = labels.to_crs(src.crs)
        gdf["geometry"] = shapely.make_valid(gdf.geometry.values)
    keep = gdf[gdf.intersects(area)].copy()
    keep["geometry"] = keep.intersection(area)
    keep = keep[~keep.is_empty]
    keep.to_file(out, driver="GPKG", layer="buildings")
    return len(keep)


def banepa(shared: Path, out: Path) -> None:
    src = shared / "real" / "banepa" / "banepa_west.tif"
    labels = gpd.read_file(shared / "real" / "banepa" / "banepa_west_buildings.gpkg")
    with rasterio.open(src) as ds:
        w, h = ds.width, ds.height
    parts = {"train": Window(0, 0, BANEPA_SPLIT_COL, h), "val": Window(BANEPA_SPLIT_COL, 0, w - BANEPA_SPLIT_COL, h)}
    for name, win in parts.items():
        tif = out / f"banepa_{name}.tif"
        _write_window(src, win, tif)
        n = _clip_labels(labels, tif, out / f"banepa_{name}_buildings.gpkg")
        print(f"{tif.name}: {int(win.width)} x {int(win.height)} px, {n} buildings")


def _stitch(tiles: list[Path], out: Path) -> object:
    """Tiles -> one GeoTIFF with an internal mask where no tile is; returns the tiles' union."""
    data, transform = rasterio.merge.merge([str(t) for t in tiles], nodata=0)
    with rasterio.open(tiles[0]) as first:
        crs = first.crs
    cover = np.zeros(data.shape[1:], bool)
    footprint = []
    for t in tiles:
        with rasterio.open(t) as ds:
            win = rasterio.windows.from_bounds(*ds.bounds, transform=transform).round_offsets().round_lengths()
            cover[win.row_off : win.row_off + win.height, win.col_off : win.col_off + win.width] = True
            footprint.append(shapely.box(*ds.bounds))
    profile = {
        "driver": "GTiff",
        "width": data.shape[2],
        "height": data.shape[1],
        "count": 3,
        "dtype": "uint8",
        "crs": crs,
        "transform": transform,
        "compress": "deflate",
        "tiled": True,
        "blockxsize": 256,
        "blockysize": 256,
        "photometric": "rgb",
    }
    with rasterio.Env(GDAL_TIFF_INTERNAL_MASK=True), rasterio.open(out, "w", **profile) as dst:
        dst.write(data)
        dst.write_mask(cover.astype(np.uint8) * 255)
    return shapely.union_all(footprint)


def kampala(shared: Path, out: Path) -> None:
    root = shared / "real" / "kampala"
    labels = gpd.read_file(root / "kampala_buildings.gpkg")
    tiles = sorted((root / "tiles").glob("*.tif"))
    val = [t for t in tiles if int(t.stem.split("_")[1]) in KAMPALA_VAL_X]
    train = [t for t in tiles if t not in val]
    for name, part in (("train", train), ("val", val)):
        tif = out / f"kampala_{name}.tif"
        footprint = _stitch(part, tif)
        n = _clip_labels(labels, tif, out / f"kampala_{name}_buildings.gpkg", footprint)
        print(f"{tif.name}: {len(part)} tiles, {n} buildings")


def rio(shared: Path, out: Path) -> None:
    root = shared / "spacenet_rio"
    for img in sorted((root / "images").glob("*.tif")):
        name = "val" if img.stem.endswith(RIO_VAL) else "train"
        tif = out / f"rio_{name}_{img.stem.split('_')[-1]}.tif"
        shutil.copyfile(img, tif)
        with rasterio.open(root / "building_masks" / img.name) as m:
            mask = m.read(1) > 0
            shapes = rasterio.features.shapes(mask.astype(np.uint8), mask=mask, transform=m.transform)
            geoms = [shapely.geometry.shape(g) for g, _ in shapes]
            crs = m.crs
        gpd.GeoDataFrame(geometry=geoms, crs=crs).to_file(
            tif.with_name(tif.stem + "_buildings.gpkg"), layer="buildings"
        )
        print(f"{tif.name}: {len(geoms)} footprints (fused where buildings touch)")


def dhaka(shared: Path, out: Path) -> None:
    root = shared / "real" / "dhaka"
    labels = gpd.read_file(root / "dhaka_buildings.gpkg")
    for img in sorted((root / "tiles").glob("*.tif")):
        name = "val" if img.stem in DHAKA_VAL else "train"
        tif = out / f"dhaka_{name}_{img.stem}.tif"
        shutil.copyfile(img, tif)
        n = _clip_labels(labels, tif, tif.with_name(tif.stem + "_buildings.gpkg"))
        print(f"{tif.name}: {n} buildings")


def main() -> None:
    shared, out = Path(sys.argv[1]), Path(sys.argv[2])
    out.mkdir(parents=True, exist_ok=True)
    banepa(shared, out)
    kampala(shared, out)
    rio(shared, out)
    dhaka(shared, out)


if __name__ == "__main__":
    main()
