"""Training data: GeoTIFFs and building footprints -> a YOLO-seg dataset.

``build_dataset`` reads crops through the same :class:`~fastsam_geo.raster.RasterSource` as
inference (same bands, same stretch, same working resolution), clips the footprints to each crop
and to its pixels with data, and writes them in normalised pixel coordinates (holes bridged into
the exterior ring, as YOLO-seg labels have no holes), with sensor copies of the training crops
(grey, coarser, radiometrically off) when asked.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import geopandas as gpd
import numpy as np
import rasterio.features
import shapely
from shapely.geometry import MultiPolygon, Polygon
from shapely.geometry.polygon import orient

from fastsam_geo.calibrate import per_raster
from fastsam_geo.errors import FastSAMGeoError, RasterError
from fastsam_geo.raster import RasterSource
from fastsam_geo.tiling import TileGrid

log = logging.getLogger("fastsam_geo")


def bridge_holes(poly: Polygon) -> np.ndarray:
    """One ring for a polygon with holes: each hole joined to the exterior by a zero-width cut.

    YOLO-seg labels are single rings; filled with cv2's rule the cut leaves the hole open.

    >>> from shapely.geometry import box
    >>> ring = bridge_holes(Polygon(box(0, 0, 10, 10).exterior.coords, [box(4, 4, 6, 6).exterior.coords]))
    >>> ring.shape
    (10, 2)
    """
    poly = orient(poly, 1.0)
    ring = np.asarray(poly.exterior.coords)[:-1]
    for hole in poly.interiors:
        h = np.asarray(hole.coords)[:-1]
        d = ((ring[:, None, :] - h[None, :, :]) ** 2).sum(-1)
        i, j = np.unravel_index(int(d.argmin()), d.shape)
        h_loop = np.concatenate([h[j:], h[: j + 1]])
        ring = np.concatenate([ring[: i + 1], h_loop, ring[i:]])
    return ring


SENSOR_VARIANTS = ("grey", "coarse", "radiometry")


def sensor_variant(img: np.ndarray, kind: str, rng: np.random.Generator) -> np.ndarray:
    """A copy of an RGB crop as another sensor would see it: grey, coarser, or radiometrically off.

    ``grey``: one panchromatic band copied to three (as the reader gives a 1-band raster);
    ``coarse``: read at 2-3x coarser ground resolution and back (blurred 0.5 m satellite
    imagery read at a finer working resolution); ``radiometry``: brightness, contrast, gamma
    and haze jitter. The labels stay valid: the geometry does not move.

    >>> rng = np.random.default_rng(0)
    >>> img = np.full((8, 8, 3), (200, 100, 50), np.uint8)
    >>> g = sensor_variant(img, "grey", rng)
    >>> bool((g[..., 0] == g[..., 1]).all() and (g[..., 1] == g[..., 2]).all()), g.shape
    (True, (8, 8, 3))
    >>> sensor_variant(img, "coarse", rng).shape, sensor_variant(img, "radiometry", rng).dtype
    ((8, 8, 3), dtype('uint8'))
    """
    if kind == "grey":
        grey = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)
        return np.repeat(grey[:, :, None], 3, axis=2)
    if kind == "coarse":
        h, w = img.shape[:2]
        f = float(rng.uniform(2.0, 3.0))
        small = cv2.resize(img, (max(1, round(w / f)), max(1, round(h / f))), interpolation=cv2.INTER_AREA)
        return cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)
    if kind == "radiometry":
        x = img.astype(np.float32) / 255.0
        x = x * rng.uniform(0.7, 1.3) + rng.uniform(-0.12, 0.12)  # contrast, brightness
        x = np.clip(x, 0, 1) ** rng.uniform(0.6, 1.6)  # gamma
        haze = rng.uniform(0.0, 0.3)
        x = x * (1 - haze) + haze * rng.uniform(0.6, 0.9)  # a bright veil
        return (np.clip(x, 0, 1) * 255 + 0.5).astype(np.uint8)
    raise ValueError(f"unknown sensor variant {kind!r}; one of {', '.join(SENSOR_VARIANTS)}")


def rotate_ring(ring: np.ndarray, k: int) -> np.ndarray:
    """Normalised (x, y) label coordinates of a square image turned by ``np.rot90(img, k)``.

    >>> rotate_ring(np.array([[0.25, 0.0]]), 1).tolist()
    [[0.0, 0.75]]
    """
    out = np.asarray(ring, np.float64).copy()
    for _ in range(k % 4):
        out = np.stack([out[:, 1], 1.0 - out[:, 0]], axis=1)
    return out


def pad_to(img: np.ndarray, size: int) -> np.ndarray:
    """``img`` padded with black to at least ``size`` x ``size`` (right and bottom).

    Ultralytics stretches every training image to a square; a small crop padded first keeps
    its ground resolution.

    >>> pad_to(np.ones((3, 5, 3), np.uint8), 4).shape
    (4, 5, 3)
    """
    h, w = img.shape[:2]
    if h >= size and w >= size:
        return img
    out = np.zeros((max(h, size), max(w, size), *img.shape[2:]), img.dtype)
    out[:h, :w] = img
    return out


def _write_crop(out: Path, split: str, name: str, img: np.ndarray, lines: list[str]) -> None:
    cv2.imwrite(str(out / "images" / split / f"{name}.png"), img[:, :, ::-1])
    (out / "labels" / split / f"{name}.txt").write_text("\n".join(lines) + ("\n" if lines else ""))


def _rotate_line(line: str, k: int) -> str:
    vals = line.split()
    ring = rotate_ring(np.array(vals[1:], np.float64).reshape(-1, 2), k)
    return vals[0] + " " + " ".join(f"{v:.6f}" for v in ring.ravel())


@dataclass
class DatasetSummary:
    """What :func:`build_dataset` wrote."""

    data_yaml: Path
    images: int
    instances: int
    val_images: int


def _read_labels(labels: str | os.PathLike[str] | gpd.GeoDataFrame, layer: str | None = None) -> gpd.GeoDataFrame:
    """A footprint file's ``layer``, else its only layer, else its ``buildings`` layer; a file of
    several other layers is refused with their names (never its first layer, silently)."""
    if isinstance(labels, gpd.GeoDataFrame):
        return repaired(labels, "footprints")
    path = Path(labels)
    if not path.exists():
        raise FastSAMGeoError(
            f"{path}: footprint file not found; give a GeoPackage, GeoJSON or Shapefile of building polygons."
        )
    from fastsam_geo.vectorio import VectorFormatError, footprint_layer

    try:
        chosen = footprint_layer(path, layer, "--labels-layer")
    except VectorFormatError as exc:
        raise FastSAMGeoError(str(exc)) from None
    gdf = gpd.read_file(path, layer=chosen) if chosen is not None else gpd.read_file(path)
    if gdf.crs is None:
        raise FastSAMGeoError(f"{path}: footprints have no CRS; set one (e.g. ogr2ogr -a_srs EPSG:XXXX).")
    return repaired(gdf, str(path))


def repaired(gdf: gpd.GeoDataFrame, name: str) -> gpd.GeoDataFrame:
    """``gdf`` with invalid polygons (self-intersecting, a "bow tie") repaired by
    ``shapely.make_valid``, their polygonal parts kept, and a warning saying how many; ``gdf``
    itself when all are valid. Rasterizing or clipping an invalid polygon fails in GEOS.

    >>> bow = Polygon([(0, 0), (10, 10), (10, 0), (0, 10)])
    >>> out = repaired(gpd.GeoDataFrame(geometry=[bow], crs="EPSG:32633"), "t.gpkg")
    >>> bool(out.is_valid.all()), float(out.area.sum())
    (True, 50.0)
    >>> spur = shapely.from_wkt("POLYGON ((0 0, 10 0, 10 10, 0 10, 0 0, 20 5, 30 0, 30 10, 20 5, 0 0))")
    >>> float(repaired(gpd.GeoDataFrame(geometry=[spur], crs="EPSG:32633"), "t.gpkg").area.sum())  # both parts
    150.0
    """
    geoms = gdf.geometry.values
    bad = ~(gdf.geometry.isna().to_numpy() | shapely.is_valid(geoms))
    if not bad.any():
        return gdf
    from fastsam_geo.evalchecks import polygonal

    out = gdf.copy()
    out.loc[bad, out.geometry.name] = [polygonal(g) for g in shapely.make_valid(geoms[bad])]
    if name not in _REPAIRED:  # train reads its labels more than once: say it once
        _REPAIRED.add(name)
        log.warning(
            "Warning: %s: %d invalid footprint polygon(s) (e.g. self-intersecting) repaired with make_valid; "
            "fix them in the file to silence this.",
            name,
            int(bad.sum()),
        )
    return out


_REPAIRED: set[str] = set()


#: Written first into a dataset folder: what :func:`fresh_dataset_dir` may empty.
DATASET_MARK = ".fastsam-geo-dataset"


def fresh_dataset_dir(out: Path) -> None:
    """Empty ``out`` of an earlier dataset (its ``images/``, ``labels/``, ``data.yaml``) and mark it.

    ``train`` builds its dataset in the same ``train_work/dataset`` for every run beside one
    output: crops left by an earlier run (other rasters, another ``--imgsz``) would otherwise be
    trained on, and counted nowhere. Only a folder this function marked (or holding a
    ``data.yaml``, as datasets written before the mark) is emptied; ``images/`` or ``labels/``
    of something else are refused, never deleted.

    >>> import tempfile
    >>> d = Path(tempfile.mkdtemp()) / "dataset"
    >>> fresh_dataset_dir(d); (d / "images").mkdir(); (d / "images" / "old.png").write_bytes(b"")
    0
    >>> fresh_dataset_dir(d); sorted(p.name for p in d.iterdir())
    ['.fastsam-geo-dataset']
    """
    parts = [out / "images", out / "labels", out / "data.yaml"]
    if any(p.exists() for p in parts):
        if not ((out / DATASET_MARK).exists() or (out / "data.yaml").exists()):
            raise FastSAMGeoError(
                f"{out}: holds images/ or labels/ that fastsam-geo did not write; give another --work-dir."
            )
        for p in parts:
            if p.is_dir():
                shutil.rmtree(p)
            elif p.exists():
                p.unlink()
    out.mkdir(parents=True, exist_ok=True)
    (out / DATASET_MARK).touch()


def check_labels(
    rasters: Sequence[str | os.PathLike[str]],
    labels: str | os.PathLike[str] | gpd.GeoDataFrame | Sequence[str | os.PathLike[str]],
    labels_layer: str | None = None,
) -> int:
    """The number of footprint polygons that overlap their raster; refuses (one line, before
    anything is written) footprints without a polygon (points, lines), footprints that are all
    empty (one empty layer beside others is a raster without buildings: a negative) and
    footprints of which none lies on its raster (another place, a wrong CRS): a model trained
    on crops without one building ("9 crops, 0 buildings") is never written.
    """
    label_list = per_raster(labels, len(rasters))
    cache: dict[int, gpd.GeoDataFrame] = {}
    total, seen = 0, []
    for raster, lab in zip(rasters, label_list, strict=True):
        if id(lab) not in cache:
            gdf = _read_labels(lab, labels_layer)
            geoms = gdf.geometry.values
            poly = ~(gdf.geometry.isna().to_numpy() | shapely.is_empty(geoms))
            poly &= np.isin(shapely.get_type_id(geoms), (3, 6))  # Polygon, MultiPolygon
            if len(gdf) and not poly.any():  # an empty file: a raster without buildings (a negative)
                kinds = sorted({str(t) for t in gdf.geometry.geom_type.dropna()}) or ["no geometry"]
                raise FastSAMGeoError(
                    f"{label_name(lab)}: no building polygons to train on ({len(gdf)} features: "
                    f"{', '.join(kinds)}); give footprint polygons (outlines, not points)."
                )
            cache[id(lab)] = gdf[poly]
        with RasterSource(raster) as src:
            box = shapely.box(*src.info.bounds)
            gdf = cache[id(lab)].to_crs(src.info.crs)
        n = int(shapely.intersects(gdf.geometry.values, box).sum())
        total += n
        seen.append(f"{Path(raster).name} {tuple(round(v) for v in src.info.bounds)} {src.info.crs}")
    if total == 0 and all(len(gdf) == 0 for gdf in cache.values()):
        raise FastSAMGeoError(
            f"{label_name(label_list[0])}: no building polygons to train on (the footprints are empty); "
            "give the footprint polygons of these rasters (a raster without buildings may sit beside others)."
        )
    if total == 0:
        raise FastSAMGeoError(
            f"{label_name(label_list[0])}: none of the footprints lies on the raster(s) "
            f"({'; '.join(seen)}); give the footprints of these rasters, with the right CRS."
        )
    return total


def label_name(lab: object) -> str:
    return str(lab) if isinstance(lab, (str, os.PathLike)) else "the footprints"


def _valid_region(nodata: np.ndarray | None) -> Polygon | MultiPolygon | None:
    """The crop's pixels with data as a polygon in pixel coordinates, or None when all have data.

    >>> nd = np.zeros((4, 4), bool); nd[:, 2:] = True
    >>> _valid_region(nd).bounds
    (0.0, 0.0, 2.0, 4.0)
    >>> _valid_region(np.zeros((4, 4), bool)) is None
    True
    """
    if nodata is None or not nodata.any():
        return None
    valid = (~nodata).astype(np.uint8)
    parts = [shapely.geometry.shape(g) for g, v in rasterio.features.shapes(valid, mask=valid.astype(bool)) if v]
    return shapely.union_all(parts) if parts else Polygon()


def _raster_crops(
    raster: str | os.PathLike[str],
    footprints: gpd.GeoDataFrame,
    *,
    crop: int,
    stride: int | None,
    gsd: float | None,
    min_area_px: float,
    min_valid: float,
) -> Iterator[tuple[str, np.ndarray, list[str]]]:
    """(tile id, crop padded to ``crop``, YOLO-seg label lines) for each crop of ``raster`` with at
    least ``min_valid`` of its pixels holding data. Footprints are clipped to the crop and to the
    pixels with data, so that nodata is never labelled a roof."""
    with RasterSource(raster, gsd=gsd) as src:
        geoms = footprints.to_crs(src.info.crs).geometry.values
        tree = shapely.STRtree(geoms)
        step = stride or crop * 3 // 4
        grid = TileGrid(src.info.width, src.info.height, crop, crop - step, src.info.transform)
        for spec in grid:
            img, nodata = src.read(spec.window)
            if nodata is not None and 1.0 - nodata.mean() < min_valid:
                continue
            valid = _valid_region(nodata)
            img = pad_to(img, crop)
            win_box = shapely.box(*grid.window_bounds(spec.index))
            inv = ~spec.transform
            mat = [inv.a, inv.b, inv.d, inv.e, inv.c, inv.f]
            lines = []
            h, w = img.shape[:2]  # normalised by the padded size: padding lies right and below
            for g in shapely.intersection(geoms[tree.query(win_box, predicate="intersects")], win_box):
                g = shapely.affinity.affine_transform(g, mat)
                if valid is not None:
                    g = shapely.intersection(g, valid)
                for part in shapely.get_parts(g):
                    if not isinstance(part, Polygon) or part.area < min_area_px:
                        continue
                    ring = np.clip(bridge_holes(part) / np.array([w, h], np.float64), 0, 1)
                    lines.append("0 " + " ".join(f"{v:.6f}" for v in ring.ravel()))
            yield spec.id, img, lines


def _write_variant(out: Path, name: str, img: np.ndarray, lines: list[str], n: int, rng: np.random.Generator) -> None:
    """Write the ``n``-th sensor copy of a training crop as ``{name}_{kind}`` (the kinds in turn),
    turned by 1-3 quarter turns."""
    kind = SENSOR_VARIANTS[n % len(SENSOR_VARIANTS)]
    k = int(rng.integers(1, 4))
    var = np.ascontiguousarray(np.rot90(sensor_variant(img, kind, rng), k))
    _write_crop(out, "train", f"{name}_{kind}", var, [_rotate_line(ln, k) for ln in lines])


def build_dataset(
    rasters: Sequence[str | os.PathLike[str]],
    labels: str | os.PathLike[str] | gpd.GeoDataFrame | Sequence[str | os.PathLike[str]],
    out_dir: str | os.PathLike[str],
    *,
    crop: int = 512,
    stride: int | None = None,
    val_fraction: float = 0.15,
    seed: int = 0,
    min_area_px: float = 12.0,
    gsd: float | None = None,
    augment: bool = False,
    min_valid: float = 0.05,
    min_crops: int = 0,
    labels_layer: str | None = None,
) -> DatasetSummary:
    """Write a YOLO-seg dataset (images/, labels/, data.yaml) from rasters and footprints.

    ``labels`` is one footprint file for all rasters, or one per raster (any CRS: each is
    brought to its raster's; ``labels_layer`` picks the layer of a file with several).
    ``gsd`` reads every raster at that ground resolution
    (metres per pixel), as ``extract`` does with the trained model. Crops smaller than
    ``crop`` (small rasters) are padded to ``crop`` so that every crop keeps its scale.
    Crops without a building are kept (empty label files): trees, bare soil and roads are
    negatives. Crops with less than ``min_valid`` of their pixels holding data are left out
    (a sparse mosaic keeps its partly covered crops; footprints are clipped to the data).
    ``augment`` adds, for each training crop, one copy as another sensor sees it
    (:func:`sensor_variant`, in turn grey, coarser, radiometrically off), turned by a random
    multiple of 90 degrees; a raster with fewer than ``min_crops`` training images then gets
    more copies of its crops until it has ``min_crops``, so that small rasters are not drowned
    by large ones.
    """
    out = Path(out_dir)
    label_list = per_raster(labels, len(rasters))
    fresh_dataset_dir(out)
    for split in ("train", "val"):
        (out / "images" / split).mkdir(parents=True, exist_ok=True)
        (out / "labels" / split).mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    n_img = n_inst = n_val = 0
    cache: dict[int, gpd.GeoDataFrame] = {}
    for r_i, (raster, lab) in enumerate(zip(rasters, label_list, strict=True)):
        if id(lab) not in cache:
            cache[id(lab)] = _read_labels(lab, labels_layer)
        kept: list[tuple[str, np.ndarray, list[str]]] = []  # training crops, up to min_crops
        n_train = 0
        crops = _raster_crops(
            raster, cache[id(lab)], crop=crop, stride=stride, gsd=gsd, min_area_px=min_area_px, min_valid=min_valid
        )
        for tile_id, img, lines in crops:
            split = "val" if rng.random() < val_fraction else "train"
            name = f"{Path(raster).stem}_{r_i:03d}_{tile_id}"
            _write_crop(out, split, name, img, lines)
            n_img, n_val, n_inst = n_img + 1, n_val + (split == "val"), n_inst + len(lines)
            if augment and split == "train":
                _write_variant(out, name, img, lines, n_img, rng)
                n_img, n_train, n_inst = n_img + 1, n_train + 2, n_inst + len(lines)
                if len(kept) < min_crops:
                    kept.append((name, img, lines))
        for i in range(max(0, min_crops - n_train) if kept else 0):
            name, img, lines = kept[i % len(kept)]
            _write_variant(out, f"{name}_x{i}", img, lines, n_img, rng)
            n_img, n_inst = n_img + 1, n_inst + len(lines)
    if n_img == 0:
        names = ", ".join(str(r) for r in rasters[:3]) + (", ..." if len(rasters) > 3 else "")
        raise RasterError(
            f"{names}: no training crops, every crop was nodata (or under --min-valid {min_valid:g} of data); "
            "check the rasters' nodata value."
        )
    if n_val == 0:  # ultralytics needs a validation set: move one crop.
        first = sorted((out / "images" / "train").glob("*.png"))[0]
        shutil.move(first, out / "images" / "val" / first.name)
        lab = out / "labels" / "train" / f"{first.stem}.txt"
        shutil.move(lab, out / "labels" / "val" / lab.name)
        n_val = 1
    yaml = out / "data.yaml"
    yaml.write_text(f"path: {out.resolve()}\ntrain: images/train\nval: images/val\nnames:\n  0: building\n")
    return DatasetSummary(data_yaml=yaml, images=n_img, instances=n_inst, val_images=n_val)
