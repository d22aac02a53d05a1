"""Stage 1, plan: raster -> tile grid, prompts routed to their tiles, the run's parameters.

One typed :class:`ExtractOptions` object carries everything a run needs (instead of the
27 keywords of :func:`~fastsam_geo.pipeline.extract_buildings`, which builds it);
:func:`plan_run` turns a raster and the options into a :class:`RunPlan`: the tiles to
process, the prompts in the raster's CRS, and the parameters a resumed run must match.
Nothing here reads pixels or loads a model, and a plan pickles (it travels to Dask
workers), except for the open :class:`~fastsam_geo.raster.RasterSource` it may keep for
the local executor.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field, replace
from typing import TYPE_CHECKING, Any

import numpy as np
import shapely
from affine import Affine

from fastsam_geo.errors import PromptError
from fastsam_geo.ledger import raster_stamp
from fastsam_geo.output import area_m2
from fastsam_geo.raster import RasterInfo, RasterSource, display_path, gdal_path, vrt_sources
from fastsam_geo.refine import outline_name
from fastsam_geo.tiling import DEFAULT_OVERLAP, DEFAULT_TILE_SIZE, TileGrid, TileSpec
from fastsam_geo.tta import DEFAULT_TTA

if TYPE_CHECKING:
    from fastsam_geo.prompts import Prompts
    from fastsam_geo.segmenters import ResolvedModel


@dataclass
class BuildingFilter:
    """Which "everything" masks count as buildings (used when no prompt is given)."""

    min_area_m2: float = 8.0
    max_area_m2: float = 20000.0
    min_rectangularity: float = 0.55
    nms_iou: float = 0.7
    enabled: bool = True


@dataclass(frozen=True)
class TilingOptions:
    """How the raster is read and cut: tile grid in pixels, bands, stretch, ground resolution.

    ``gsd``: working resolution in metres per pixel; None = the model's (else native),
    ``"native"`` = the raster's own pixels. ``assign_crs``: the raster's CRS (as ``gdal_translate
    -a_srs``), for a raster without one (None: the file's own).
    """

    tile_size: int = DEFAULT_TILE_SIZE
    overlap: int = DEFAULT_OVERLAP
    bands: tuple[int, ...] | None = None
    stretch: str = "auto"
    gsd: float | str | None = None
    assign_crs: str | None = None


@dataclass(frozen=True)
class ModelOptions:
    """Which FastSAM model runs, where, and its thresholds."""

    weights: str | None = None
    device: str = "auto"
    batch_size: int | None = None
    conf: float | None = None  # None: the model's (stored with its weights), else 0.25
    iou: float = 0.7
    engine: str = "auto"  # auto: the ONNX twin of a .pt when onnxruntime is installed; onnx; torch
    tta: int = DEFAULT_TTA  # views of each tile fused (fastsam_geo.tta); 1: the tile as it is
    refine: bool = True  # outlines snapped to the image's edges (fastsam_geo.refine)


@dataclass(frozen=True)
class SelectOptions:
    """Stage 2 and vectorizing: prompts, building filter, polygon clean-up, seam matching."""

    prompts: Prompts | None = None
    building_filter: BuildingFilter = field(default_factory=BuildingFilter)
    simplify_px: float = 1.0
    min_area_m2: float = 2.0
    regularize: bool = False
    match_iou: float = 0.5


@dataclass(frozen=True)
class OutputOptions:
    """Where and how results are kept: overwrite/resume, layer, mask cache; ``resumable``:
    keep a resume ledger beside the output while the run goes (False: a cancelled or failed
    run leaves nothing there, for callers that never resume, such as the QGIS worker)."""

    overwrite: bool = False
    resume: bool = False
    layer: str = "buildings"
    cache_dir: str | None = None
    cache_only: bool = False
    resumable: bool = True


@dataclass(frozen=True)
class ExtractOptions:
    """Everything a run needs, grouped by stage."""

    tiling: TilingOptions = field(default_factory=TilingOptions)
    model: ModelOptions = field(default_factory=ModelOptions)
    select: SelectOptions = field(default_factory=SelectOptions)
    output: OutputOptions = field(default_factory=OutputOptions)
    prefetch: int = 4


@dataclass(frozen=True)
class Sheet:
    """One source raster of a mosaic: its name and footprint in the mosaic's CRS."""

    name: str
    bounds: tuple[float, float, float, float]


@dataclass
class RunPlan:
    """One raster's run: the grid, the tiles to process, prompts in the raster's CRS."""

    raster: str
    output: str
    options: ExtractOptions
    crs_wkt: str
    transform: Affine
    width: int
    height: int
    bands: tuple[int, ...]
    grid: TileGrid
    specs: list[TileSpec]
    mode: str
    pixel_area_m2: float
    sheets: tuple[Sheet, ...] = ()
    grid_metadata: dict[str, str] = field(default_factory=dict)
    source: RasterSource | None = field(default=None, repr=False, compare=False)

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["source"] = None  # an open dataset never travels
        return state

    @property
    def prompts(self) -> Prompts | None:
        """The prompts, already in the raster's CRS."""
        return self.options.select.prompts

    @property
    def tolerance(self) -> float:
        """Simplification tolerance in map units."""
        return self.options.select.simplify_px * abs(self.transform.a)

    def map_area(self, m2: float) -> float:
        """``m2`` square metres in squared map units of the working grid."""
        return m2 / self.pixel_area_m2 * abs(self.transform.a * self.transform.e)

    @property
    def min_area_map(self) -> float:
        """``min_area_m2`` in squared map units."""
        return self.map_area(self.options.select.min_area_m2)

    @property
    def area_range(self) -> tuple[float, float]:
        """The area range (m²) of the polygons written: the building filter's where it applies
        (everything and text mode), checked on the final shapes (after merging, simplifying and
        squaring), so nothing smaller than --min-area reaches the output."""
        return area_limits(self.options.select.building_filter, self.prompts, self.options.select.min_area_m2)

    def params(self, segmenter_name: str, weights_sha256: str | None) -> dict[str, Any]:
        """The parameters a resumed run must match (stored in the ledger)."""
        o = self.options
        return {
            "raster": display_path(self.raster),
            "raster_stamp": raster_stamp([gdal_path(self.raster), *vrt_sources(self.raster)]),
            "tile_size": o.tiling.tile_size,
            "overlap": o.tiling.overlap,
            "bands": list(self.bands),
            "stretch": o.tiling.stretch,
            "grid": [self.width, self.height],
            "prompts": repr(self.prompts),
            "segmenter": segmenter_name,
            "weights_sha256": weights_sha256,
            "conf": o.model.conf,
            "iou": o.model.iou,
            **({"tta": o.model.tta} if o.model.tta != 1 else {}),
            "outline": outline_name(o.model.refine),
            "building_filter": asdict(o.select.building_filter),
            "match_iou": o.select.match_iou,
            **({"assign_crs": o.tiling.assign_crs} if o.tiling.assign_crs else {}),
        }


def area_limits(bfilter: BuildingFilter, prompts: Any, min_area_m2: float) -> tuple[float, float]:
    """``(min, max)`` m² of written polygons (see :attr:`RunPlan.area_range`).

    >>> area_limits(BuildingFilter(min_area_m2=100, max_area_m2=500), None, 2.0)
    (100.0, 500.0)
    >>> area_limits(BuildingFilter(enabled=False), None, 2.0)
    (2.0, inf)
    """
    pointed = prompts is not None and bool(getattr(prompts, "points", ()) or getattr(prompts, "boxes", ()))
    if bfilter.enabled and not pointed:
        return max(float(bfilter.min_area_m2), float(min_area_m2)), float(bfilter.max_area_m2)
    return float(min_area_m2), float("inf")


def prompt_label(prompts: Prompts) -> str:
    """The ``prompt`` column's value for objects chosen by ``prompts``."""
    kinds = []
    if prompts.points:
        kinds.append("point")
    if prompts.boxes:
        kinds.append("box")
    if prompts.text:
        kinds.append(f"text:{prompts.text}")
    return "+".join(kinds) or "everything"


def open_source(raster: str | os.PathLike[str], tiling: TilingOptions) -> RasterSource:
    """Open ``raster`` as the tiling options say (``gsd`` passed on where RasterSource takes it)."""
    src = RasterSource(
        raster,
        bands=tiling.bands,
        stretch=tiling.stretch,  # type: ignore[arg-type]
        **({"assign_crs": tiling.assign_crs} if tiling.assign_crs else {}),
    )
    gsd = float(tiling.gsd) if isinstance(tiling.gsd, (int, float)) else None
    if hasattr(src, "set_gsd"):
        src.set_gsd(gsd)  # after the raster is checked
    return src


def resolve_gsd(options: ExtractOptions, segmenter: Any = None, model: ResolvedModel | None = None) -> ExtractOptions:
    """Options whose ``tiling.gsd`` is the working resolution itself (metres, or None: native):
    ``gsd`` when given, else the segmenter's, else the model's (``model``, resolved once by
    :func:`~fastsam_geo.segmenters.resolve_model`). A ``model.conf`` of None becomes the
    segmenter's threshold, else the model's (else 0.25). A segmenter that says how many views it
    fuses (``tta``) or whether it refines outlines (``refine``) sets ``model.tta`` / ``model.refine``."""
    from fastsam_geo.errors import RasterError
    from fastsam_geo.modelmeta import DEFAULT_CONF, parse_gsd, working_gsd

    inner = getattr(segmenter, "segmenter", segmenter)
    for name, kind in (("tta", int), ("refine", bool)):  # a segmenter given decides these itself
        value = getattr(inner, name, None) if segmenter is not None else None
        if isinstance(value, kind) and value != getattr(options.model, name):
            options = replace(options, model=replace(options.model, **{name: value}))
    if options.model.conf is None:
        conf = getattr(inner, "conf", None) if segmenter is not None else (model.conf if model else None)
        options = replace(options, model=replace(options.model, conf=DEFAULT_CONF if conf is None else float(conf)))

    try:
        checked = parse_gsd(options.tiling.gsd)
    except ValueError as exc:
        raise RasterError(str(exc)) from None
    if checked is not None:
        working = working_gsd(checked, None)
    else:
        native = getattr(inner, "gsd", None) if segmenter is not None else (model.gsd if model else None)
        working = working_gsd(None, native)
    check_input_size(options, segmenter, model)
    return replace(options, tiling=replace(options.tiling, gsd=working))


def check_input_size(options: ExtractOptions, segmenter: Any = None, model: ResolvedModel | None = None) -> None:
    """Refuse tiles larger than the fixed input of an ONNX model: each would be shrunk to fit
    (a 1024 px tile into a 512 px graph: half the resolution the run and its metadata claim).
    The fix is a tile size the graph takes, or an export at the tile size. ``model``: the model
    resolved at plan time (a ``.pt`` whose ONNX twin runs is checked through the twin)."""
    from fastsam_geo.errors import TilingError
    from fastsam_geo.modelmeta import onnx_input_size

    inner = getattr(segmenter, "segmenter", segmenter)
    if segmenter is not None and hasattr(inner, "fixed_shape"):
        fixed = inner.fixed_shape
        name = getattr(inner, "weights_path", options.model.weights)
    elif segmenter is None and model is not None:
        if model.engine != "onnx":
            return
        fixed, name = onnx_input_size(model.path), model.path
    elif segmenter is None or str(options.model.weights or "").lower().endswith(".onnx"):
        fixed, name = onnx_input_size(options.model.weights), options.model.weights
    else:
        return
    tile = options.tiling.tile_size
    if fixed is None or tile <= min(fixed):
        return
    side = min(fixed)
    raise TilingError(
        f"{name} is an ONNX model exported for {fixed[0]} x {fixed[1]} px inputs: {tile} px tiles would be "
        f"shrunk to {side} px (a {tile / side:.3g}x coarser resolution); run with --tile-size {side} "
        f"--overlap {side // 8}, or export the .pt again with --imgsz {tile}."
    )


def grid_metadata(src: RasterSource) -> dict[str, str]:
    """Output metadata of the grid and the radiometry the tiles were read with."""
    i = src.info
    out = {
        "native_gsd_m": f"{i.native_gsd_m:.6g}",
        "gsd_m": f"{i.gsd_m:.6g}",
        "grid": f"{i.width} x {i.height} px (native {i.native_width} x {i.native_height})",
        "bands": ",".join(str(b) for b in i.bands),
    }
    radiometry = getattr(src, "radiometry", None)
    if radiometry:
        out["radiometry"] = str(radiometry)
    return out


def _coord(v: float) -> str:
    """A map coordinate for a message: to the millimetre, or in %g style when huge (a typo's
    1e300 was printed with 300 digits).

    >>> _coord(500120.5), _coord(1e300)
    ('500120.500', '1e+300')
    """
    return f"{v:.3f}" if abs(v) < 1e12 else f"{v:.6g}"


def route_prompts(prompts: Prompts, grid: TileGrid, specs: list[TileSpec], info: RasterInfo) -> list[TileSpec]:
    """The tiles that point and box prompts need; raises PromptError for a prompt outside the raster.

    A point goes to every tile whose window holds it; a box to the tiles that hold it
    whole (else to every tile it touches). Pieces found twice are merged at the seams.
    """
    inv = ~info.transform
    wanted: set[int] = set()
    corners = [((p.x, p.y), (p.x, p.y), f"point ({_coord(p.x)}, {_coord(p.y)})") for p in prompts.points]
    corners += [
        ((b.xmin, b.ymax), (b.xmax, b.ymin), f"box ({', '.join(_coord(v) for v in (b.xmin, b.ymin, b.xmax, b.ymax))})")
        for b in prompts.boxes
    ]
    for (x0, y0), (x1, y1), what in corners:
        c0, r0 = inv * (x0, y0)
        c1, r1 = inv * (x1, y1)
        c0, c1 = sorted((c0, c1))
        r0, r1 = sorted((r0, r1))
        if c1 < 0 or r1 < 0 or c0 >= info.width or r0 >= info.height:
            raise PromptError(
                f"{what} in {info.crs.to_string()} lies outside {info.path} "
                f"(bounds {tuple(round(v, 3) for v in info.bounds)}); check the prompt's CRS."
            )
        touching = [int(i) for i in grid.indices_intersecting(c0, r0, max(c1, c0 + 1e-6), max(r1, r0 + 1e-6))]
        whole = [i for i in touching if _holds(grid[i].window, c0, r0, c1, r1)]
        wanted.update(whole or touching)
    return [sp for sp in specs if sp.index in wanted]


def _holds(w: Any, c0: float, r0: float, c1: float, r1: float) -> bool:
    return bool(w.col_off <= c0 and c1 <= w.col_off + w.width and w.row_off <= r0 and r1 <= w.row_off + w.height)


def plan_run(
    raster: str | os.PathLike[str],
    output: str | os.PathLike[str],
    options: ExtractOptions,
    *,
    source: RasterSource | None = None,
    sheets: tuple[Sheet, ...] = (),
) -> RunPlan:
    """Plan the run of ``options`` over ``raster`` into ``output``.

    With ``source`` (an open RasterSource of ``raster``) the plan keeps it for the local
    executor; else the raster is opened here to read its grid and closed again.
    """
    src = source or open_source(raster, options.tiling)
    try:
        info = src.info
        t = options.tiling
        grid = TileGrid(info.width, info.height, t.tile_size, t.overlap, info.transform)
        pixel_area = float(area_m2(np.array([shapely.box(*grid.window_bounds(0))]), info.crs)[0]) / (
            grid.tile_w * grid.tile_h
        )
        specs: list[TileSpec] = list(grid)
        mode = "everything"
        prompts = options.select.prompts
        if prompts is not None and not prompts.is_empty:
            prompts = prompts.to_crs(info.crs) if prompts.crs is not None else prompts
            mode = prompts.mode
            if prompts.points or prompts.boxes:
                specs = route_prompts(prompts, grid, specs, info)
            options = replace(options, select=replace(options.select, prompts=prompts))
        return RunPlan(
            raster=os.fspath(raster),
            output=os.fspath(output),
            options=options,
            crs_wkt=info.crs.to_wkt(),
            transform=info.transform,
            width=info.width,
            height=info.height,
            bands=tuple(info.bands),
            grid=grid,
            specs=specs,
            mode=mode,
            pixel_area_m2=pixel_area,
            sheets=sheets,
            grid_metadata=grid_metadata(src),
            source=source,
        )
    finally:
        if source is None:
            src.close()


__all__ = [
    "BuildingFilter",
    "ExtractOptions",
    "ModelOptions",
    "OutputOptions",
    "RunPlan",
    "SelectOptions",
    "Sheet",
    "TilingOptions",
    "check_input_size",
    "grid_metadata",
    "open_source",
    "plan_run",
    "prompt_label",
    "resolve_gsd",
    "route_prompts",
]
