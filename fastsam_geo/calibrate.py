"""Choose a model's confidence threshold with the extract pipeline itself.

The threshold that maximises a detector's own validation F1 (ultralytics' F1 curve, on
single crops) is not the one that maximises the F1 of what ``extract`` writes: the building
filter, mask NMS and the seam merge come after the threshold and change which masks become
polygons. :func:`calibrate_conf` therefore runs ``extract`` on labelled rasters at every
threshold of a grid and scores each result with
:func:`~fastsam_geo.evaluate.evaluate_on_raster` (object F1 at IoU 0.5 and pixel F1).

The model runs once per tile: :class:`ThresholdReplay` keeps each tile's masks found at the
lowest threshold of the grid and hands out, for a higher threshold, the masks that score at
least that much, which is what the model itself returns at that threshold (ultralytics drops
low-confidence detections before its score-ordered NMS, which a lower-scored box cannot
change), up to ``max_det`` detections per tile. With views fused (``tta`` above 1, the
default, as ``extract`` runs) it keeps each view's masks and fuses them at each threshold
(:func:`fastsam_geo.tta.fuse_at`): the threshold chosen is the one for the views you extract
with, not for one view.

The chosen threshold is the one with the best object F1 *averaged over the rasters*: each
raster counts once, however many buildings it holds, so a large easy scene (a synthetic town
whose buildings score high at any threshold) cannot set the threshold for real orthophotos,
whose buildings score lower. The curve is smoothed over neighbouring thresholds first (see
:func:`best_threshold`). The pooled scores are reported too.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fastsam_geo.errors import FastSAMGeoError
from fastsam_geo.evaluate import Footprints, Scores, evaluate_on_raster, load_footprints, pooled
from fastsam_geo.masks import InstanceMasks
from fastsam_geo.segment import Segmenter
from fastsam_geo.tiling import Tile
from fastsam_geo.tta import DEFAULT_TTA, ViewMasks, fuse_at

__all__ = [
    "CONF_GRID",
    "Calibration",
    "ThresholdReplay",
    "best_threshold",
    "calibrate_conf",
    "per_raster",
    "store_conf",
]

CONF_GRID: tuple[float, ...] = (0.08, 0.1, 0.12, 0.15, 0.18, 0.21, 0.25, 0.3, 0.35, 0.4)
"""Thresholds tried by :func:`calibrate_conf`."""


class ThresholdReplay:
    """A :class:`~fastsam_geo.segment.Segmenter` that asks ``segmenter`` once per tile and then
    returns that tile's masks at :attr:`conf`: those scoring at least it or, from a segmenter
    that fuses views (``tta`` above 1), its views' masks fused at it.

    ``segmenter`` must run at a threshold no higher than any :attr:`conf` asked for. Tiles
    are known by their window and shape, so one replayer serves one raster and one grid.
    """

    def __init__(self, segmenter: Segmenter, conf: float = 0.0) -> None:
        self.segmenter = segmenter  # the attribute name run.py and plan.py look through
        self.conf = conf
        self._fused = getattr(segmenter, "tta", 1) > 1 and hasattr(segmenter, "view_masks")
        self._seen: dict[tuple[Any, ...], InstanceMasks | ViewMasks] = {}

    @staticmethod
    def _key(tile: Tile) -> tuple[Any, ...]:
        w = tile.window
        return (int(w.col_off), int(w.row_off), int(w.width), int(w.height), tile.shape)

    def segment(self, tiles: Sequence[Tile]) -> list[InstanceMasks]:
        """One :class:`InstanceMasks` per tile, in the order of ``tiles``."""
        todo = [t for t in tiles if self._key(t) not in self._seen]
        if todo:
            found = self.segmenter.view_masks(todo) if self._fused else self.segmenter.segment(todo)  # type: ignore[attr-defined]
            for tile, masks in zip(todo, found, strict=True):
                self._seen[self._key(tile)] = masks
        out = []
        for tile in tiles:
            seen = self._seen[self._key(tile)]
            if isinstance(seen, ViewMasks):  # fused and finished as segment() does
                out.append(self.segmenter.finish(fuse_at(seen, self.conf), tile))  # type: ignore[attr-defined]
            else:
                out.append(seen.subset(seen.scores >= self.conf))
        return out


def per_raster(labels: Footprints | Sequence[Footprints], n: int) -> list[Footprints]:
    """``n`` footprint layers from one layer (for every raster: a path, a GeoDataFrame) or a
    sequence of ``n``.

    >>> per_raster("osm.gpkg", 2), per_raster(["a.gpkg", "b.gpkg"], 2)
    (['osm.gpkg', 'osm.gpkg'], ['a.gpkg', 'b.gpkg'])
    """
    if isinstance(labels, (str, os.PathLike)) or not isinstance(labels, Sequence):
        return [labels] * n  # type: ignore[list-item]
    if len(labels) != n:
        raise FastSAMGeoError(f"{n} rasters but {len(labels)} label files: give one label file, or one per raster.")
    return list(labels)


def best_threshold(grid: Sequence[float], f1: Sequence[float]) -> float:
    """The threshold of ``grid`` whose neighbourhood scores best: ``f1`` averaged with its
    neighbours on each side (a 3-point moving average; at the ends of the grid, of the two
    points there are), so that one jagged point of a curve measured on small rasters does not
    decide. Of equal ones (to 3 decimals), the highest threshold (fewer, surer polygons).
    An end of the grid counts once: repeating it (edge padding) would make it weigh twice and
    pull the choice to the lowest threshold whenever the curve is flat.

    >>> best_threshold([0.1, 0.15, 0.2, 0.25], [0.40, 0.43, 0.43, 0.38])
    0.15
    >>> best_threshold([0.08, 0.1, 0.12, 0.15, 0.18, 0.21], [0.40, 0.45, 0.40, 0.43, 0.44, 0.41])  # not the spike
    0.18
    >>> best_threshold([0.08, 0.1, 0.12, 0.15, 0.18], [0.431, 0.417, 0.424, 0.436, 0.412])  # flat: not the end
    0.12
    >>> best_threshold([0.1, 0.2], [0.5, 0.3]), best_threshold([0.3], [0.0])
    (0.2, 0.3)
    """
    if len(grid) != len(f1) or not len(grid):
        raise ValueError(f"{len(grid)} thresholds for {len(f1)} scores")
    f = np.asarray(f1, np.float64)
    padded, there = np.pad(f, 1), np.pad(np.ones_like(f), 1)  # each point with the neighbours that exist
    smooth = (padded[:-2] + padded[1:-1] + padded[2:]) / (there[:-2] + there[1:-1] + there[2:])
    rounded = np.round(smooth, 3)
    best = np.flatnonzero(rounded == rounded.max())
    return float(np.asarray(grid, np.float64)[best].max())


@dataclass
class Calibration:
    """What :func:`calibrate_conf` measured: scores per threshold, pooled and per source."""

    conf: float | None
    grid: tuple[float, ...]
    pooled: list[Scores]
    per_source: dict[str, list[Scores]] = field(default_factory=dict)
    tta: int = 1  # the views of each tile fused, as extract --tta

    @property
    def mean_f1(self) -> list[float]:
        """Object F1 averaged over the sources that have truth buildings, per threshold (what
        :attr:`conf` maximises). A source without any scores F1 0 at every threshold: it would
        only lower the mean, the same at each.

        >>> from fastsam_geo.evaluate import scores_from_counts as sc
        >>> by_source = {"a": [sc(3, 0, 0)], "b": [sc(1, 0, 1)], "c": [sc(0, 2, 0)]}  # c: no truth
        >>> Calibration(0.2, (0.2,), [sc(4, 2, 1)], by_source).mean_f1
        [0.8333333333333333]
        """
        scored = [s for s in self.per_source.values() if s and s[0].tp + s[0].fn > 0]
        if not scored:
            return [s.f1 for s in self.pooled]
        return [float(np.mean([s[k].f1 for s in scored])) for k in range(len(self.grid))]

    def table(self) -> str:
        """The pooled scores per threshold, one line each, the chosen one marked.

        >>> from fastsam_geo.evaluate import scores_from_counts
        >>> print(Calibration(0.2, (0.2,), [scores_from_counts(3, 1, 1)]).table())
        conf   mean F1 |   TP   FP   FN pooled F1 pixel F1
        0.20     0.750 |    3    1    1     0.750        - <
        """
        head = f"{'conf':<4} {'mean F1':>9} | {'TP':>4} {'FP':>4} {'FN':>4} {'pooled F1':>9} {'pixel F1':>8}"
        lines = [head]
        for c, m, s in zip(self.grid, self.mean_f1, self.pooled, strict=True):
            pix = "-" if s.pixel_f1 is None else f"{s.pixel_f1:.3f}"
            mark = " <" if self.conf is not None and abs(c - self.conf) < 1e-9 else ""
            lines.append(f"{c:<4.2f} {m:>9.3f} | {s.tp:>4} {s.fp:>4} {s.fn:>4} {s.f1:>9.3f} {pix:>8}{mark}")
        return "\n".join(lines)

    def source_table(self) -> str:
        """The scores of each source at the chosen threshold, one line each ("" when none was chosen).

        >>> from fastsam_geo.evaluate import scores_from_counts as sc
        >>> print(Calibration(0.2, (0.1, 0.2), [sc(9, 9, 1), sc(4, 0, 1)], {"000_a": [sc(5, 5, 0), sc(3, 0, 0)],
        ...       "001_b": [sc(4, 4, 1), sc(1, 0, 1)]}).source_table())
        source at conf 0.20    TP   FP   FN object F1 pixel F1
        000_a                   3    0    0     1.000        -
        001_b                   1    0    1     0.667        -
        """
        if self.conf is None or not self.per_source:
            return ""
        k = min(range(len(self.grid)), key=lambda i: abs(self.grid[i] - self.conf))
        width = max(20, *(len(n) for n in self.per_source))
        lines = [f"{'source at conf ' + format(self.conf, '.2f'):<{width}} {'TP':>4} {'FP':>4} {'FN':>4} "
                 f"{'object F1':>9} {'pixel F1':>8}"]
        for name, scores in self.per_source.items():
            s = scores[k]
            pix = "-" if s.pixel_f1 is None else f"{s.pixel_f1:.3f}"
            lines.append(f"{name:<{width}} {s.tp:>4} {s.fp:>4} {s.fn:>4} {s.f1:>9.3f} {pix:>8}")
        return "\n".join(lines)


def calibrate_conf(
    weights: str | os.PathLike[str],
    rasters: Sequence[str | os.PathLike[str]],
    labels: Footprints | Sequence[Footprints],
    *,
    grid: Sequence[float] = CONF_GRID,
    gsd: float | str | None = None,
    device: str = "cpu",
    segmenter: Segmenter | None = None,
    labels_layer: str | None = None,
    tta: int = DEFAULT_TTA,
    **extract_kw: Any,
) -> Calibration:
    """Extract every raster at each threshold of ``grid`` and score it against its ``labels``.

    ``labels`` is one footprint layer for all rasters or one per raster. ``gsd`` and
    ``extract_kw`` go to :func:`~fastsam_geo.pipeline.extract_buildings` (default: CLI
    defaults, the model's working resolution). ``segmenter`` replaces the FastSAM model of
    ``weights`` (it must keep masks down to ``min(grid)``). ``labels_layer`` is the layer read
    from each footprint file (default: its only layer, else ``buildings``). ``conf`` is None when no
    threshold finds any truth building (no truth on the rasters, or a model that finds none).
    ``tta``: the views of each tile fused, as ``extract --tta`` (a ``segmenter`` given fuses its
    own); the model runs ``tta`` times a tile, once for the whole grid.
    """
    from fastsam_geo.pipeline import extract_buildings
    from fastsam_geo.validate import check_tta

    check_tta(tta)  # before any file is read
    grid = tuple(sorted(float(c) for c in grid))
    # read once (not once per threshold), and a bad file fails before the model loads
    layers = per_raster(labels, len(rasters))
    loaded = {  # no building: a negative
        id(t): load_footprints(t, "truth", labels_layer, allow_empty=True, option="--labels-layer") for t in layers
    }
    truths = [loaded[id(t)] for t in layers]
    check_labels_reach(rasters, truths)
    if segmenter is None:
        from fastsam_geo.segment import FastSAMSegmenter
        from fastsam_geo.segmenters import resolve_model

        # the engine extract runs (engine auto: the .pt's ONNX twin when there is one)
        segmenter = FastSAMSegmenter(resolve_model(weights).path, device=device, conf=grid[0], tta=tta)
    per_source: dict[str, list[Scores]] = {}
    with tempfile.TemporaryDirectory(prefix="fastsam-geo-calibrate-") as tmp:
        for i, (raster, truth) in enumerate(zip(rasters, truths, strict=True)):
            replay = ThresholdReplay(segmenter)
            name = f"{i:03d}_{Path(raster).stem}"
            scores = []
            for c in grid:
                replay.conf = c
                out = Path(tmp) / f"{name}_{c:.3f}.gpkg"
                extract_buildings(raster, out, segmenter=replay, conf=c, gsd=gsd, overwrite=True, **extract_kw)
                scores.append(evaluate_on_raster(out, truth, raster, same_place=False))
                out.unlink()
            per_source[name] = scores
    pooled_scores = [pooled([s[k] for s in per_source.values()]) for k in range(len(grid))]
    cal = Calibration(None, grid, pooled_scores, per_source, getattr(segmenter, "tta", 1))
    if any(s.tp for s in pooled_scores):
        cal.conf = best_threshold(grid, cal.mean_f1)
    return cal


def check_labels_reach(rasters: Sequence[str | os.PathLike[str]], truths: Sequence[Any]) -> None:
    """Refuse, before any tile is segmented, footprints of which none touches its raster's bounds
    (another place, or a wrong CRS): the calibration would run the model over every tile and
    find no truth building at any threshold. Rasters without footprints (negatives) are fine."""
    import rasterio
    import shapely
    from rasterio.warp import transform_bounds

    if not any(len(t.geometry) for t in truths):
        return
    for raster, truth in zip(rasters, truths, strict=True):
        if not len(truth.geometry):
            continue
        try:
            with rasterio.open(raster) as ds:
                bounds = transform_bounds(ds.crs, truth.crs, *ds.bounds, densify_pts=21)
        except Exception:  # no CRS, unreadable, bounds that do not transform: extract says why
            return
        if shapely.intersects(truth.geometry, shapely.box(*bounds)).any():
            return
    raise FastSAMGeoError(
        f"none of the footprints lies on {'its raster' if len(rasters) == 1 else 'their rasters'} "
        f"({', '.join(str(r) for r in rasters[:3])}{', ...' if len(rasters) > 3 else ''}): another place, "
        "or footprints in a wrong CRS; give --labels for these rasters."
    )


def model_pair(weights: str | os.PathLike[str]) -> list[Path]:
    """``weights`` and, when it lies beside it, its ONNX twin (the ``.onnx`` exported from this
    ``.pt``, see :func:`~fastsam_geo.segmenters.onnx_twin`), the ``.pt`` first; else ``[weights]``.
    A threshold stored in one of the two only would part them: the ``.pt``'s checksum changes and
    ``extract`` stops taking the ``.onnx`` for its export (torch runs, about 2.75x slower)."""
    from fastsam_geo.segmenters import onnx_twin
    from fastsam_geo.weights import sha256_file

    p = Path(weights)
    pt = p.with_suffix(".pt") if p.suffix.lower() == ".onnx" else p
    if not pt.is_file() or (pt != p and not p.is_file()):
        return [p]
    twin = onnx_twin(pt, sha256_file(pt))
    if twin is None or (pt != p and twin != p):
        return [p]
    return [pt, twin]


def check_store(weights: str | os.PathLike[str], inputs: Sequence[object] = ()) -> None:
    """Before a calibration whose threshold will be stored in ``weights`` (``calibrate --write``) and
    its ONNX twin (:func:`model_pair`): refuse, in one line and before minutes of work, a file that
    is not a model, a model that cannot be rewritten here (its folder or itself read-only, the onnx
    or torch package missing)."""
    from fastsam_geo.errors import DependencyError, OutputError
    from fastsam_geo.modelmeta import read_model_meta
    from fastsam_geo.output import guard_output

    read_model_meta(Path(weights))  # WeightsError: not a .pt / .onnx model
    for p in model_pair(weights):
        need = "onnx" if p.suffix.lower() == ".onnx" else "torch"
        try:
            __import__(need)
        except ImportError:
            raise DependencyError(
                f'--write on {p} needs the {need} package to rewrite the model: pip install "fastsam-geo[torch]" '
                "(or calibrate without --write and pass --conf to extract)."
            ) from None
        guard_output(p, inputs, overwrite=True)  # its folder can be written (the model is replaced atomically)
        if not os.access(p, os.W_OK):
            raise OutputError(f"{p}: the model file is read-only; make it writable (chmod u+w) or drop --write.")


def store_conf(weights: str | os.PathLike[str], conf: float, tta: int | None = None) -> list[Path]:
    """Store ``conf`` as the model's threshold in ``weights`` (a ``.pt`` checkpoint or an ``.onnx``
    file; the other metadata stay), and ``tta``, the views it was chosen for (``conf_tta``), when
    given; else a ``conf_tta`` stored with an earlier threshold goes (it would be said of this one).
    A ``.pt`` and its ONNX twin (:func:`model_pair`) both get it, and the twin names the rewritten
    ``.pt`` as its source. Returns the files written."""
    from fastsam_geo.modelmeta import conf_meta, read_model_meta, write_onnx_meta, write_pt_meta
    from fastsam_geo.weights import sha256_file

    new = conf_meta(conf, tta)
    stale = [] if "conf_tta" in new else ["conf_tta"]
    pair = model_pair(weights)
    for p in pair:
        if p.suffix.lower() == ".onnx":
            kept = {k: v for k, v in read_model_meta(p).items() if k not in stale}
            if len(pair) == 2:
                kept["source_sha256"] = sha256_file(pair[0])  # the .pt, rewritten first
            write_onnx_meta(p, {**kept, **new})
        else:
            write_pt_meta(p, new, drop=stale)
    return pair
