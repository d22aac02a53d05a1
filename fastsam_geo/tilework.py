"""Stage 2, tile work: read -> segment -> select -> vectorize, for one tile or a batch.

The functions here are what an executor runs, in this process or on a Dask worker. In
and out they pickle small: a :class:`TileContext` and :class:`~fastsam_geo.tiling.TileSpec`
in, a :class:`TileResult` out (polygons as WKB, scores, labels; never masks or pixels).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import shapely

from fastsam_geo.errors import RasterError
from fastsam_geo.masks import InstanceMasks
from fastsam_geo.plan import BuildingFilter, RunPlan, TilingOptions, prompt_label
from fastsam_geo.raster import RasterSource
from fastsam_geo.tiling import Tile, TileSpec
from fastsam_geo.vectorize import fill_small_holes, masks_to_geometries

if TYPE_CHECKING:
    from fastsam_geo.prompts import Prompts, TextScorer
    from fastsam_geo.segment import Segmenter


@dataclass(frozen=True)
class TileContext:
    """What tile work needs to know about its run (small; pickles to Dask workers)."""

    raster: str
    tiling: TilingOptions
    crs_wkt: str
    prompts: Prompts | None
    building_filter: BuildingFilter
    pixel_area_m2: float
    #: Holes smaller than this (squared map units) are filled: the building filter's minimum
    #: area, as a hole smaller than the smallest building is not a courtyard; 0 without the filter.
    max_hole_area: float = 0.0

    @classmethod
    def of(cls, plan: RunPlan) -> TileContext:
        """The context of a plan's tiles."""
        sel = plan.options.select
        bf = sel.building_filter
        holes = plan.map_area(bf.min_area_m2) if bf.enabled else 0.0
        return cls(plan.raster, plan.options.tiling, plan.crs_wkt, sel.prompts, bf, plan.pixel_area_m2, holes)

    @property
    def needs_text_scorer(self) -> bool:
        """True when the prompts include a CLIP text."""
        return self.prompts is not None and bool(self.prompts.text)


@dataclass
class TileResult:
    """What one tile gave: status (``done``, ``nodata``, ``failed``), polygons, scores, labels.

    Pickles its polygons as one WKB array (shapely's vectorised ``to_wkb``).

    >>> import pickle
    >>> box = np.array([shapely.box(0, 0, 2, 1)])
    >>> r = TileResult(3, "r0000_c0003", "done", box, np.array([0.9], np.float32), ["x"])
    >>> r2 = pickle.loads(pickle.dumps(r))
    >>> (r2.index, r2.status, float(r2.geoms[0].area), r2.labels)
    (3, 'done', 2.0, ['x'])
    """

    index: int
    tile_id: str
    status: str
    geoms: np.ndarray
    scores: np.ndarray
    labels: list[str]
    error: str = ""
    seconds: dict[str, float] = field(default_factory=dict)

    @classmethod
    def empty(cls, spec: TileSpec, status: str, error: str = "") -> TileResult:
        """A tile with no objects: nodata or failed."""
        return cls(spec.index, spec.id, status, np.empty(0, object), np.zeros(0, np.float32), [], error)

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["geoms"] = shapely.to_wkb(self.geoms) if len(self.geoms) else np.empty(0, object)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        wkb = state["geoms"]
        state["geoms"] = np.asarray(shapely.from_wkb(wkb), dtype=object) if len(wkb) else np.empty(0, object)
        self.__dict__.update(state)


def read_tile(src: RasterSource, spec: TileSpec, crs: object) -> Tile | TileResult:
    """Read one tile; a :class:`TileResult` (failed or nodata) when there is nothing to segment."""
    try:
        image, nodata = src.read(spec.window)
    except RasterError as exc:
        return TileResult.empty(spec, "failed", str(exc))
    if nodata is not None and nodata.all():
        return TileResult.empty(spec, "nodata")
    return Tile(image, spec.window, spec.transform, crs, spec.core, nodata, spec.index, spec.id, pad_to=spec.pad_to)


def select_tile(
    tile: Tile,
    masks: InstanceMasks,
    prompts: Prompts | None,
    bfilter: BuildingFilter,
    pixel_area_m2: float,
    text_scorer: TextScorer | None,
) -> tuple[InstanceMasks, str]:
    """Prompt-select the everything masks of one tile; returns the chosen masks and a label."""
    prompted = prompts is not None and not prompts.is_empty
    if not prompted and not (bfilter.enabled and len(masks)):
        return masks, "everything"
    from fastsam_geo import prompts as P

    if prompts is not None and prompted and (prompts.points or prompts.boxes):
        chosen = P.select_prompts(masks, prompts, tile.transform, image=tile.image, scorer=text_scorer)
        return chosen, prompt_label(prompts)
    if bfilter.enabled and len(masks):
        if not prompted:
            keep = P.building_filter(
                masks,
                pixel_area_m2=pixel_area_m2,
                min_area_m2=bfilter.min_area_m2,
                max_area_m2=bfilter.max_area_m2,
                min_rectangularity=bfilter.min_rectangularity,
            )
            masks = masks.subset(keep)
        masks = P.nms_masks(masks, iou=bfilter.nms_iou)
    if prompts is not None and prompted:
        chosen = P.select_prompts(masks, prompts, tile.transform, image=tile.image, scorer=text_scorer)
        return chosen, prompt_label(prompts)
    return masks, "everything"


def process_tiles(
    tiles: Sequence[Tile], segmenter: Segmenter, ctx: TileContext, text_scorer: TextScorer | None = None
) -> list[TileResult]:
    """Segment a batch of tiles at once, then select and vectorize each: one result per tile."""
    t0 = time.perf_counter()
    results = segmenter.segment(tiles)
    seg_s = (time.perf_counter() - t0) / max(len(tiles), 1)
    out = []
    for tile, masks in zip(tiles, results, strict=True):
        t0 = time.perf_counter()
        sel, label = select_tile(tile, masks, ctx.prompts, ctx.building_filter, ctx.pixel_area_m2, text_scorer)
        t1 = time.perf_counter()
        geoms = masks_to_geometries(sel, tile.transform)
        if ctx.max_hole_area > 0:
            geoms = fill_small_holes(geoms, ctx.max_hole_area)
        ok = np.array([g is not None for g in geoms], bool)
        t2 = time.perf_counter()
        out.append(
            TileResult(
                tile.index,
                tile.id,
                "done",
                np.asarray(geoms[ok], dtype=object),
                np.asarray(sel.scores[ok], np.float32),
                [label] * int(ok.sum()),
                seconds={"segment": seg_s, "select": t1 - t0, "vectorize": t2 - t1},
            )
        )
    return out


def process_tile(
    spec: TileSpec,
    ctx: TileContext,
    segmenter: Segmenter,
    source: RasterSource,
    text_scorer: TextScorer | None = None,
) -> TileResult:
    """One tile, start to end: read -> segment -> select -> vectorize."""
    t0 = time.perf_counter()
    tile = read_tile(source, spec, source.info.crs)
    if isinstance(tile, TileResult):
        return tile
    read_s = time.perf_counter() - t0
    (result,) = process_tiles([tile], segmenter, ctx, text_scorer)
    result.seconds["read"] = read_s
    return result


__all__ = ["TileContext", "TileResult", "process_tile", "process_tiles", "read_tile", "select_tile"]
