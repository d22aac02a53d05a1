"""Fine-tune FastSAM (a YOLOv8-seg model) on GeoTIFFs and building footprints.

``build_dataset`` turns rasters + footprint vectors into a YOLO-seg dataset: crops read
through the same :class:`~fastsam_geo.raster.RasterSource` as inference (same bands, same
stretch), polygons clipped to each crop and written in normalised pixel coordinates
(holes bridged into the exterior ring, as YOLO-seg labels have no holes).
``train`` runs ultralytics on it; the result loads back with ``FastSAMSegmenter``.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import geopandas as gpd
import numpy as np
import rasterio.features
import shapely
from shapely.geometry import MultiPolygon, Polygon
from shapely.geometry.polygon import orient

from fastsam_geo.calibrate import Calibration, calibrate_conf, per_raster
from fastsam_geo.errors import FastSAMGeoError, RasterError
from fastsam_geo.locks import output_lock
from fastsam_geo.output import staged_file
from fastsam_geo.raster import RasterSource
from fastsam_geo.tiling import TileGrid


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


def _read_labels(labels: str | os.PathLike[str] | gpd.GeoDataFrame) -> gpd.GeoDataFrame:
    if isinstance(labels, gpd.GeoDataFrame):
        return labels
    path = Path(labels)
    if not path.exists():
        raise FastSAMGeoError(
            f"{path}: footprint file not found; give a GeoPackage, GeoJSON or Shapefile of building polygons."
        )
    gdf = gpd.read_file(path)
    if gdf.crs is None:
        raise FastSAMGeoError(f"{path}: footprints have no CRS; set one (e.g. ogr2ogr -a_srs EPSG:XXXX).")
    return gdf


def check_labels(
    rasters: Sequence[str | os.PathLike[str]],
    labels: str | os.PathLike[str] | gpd.GeoDataFrame | Sequence[str | os.PathLike[str]],
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
            gdf = _read_labels(lab)
            geoms = gdf.geometry.values
            poly = ~(gdf.geometry.isna().to_numpy() | shapely.is_empty(geoms))
            poly &= np.isin(shapely.get_type_id(geoms), (3, 6))  # Polygon, MultiPolygon
            if len(gdf) and not poly.any():  # an empty file: a raster without buildings (a negative)
                kinds = sorted({str(t) for t in gdf.geometry.geom_type.dropna()}) or ["no geometry"]
                raise FastSAMGeoError(
                    f"{_label_name(lab)}: no building polygons to train on ({len(gdf)} features: "
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
            f"{_label_name(label_list[0])}: no building polygons to train on (the footprints are empty); "
            "give the footprint polygons of these rasters (a raster without buildings may sit beside others)."
        )
    if total == 0:
        raise FastSAMGeoError(
            f"{_label_name(label_list[0])}: none of the footprints lies on the raster(s) "
            f"({'; '.join(seen)}); give the footprints of these rasters, with the right CRS."
        )
    return total


def _label_name(lab: object) -> str:
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
) -> DatasetSummary:
    """Write a YOLO-seg dataset (images/, labels/, data.yaml) from rasters and footprints.

    ``labels`` is one footprint file for all rasters, or one per raster (any CRS: each is
    brought to its raster's). ``gsd`` reads every raster at that ground resolution
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
    for split in ("train", "val"):
        (out / "images" / split).mkdir(parents=True, exist_ok=True)
        (out / "labels" / split).mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    n_img = n_inst = n_val = 0
    cache: dict[int, gpd.GeoDataFrame] = {}
    for r_i, (raster, lab) in enumerate(zip(rasters, label_list, strict=True)):
        if id(lab) not in cache:
            cache[id(lab)] = _read_labels(lab)
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
        raise RasterError("No training crops: every crop was nodata; check the rasters.")
    if n_val == 0:  # ultralytics needs a validation set: move one crop.
        first = sorted((out / "images" / "train").glob("*.png"))[0]
        shutil.move(first, out / "images" / "val" / first.name)
        lab = out / "labels" / "train" / f"{first.stem}.txt"
        shutil.move(lab, out / "labels" / "val" / lab.name)
        n_val = 1
    yaml = out / "data.yaml"
    yaml.write_text(f"path: {out.resolve()}\ntrain: images/train\nval: images/val\nnames:\n  0: building\n")
    return DatasetSummary(data_yaml=yaml, images=n_img, instances=n_inst, val_images=n_val)


def _check_train_output(
    out: Path,
    rasters: Sequence[str | os.PathLike[str]],
    labels: object,
    base: str,
    overwrite: bool,
) -> None:
    """Refuse an output that is not a ``.pt``, is an input or exists without ``overwrite``."""
    from fastsam_geo.output import guard_output

    label_paths = [lab for lab in per_raster(labels, len(rasters)) if isinstance(lab, (str, os.PathLike))]
    guard_output(out, [*rasters, *label_paths, base], overwrite)
    if out.suffix.lower() != ".pt":
        raise FastSAMGeoError(
            f"{out}: train writes a PyTorch checkpoint; give a .pt name (export it to ONNX afterwards)."
        )
    kind = Path(base).suffix.lower()
    if kind not in (".pt", ".yaml", ".yml"):
        raise FastSAMGeoError(
            f"--base {base}: give a .pt checkpoint to fine-tune (e.g. FastSAM-s.pt) or a model yaml "
            "(e.g. yolov8n-seg.yaml)."
        )
    if kind == ".pt" and os.sep in str(base) and not Path(base).is_file():
        raise FastSAMGeoError(f"--base {base}: no such checkpoint; check the path.")


def _write_model(
    best: Path,
    out: Path,
    meta: dict[str, object],
    ds: DatasetSummary,
    rasters: Sequence[str | os.PathLike[str]],
    labels: object,
    work: Path,
    *,
    batch: int,
    device: str,
) -> tuple[list[SourceScore], float | None, Calibration]:
    """Copy the trained weights to ``out`` with their metadata, the per-source validation and
    the calibrated threshold, through a staging file beside ``out``: a failure or Ctrl-C never
    leaves a half-written model there (an earlier ``out`` stays as it was)."""
    from fastsam_geo.modelmeta import write_pt_meta

    gsd = meta["gsd_m"]
    with staged_file(out) as tmp:
        shutil.copyfile(best, tmp)
        imgsz = int(meta["imgsz"])  # type: ignore[call-overload]
        per_source = validate_per_source(tmp, ds, rasters, work, imgsz=imgsz, batch=batch, device=device)
        write_pt_meta(tmp, meta)  # the working resolution first: the calibration reads at it
        # the threshold: the extract pipeline's best object F1 on the training rasters, else (no threshold
        # finds a truth building there) the median of the sources' best-F1 thresholds on their crops
        cal = calibrate_conf(tmp, rasters, labels, gsd=gsd, device=device)  # type: ignore[arg-type]
        conf = cal.conf if cal.conf is not None else calibrated_conf(per_source)
        if conf is not None:
            write_pt_meta(tmp, {"conf": conf})
    return per_source, conf, cal


@dataclass
class SourceScore:
    """Validation of the trained model on the validation crops of one source (one raster)."""

    source: str
    images: int
    instances: int
    precision: float
    recall: float
    map50: float
    map50_95: float
    conf: float | None = None  # the confidence of the best mask F1 on these crops


@dataclass
class TrainResult:
    """Where the trained weights went, how long it took, and the validation of each source."""

    weights: Path
    seconds: float
    epochs: int
    dataset: DatasetSummary
    per_source: list[SourceScore] = field(default_factory=list)
    conf: float | None = None  # the confidence threshold stored in the weights
    calibration: Calibration | None = None  # how it was chosen (None: by calibrated_conf)


def source_names(rasters: Sequence[str | os.PathLike[str]]) -> list[str]:
    """A unique, readable name per raster (its file stem; ``_2``... for repeated stems).

    >>> source_names(["a/x.tif", "b/x.tif", "c/y.tif"])
    ['x', 'x_2', 'y']
    """
    seen: dict[str, int] = {}
    out = []
    for r in rasters:
        stem = Path(r).stem
        seen[stem] = seen.get(stem, 0) + 1
        out.append(stem if seen[stem] == 1 else f"{stem}_{seen[stem]}")
    return out


def validate_per_source(
    weights: str | os.PathLike[str],
    dataset: DatasetSummary,
    rasters: Sequence[str | os.PathLike[str]],
    work: Path,
    *,
    imgsz: int,
    batch: int,
    device: str,
) -> list[SourceScore]:
    """Mask precision, recall, mAP50 and mAP50-95 of ``weights`` on each source's validation crops.

    One ultralytics ``val`` per source, on a data yaml whose ``val`` lists that source's crops
    (:func:`build_dataset` names each crop after its raster: ``<stem>_<index>_<tile>.png``).
    Sources without a validation crop are left out.
    """
    from ultralytics import YOLO

    from fastsam_geo.modelmeta import best_conf

    root = Path(dataset.data_yaml).parent
    model = YOLO(str(weights), task="segment")
    scores = []
    for r_i, (raster, name) in enumerate(zip(rasters, source_names(rasters), strict=True)):
        images = sorted((root / "images" / "val").glob(f"{Path(raster).stem}_{r_i:03d}_*.png"))
        if not images:
            continue
        listing = work / f"val_{r_i:03d}.txt"
        listing.write_text("".join(f"{p.resolve()}\n" for p in images))
        yaml = work / f"val_{r_i:03d}.yaml"
        yaml.write_text(
            f"path: {root.resolve()}\ntrain: images/train\nval: {listing.resolve()}\nnames:\n  0: building\n"
        )
        labels = [root / "labels" / "val" / f"{p.stem}.txt" for p in images]
        instances = sum(len(lab.read_text().splitlines()) for lab in labels if lab.exists())
        m = model.val(
            data=str(yaml),
            imgsz=imgsz,
            batch=batch,
            device=device,
            plots=False,
            verbose=False,
            workers=0,
            project=str((work / "runs").resolve()),
            name=f"val_{r_i:03d}",
            exist_ok=True,
            single_cls=True,
        )
        seg = m.seg
        conf = best_conf(seg.px, seg.f1_curve) if len(getattr(seg, "f1_curve", [])) else None
        scores.append(
            SourceScore(
                name, len(images), instances, float(seg.mp), float(seg.mr), float(seg.map50), float(seg.map), conf
            )
        )
    return scores


def calibrated_conf(per_source: Sequence[SourceScore]) -> float | None:
    """The model's confidence threshold: the median over sources of each source's best-F1 one.

    Each source counts once, however many crops it has (a synthetic town scores its objects
    high, a real orthophoto low: pooling the crops would let the easy source decide). A small
    model trained briefly scores real buildings at 0.1-0.2, where a fixed 0.25 drops most.

    >>> s = [SourceScore("a", 1, 1, 0, 0, 0, 0, conf=c) for c in (0.1, 0.4, 0.12)]
    >>> calibrated_conf(s), calibrated_conf([])
    (0.12, None)
    """
    confs = sorted(sc.conf for sc in per_source if sc.conf is not None)
    if not confs:
        return None
    mid = len(confs) // 2
    return round(confs[mid] if len(confs) % 2 else (confs[mid - 1] + confs[mid]) / 2, 2)


def train(
    rasters: Sequence[str | os.PathLike[str]],
    labels: str | os.PathLike[str] | gpd.GeoDataFrame | Sequence[str | os.PathLike[str]],
    output: str | os.PathLike[str],
    *,
    base: str = "yolov8n-seg.yaml",
    epochs: int = 50,
    imgsz: int = 512,
    batch: int = 8,
    device: str = "cpu",
    workers: int = 2,
    seed: int = 0,
    time_hours: float | None = None,
    work_dir: str | os.PathLike[str] | None = None,
    threads: int | None = None,
    gsd: float | None = None,
    augment: bool = False,
    min_valid: float = 0.05,
    min_crops: int = 0,
    overwrite: bool = False,
) -> TrainResult:
    """Build the dataset, fine-tune ``base`` with ultralytics, copy the best weights to ``output``.

    ``base`` is a FastSAM/YOLOv8-seg checkpoint to fine-tune (``FastSAM-s.pt``) or a model
    yaml to train from scratch (``yolov8n-seg.yaml``; no download needed). ``gsd`` is the
    working ground resolution (metres per pixel) every raster is read at; it is stored in
    the output checkpoint (see :mod:`fastsam_geo.modelmeta`), so ``extract`` reads tiles at
    the same resolution. ``augment``, ``min_valid`` and ``min_crops``: see :func:`build_dataset`.

    ``output`` (a ``.pt``) is never one of the inputs (rasters, labels, ``base``) and replaces an
    existing file only with ``overwrite``; the model is written to a staging file beside it and
    moved into place at the end. Labels without a polygon on the rasters are refused before
    anything is written (:func:`check_labels`).
    """
    out = Path(output)
    _check_train_output(out, rasters, labels, base, overwrite)  # in seconds, before torch is imported
    check_labels(rasters, labels)
    from fastsam_geo.engine_torch import set_torch_threads

    os.environ.setdefault("YOLO_OFFLINE", "1")
    from ultralytics import YOLO

    set_torch_threads(threads)
    with output_lock(out):  # one writer: a second train to the same -o is told at once
        work = Path(work_dir) if work_dir else out.with_suffix("").parent / "train_work"
        ds = build_dataset(
            rasters,
            labels,
            work / "dataset",
            crop=imgsz,
            seed=seed,
            gsd=gsd,
            augment=augment,
            min_valid=min_valid,
            min_crops=min_crops,
        )
        if ds.instances == 0:
            raise FastSAMGeoError(
                f"{_label_name(per_raster(labels, len(rasters))[0])}: {ds.images} training crops but no building "
                "larger than 12 px at this resolution; give larger footprints or a finer --gsd."
            )
        model = YOLO(base, task="segment")
        t0 = time.perf_counter()
        kwargs: dict[str, object] = {
            "data": str(ds.data_yaml),
            "epochs": epochs,
            "imgsz": imgsz,
            "batch": batch,
            "device": device,
            "workers": workers,
            "seed": seed,
            "deterministic": True,
            "plots": False,
            "project": str((work / "runs").resolve()),
            "name": "train",
            "exist_ok": True,
            "single_cls": True,
            "amp": device != "cpu",
            "verbose": False,
            "patience": 0,
            "flipud": 0.5,  # imagery seen from above has no "up": flip both ways (ultralytics: lr only)
        }
        if time_hours:
            kwargs["time"] = time_hours
        model.train(**kwargs)
        seconds = time.perf_counter() - t0
        best = Path(model.trainer.best)
        if not best.exists():
            best = Path(model.trainer.last)
        meta = {"gsd_m": gsd, "imgsz": imgsz, "base": str(base), "epochs": int(model.trainer.epochs)}
        per_source, conf, cal = _write_model(best, out, meta, ds, rasters, labels, work, batch=batch, device=device)
        return TrainResult(
            weights=out,
            seconds=seconds,
            epochs=int(model.trainer.epochs),
            dataset=ds,
            per_source=per_source,
            conf=conf,
            calibration=cal if cal.conf is not None else None,
        )
