"""``extract_buildings``: the public call behind the CLI, the QGIS worker and the Python API.

It turns its keywords into one :class:`~fastsam_geo.plan.ExtractOptions` and runs the
stages (:mod:`fastsam_geo.plan` -> :mod:`fastsam_geo.tilework` on an executor ->
:mod:`fastsam_geo.sink`) through :func:`fastsam_geo.run.extract_rasters`. It reports
progress and honours cancellation through callbacks and never prints.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from fastsam_geo.errors import FastSAMGeoError
from fastsam_geo.plan import (
    BuildingFilter,
    ExtractOptions,
    ModelOptions,
    OutputOptions,
    SelectOptions,
    Sheet,
    TilingOptions,
)
from fastsam_geo.sink import ExtractSummary
from fastsam_geo.tiling import DEFAULT_OVERLAP, DEFAULT_TILE_SIZE
from fastsam_geo.tta import DEFAULT_TTA

if TYPE_CHECKING:
    from fastsam_geo.prompts import Prompts, TextScorer
    from fastsam_geo.segment import Segmenter

ProgressFn = Callable[[int, int], None]
CancelFn = Callable[[], bool]


def build_options(
    *,
    weights: str | os.PathLike[str] | None = None,
    prompts: Prompts | None = None,
    tile_size: int = DEFAULT_TILE_SIZE,
    overlap: int = DEFAULT_OVERLAP,
    bands: Sequence[int] | None = None,
    stretch: str = "auto",
    gsd: float | str | None = None,
    device: str = "auto",
    batch_size: int | None = None,
    conf: float | None = None,
    iou: float = 0.7,
    building_filter: BuildingFilter | bool | None = None,
    simplify_px: float = 1.0,
    min_area_m2: float = 2.0,
    regularize: bool = False,
    match_iou: float = 0.5,
    overwrite: bool = False,
    resume: bool = False,
    cache_dir: str | os.PathLike[str] | None = None,
    cache_only: bool = False,
    layer: str = "buildings",
    prefetch: int = 4,
    assign_crs: str | None = None,
    resumable: bool = True,
    engine: str = "auto",
    tta: int = DEFAULT_TTA,
    refine: bool = True,
) -> ExtractOptions:
    """The typed options of :func:`extract_buildings`'s keywords.

    >>> o = build_options(tile_size=512, building_filter=False)
    >>> o.tiling.tile_size, o.select.building_filter.enabled, o.model.conf is None
    (512, False, True)
    """
    if isinstance(building_filter, BuildingFilter):
        bfilter = building_filter
    else:
        bfilter = BuildingFilter(enabled=building_filter is not False)
    return ExtractOptions(
        tiling=TilingOptions(tile_size, overlap, tuple(bands) if bands is not None else None, stretch, gsd, assign_crs),
        model=ModelOptions(
            None if weights is None else os.fspath(weights), device, batch_size, conf, iou, engine, tta, refine
        ),
        select=SelectOptions(prompts, bfilter, simplify_px, min_area_m2, regularize, match_iou),
        output=OutputOptions(
            overwrite, resume, layer, None if cache_dir is None else os.fspath(cache_dir), cache_only, resumable
        ),
        prefetch=prefetch,
    )


def extract_buildings(
    raster: str | os.PathLike[str],
    output: str | os.PathLike[str],
    *,
    segmenter: Segmenter | None = None,
    weights: str | os.PathLike[str] | None = None,
    prompts: Prompts | None = None,
    tile_size: int = DEFAULT_TILE_SIZE,
    overlap: int = DEFAULT_OVERLAP,
    bands: Sequence[int] | None = None,
    stretch: str = "auto",
    device: str = "auto",
    batch_size: int | None = None,
    conf: float | None = None,
    iou: float = 0.7,
    building_filter: BuildingFilter | bool | None = None,
    text_scorer: TextScorer | None = None,
    simplify_px: float = 1.0,
    min_area_m2: float = 2.0,
    regularize: bool = False,
    match_iou: float = 0.5,
    overwrite: bool = False,
    resume: bool = False,
    cache_dir: str | os.PathLike[str] | None = None,
    cache_only: bool = False,
    layer: str = "buildings",
    progress: ProgressFn | None = None,
    cancel: CancelFn | None = None,
    prefetch: int = 4,
    gsd: float | str | None = None,
    client: Any = None,
    sheets: Sequence[Sheet] = (),
    assign_crs: str | None = None,
    resumable: bool = True,
    engine: str = "auto",
    tta: int = DEFAULT_TTA,
    refine: bool = True,
) -> ExtractSummary:
    """Extract building polygons from ``raster`` into ``output`` (.gpkg, .geojson, .fgb).

    Args:
        raster: GeoTIFF/COG/VRT path.
        output: vector path; refused if it exists unless ``overwrite``.
        segmenter: any :class:`~fastsam_geo.segment.Segmenter`; default a
            ``FastSAMSegmenter`` with ``weights``, ``device``, ``batch_size`` (None: 1 on the CPU,
            4 on a GPU), ``conf``, ``iou``.
        prompts: a :class:`~fastsam_geo.prompts.Prompts` (points, boxes or text), in any
            CRS (transformed to the raster's); None means everything + building filter.
        tile_size, overlap: the tile grid in pixels.
        building_filter: filter for everything/text mode (True/None: defaults, False: off).
        text_scorer: CLIP scorer for text prompts (default: ``ClipScorer()``).
        simplify_px: simplification tolerance in pixels, applied after seam merging.
        min_area_m2: polygons smaller than this are dropped.
        regularize: square building outlines (right angles), refusing bad fits.
        match_iou: IoU inside the common region of two tiles above which pieces join.
        progress: ``progress(done, total)`` after each tile.
        cancel: returns True to stop; the run then raises :class:`Cancelled` and writes nothing
            (the finished tiles stay in the resume ledger).
        cache_dir: keep each tile's everything masks there, so a new prompt over an area
            already segmented costs no inference.
        cache_only: never run the model: every tile must be in ``cache_dir`` (re-prompting).
        resume: continue an interrupted run writing ``output``: finished tiles are not
            computed again, and the result equals an uninterrupted run.
        gsd: working ground resolution in metres per pixel (None: the model's or native;
            ``"native"``: the raster's own pixels).
        client: a ``dask.distributed.Client``: tile work runs on its cluster (workers read
            the raster themselves from its path or URL; ``segmenter``, if given, is shipped
            to each worker once).
        sheets: for a mosaic, its source rasters; each polygon then records the sheets it
            lies on (column ``sheets``).
        assign_crs: the raster's CRS (``"EPSG:32633"``, PROJ or WKT), as ``gdal_translate -a_srs``
            assigns it (replacing the file's own): a raster without a CRS can be read this way.
        resumable: keep a resume ledger beside ``output`` while running (False: a cancelled or
            failed run leaves no ``.OUTPUT.resume.sqlite``; ``resume`` is then impossible).
        engine: ``"auto"`` (default): a ``.pt`` whose ONNX twin (its ``fastsam-geo export``) lies
            beside it runs on ONNX Runtime when onnxruntime is installed, anything else on its own
            engine; ``"onnx"`` / ``"torch"`` choose explicitly. The summary's ``engine`` says which ran.
        tta: views of each tile whose objects are fused (2, 4 or 8 flips and quarter turns; 12:
            the 8 and four flips read coarser, :mod:`fastsam_geo.tta`; default 12); 1: the tile as
            it is. ``tta`` forward passes a tile.
            A ``segmenter`` given fuses its own views (``FastSAMSegmenter(tta=...)``).
        refine: snap each mask's outline to the image's edges (:mod:`fastsam_geo.refine`; default
            True); False: the model's masks as assembled. A ``segmenter`` given decides for itself.

    Returns:
        An :class:`ExtractSummary`.
    """
    from fastsam_geo.run import RasterJob, extract_rasters

    options = build_options(
        weights=weights,
        prompts=prompts,
        tile_size=tile_size,
        overlap=overlap,
        bands=bands,
        stretch=stretch,
        gsd=gsd,
        device=device,
        batch_size=batch_size,
        conf=conf,
        iou=iou,
        building_filter=building_filter,
        simplify_px=simplify_px,
        min_area_m2=min_area_m2,
        regularize=regularize,
        match_iou=match_iou,
        overwrite=overwrite,
        resume=resume,
        cache_dir=cache_dir,
        cache_only=cache_only,
        layer=layer,
        prefetch=prefetch,
        assign_crs=assign_crs,
        resumable=resumable,
        engine=engine,
        tta=tta,
        refine=refine,
    )
    job = RasterJob(raster, output, progress, tuple(sheets))
    (summary,) = extract_rasters(
        [job], options, segmenter=segmenter, text_scorer=text_scorer, cancel=cancel, client=client
    )
    return summary


__all__ = ["BuildingFilter", "ExtractSummary", "FastSAMGeoError", "build_options", "extract_buildings"]
