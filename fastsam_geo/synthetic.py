"""Seeded synthetic aerial scenes: a GeoTIFF and its ground-truth building footprints.

A scene is a small town in a projected CRS (UTM 33N by default, 0.5 m pixels): a grid of
roads, textured ground, buildings of varied roof colours with gable shading, shadows,
trees (some over roofs), L-shapes and courtyards (holes). Buildings are placed over the
whole extent, so many of them cross the seams of any tile grid.

The scene is rendered block by block through rasterio windows, so scenes of any size can
be written with flat memory. The same seed always gives the same file.

    >>> from fastsam_geo.synthetic import plan_scene
    >>> plan = plan_scene(512, 512, seed=1)
    >>> len(plan.footprints) > 20, plan.footprints[0].polygon.is_valid
    (True, True)
"""

from __future__ import annotations

import itertools
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import geopandas as gpd
import numpy as np
import rasterio
import rasterio.features
import shapely
from affine import Affine
from rasterio.enums import MergeAlg
from rasterio.windows import Window
from shapely.affinity import affine_transform, rotate, translate
from shapely.geometry import Polygon, box

ROOF_COLOURS = np.array(
    [
        (178, 84, 60),  # terracotta
        (140, 62, 52),  # dark red tile
        (152, 152, 150),  # grey concrete
        (206, 204, 196),  # light grey
        (92, 92, 98),  # dark grey
        (228, 226, 218),  # white
        (124, 94, 72),  # brown
        (102, 116, 132),  # blue-grey metal
        (198, 178, 146),  # beige
    ],
    dtype=np.float32,
)
GRASS = np.array((92, 118, 62), np.float32)
DRY = np.array((152, 142, 96), np.float32)
SOIL = np.array((138, 114, 86), np.float32)
TREE = np.array((42, 78, 38), np.float32)
ASPHALT = np.array((84, 84, 88), np.float32)
KERB = np.array((168, 166, 160), np.float32)


@dataclass
class Building:
    """One building of a scene plan, in pixel coordinates."""

    polygon: Polygon
    colour: np.ndarray
    height_px: float
    gable_angle: float | None  # ridge direction in degrees for gabled roofs, None if flat
    shape: str


@dataclass
class ScenePlan:
    """What a scene holds, in pixel coordinates, before any pixel is drawn."""

    width: int
    height: int
    seed: int
    roads: list[Polygon]
    buildings: list[Building]  # as placed (some reach beyond the raster): what is drawn
    footprints: list[Building]  # clipped to the raster: the ground truth
    trees: np.ndarray  # N x 3: col, row, radius (px)
    shadow: tuple[float, float]  # shadow direction (unit, pixels)


# --------------------------------------------------------------------------- planning
def _building_shape(rng: np.random.Generator, px: float) -> tuple[Polygon, str]:
    """A footprint centred at the origin, sizes drawn in metres and converted to pixels."""
    kind = rng.choice(["rect", "rect", "rect", "rect", "L", "L", "court"])
    if kind == "court":
        w, h = rng.uniform(24, 40, 2) / px
        t = rng.uniform(0.25, 0.33) * min(w, h)
        outer = box(-w / 2, -h / 2, w / 2, h / 2)
        inner = box(-w / 2 + t, -h / 2 + t, w / 2 - t, h / 2 - t)
        return Polygon(outer.exterior.coords, [inner.exterior.coords]), "court"
    if kind == "L":
        w, h = rng.uniform(14, 30, 2) / px
        a = rng.uniform(0.4, 0.6) * w
        b = rng.uniform(0.4, 0.6) * h
        poly = Polygon([(0, 0), (w, 0), (w, b), (a, b), (a, h), (0, h)])
        return translate(poly, -w / 2, -h / 2), "L"
    w = rng.uniform(8, 26) / px
    h = w * rng.uniform(0.45, 0.95)
    return box(-w / 2, -h / 2, w / 2, h / 2), "rect"


def _grid_lines(rng: np.random.Generator, extent: int, px: float) -> list[float]:
    """Road centre lines along one axis: the first 10-30 m before the edge, then every 70-120 m
    until past ``extent`` px."""
    lines = [float(rng.uniform(-30, 10) / px)]
    while lines[-1] < extent:
        lines.append(lines[-1] + rng.uniform(70, 120) / px)
    return lines


def _place_building(
    rng: np.random.Generator, block: Polygon, block_angle: float, px: float, gap: float, local: list[Polygon]
) -> Building | None:
    """One placement attempt in ``block``: a building that fits it and keeps ``gap`` from the
    buildings already in ``local`` (it is appended there), or None."""
    shape, kind = _building_shape(rng, px)
    angle = block_angle + float(rng.choice([0.0, 90.0])) + float(rng.normal(0, 3))
    shape = rotate(shape, angle, origin=(0, 0))
    cx = rng.uniform(block.bounds[0], block.bounds[2])
    cy = rng.uniform(block.bounds[1], block.bounds[3])
    cand = translate(shape, cx, cy)
    if not block.contains(cand):
        return None
    grown = cand.buffer(gap, join_style="mitre")
    if any(grown.intersects(p) for p in local):
        return None
    local.append(cand)
    flat = kind != "rect" or rng.random() < 0.3
    ridge = None if flat else angle + (0.0 if _long_axis_is_x(shape, angle) else 90.0)
    return Building(
        polygon=shapely.set_precision(cand, 0.01),
        colour=ROOF_COLOURS[rng.integers(len(ROOF_COLOURS))] * rng.uniform(0.85, 1.1),
        height_px=float(rng.uniform(3, 12) / px),
        gable_angle=ridge,
        shape=kind,
    )


def _plant_trees(rng: np.random.Generator, width: int, height: int, px: float, placed: list[Polygon]) -> np.ndarray:
    """Trees (col, row, radius px): in yards, along roads, a share touching roofs (occluding
    their edges); those whose centre falls on a roof are removed, except a few kept to overhang."""
    n_trees = int(width * height * (px * px) / 450)
    trees = np.column_stack(
        [
            rng.uniform(0, width, n_trees),
            rng.uniform(0, height, n_trees),
            rng.uniform(2.0, 5.0, n_trees) / px,
        ]
    )
    keep = np.ones(n_trees, bool)
    if placed:
        tree_pts = shapely.points(trees[:, 0], trees[:, 1])
        tree_idx = shapely.STRtree(placed)
        inside = tree_idx.query(tree_pts, predicate="within")
        on_roof = np.unique(inside[0])
        keep[on_roof] = rng.random(on_roof.size) < 0.08
    return trees[keep]


def _visible(buildings: list[Building], width: int, height: int) -> list[Building]:
    """The truth is what the raster shows: footprints clipped to its extent (parts >= 30 px)."""
    extent = box(0, 0, width, height)
    visible: list[Building] = []
    for b in buildings:
        if extent.contains(b.polygon):
            visible.append(b)
            continue
        for part in shapely.get_parts(b.polygon.intersection(extent)):
            if isinstance(part, Polygon) and part.area >= 30:
                visible.append(
                    Building(shapely.set_precision(part, 0.01), b.colour, b.height_px, b.gable_angle, b.shape)
                )
    return visible


def plan_scene(
    width: int,
    height: int,
    seed: int = 0,
    *,
    pixel_size: float = 0.5,
    density: float = 0.7,
) -> ScenePlan:
    """Place roads, buildings and trees for a ``width x height`` px scene (pure, seeded).

    ``density`` (0-1) is the share of placement attempts per block that are tried.
    """
    rng = np.random.default_rng(seed)
    px = pixel_size
    road_w = 10 / px
    # Road grid: spacing 70-120 m; block edges are where buildings line up.
    xs = _grid_lines(rng, width, px)
    ys = _grid_lines(rng, height, px)
    roads = [box(x - road_w / 2, -50, x + road_w / 2, height + 50) for x in xs]
    roads += [box(-50, y - road_w / 2, width + 50, y + road_w / 2) for y in ys]

    gap = 2.5 / px
    placed: list[Polygon] = []
    buildings: list[Building] = []
    for x0, x1 in itertools.pairwise(xs):
        for y0, y1 in itertools.pairwise(ys):
            block = box(x0 + road_w / 2 + gap, y0 + road_w / 2 + gap, x1 - road_w / 2 - gap, y1 - road_w / 2 - gap)
            block_angle = float(rng.choice([0.0, 0.0, 0.0, rng.uniform(-25, 25)]))
            local: list[Polygon] = []
            for _ in range(int(60 * density)):
                building = _place_building(rng, block, block_angle, px, gap, local)
                if building is not None:
                    buildings.append(building)
            placed.extend(local)

    return ScenePlan(
        width=width,
        height=height,
        seed=seed,
        roads=roads,
        buildings=buildings,
        footprints=_visible(buildings, width, height),
        trees=_plant_trees(rng, width, height, px, placed),
        shadow=(math.cos(math.radians(35)), math.sin(math.radians(35))),
    )


def _long_axis_is_x(shape: Polygon, angle: float) -> bool:
    local = rotate(shape, -angle, origin=(0, 0))
    x0, y0, x1, y1 = local.bounds
    return (x1 - x0) >= (y1 - y0)


# --------------------------------------------------------------------------- noise
def _hash01(ix: np.ndarray, iy: np.ndarray, seed: int) -> np.ndarray:
    h = (ix.astype(np.uint64) * np.uint64(374761393)) ^ (iy.astype(np.uint64) * np.uint64(668265263))
    h = (h + np.uint64((seed * 2246822519) & 0xFFFFFFFF)) & np.uint64(0xFFFFFFFF)
    h = ((h ^ (h >> np.uint64(13))) * np.uint64(1274126177)) & np.uint64(0xFFFFFFFF)
    h ^= h >> np.uint64(16)
    return (h & np.uint64(0xFFFFFF)).astype(np.float32) / np.float32(0xFFFFFF)


def value_noise(x0: int, y0: int, w: int, h: int, scale: float, seed: int) -> np.ndarray:
    """Smooth noise in [0, 1] on the global pixel grid, continuous across blocks.

    >>> a = value_noise(0, 0, 64, 64, 16.0, 3); b = value_noise(32, 0, 32, 64, 16.0, 3)
    >>> bool(np.allclose(a[:, 32:], b))
    True
    """
    xs = (np.arange(x0, x0 + w, dtype=np.float64) + 1e6) / scale
    ys = (np.arange(y0, y0 + h, dtype=np.float64) + 1e6) / scale
    ix, iy = np.floor(xs).astype(np.int64), np.floor(ys).astype(np.int64)
    tx, ty = (xs - ix).astype(np.float32), (ys - iy).astype(np.float32)
    tx, ty = tx * tx * (3 - 2 * tx), ty * ty * (3 - 2 * ty)
    # The lattice values are hashed once per lattice cell (few at coarse scales), then gathered.
    cx, cy = ix - ix[0], iy - iy[0]
    gx, gy = np.meshgrid(np.arange(ix[0], ix[-1] + 2), np.arange(iy[0], iy[-1] + 2))
    lattice = _hash01(gx, gy, seed)
    v00 = lattice[cy[:, None], cx[None, :]]
    v10 = lattice[cy[:, None], cx[None, :] + 1]
    v01 = lattice[cy[:, None] + 1, cx[None, :]]
    v11 = lattice[cy[:, None] + 1, cx[None, :] + 1]
    top = v00 + (v10 - v00) * tx[None, :]
    bot = v01 + (v11 - v01) * tx[None, :]
    return top + (bot - top) * ty[:, None]


def _fractal(x0: int, y0: int, w: int, h: int, seed: int, scales: Sequence[float]) -> np.ndarray:
    out = np.zeros((h, w), np.float32)
    total = 0.0
    for k, s in enumerate(scales):
        wgt = 1.0 / (k + 1)
        out += wgt * value_noise(x0, y0, w, h, s, seed + 101 * k)
        total += wgt
    return out / total


# --------------------------------------------------------------------------- rendering
def _fill(mask: np.ndarray, poly: Polygon, x0: float, y0: float) -> None:
    """Burn 1 into ``mask`` where pixel centres fall inside ``poly`` (GDAL's rule, exact)."""
    if poly.is_empty:
        return
    rasterio.features.rasterize([(poly, 1)], out=mask, transform=Affine.translation(x0, y0), merge_alg=MergeAlg.replace)


def _burn(shapes: Sequence[tuple[Polygon, int]], h: int, w: int, x0: float, y0: float) -> np.ndarray:
    """``h x w`` int32 labels: each shape's value burnt where pixel centres fall inside it, in order.

    One GDAL call for all shapes; a later shape replaces an earlier one, so the label of a
    pixel is the last shape that covers it (the same pixels as one :func:`_fill` per shape).
    """
    out = np.zeros((h, w), np.int32)
    shapes = [(g, v) for g, v in shapes if not g.is_empty]
    if shapes:
        rasterio.features.rasterize(shapes, out=out, transform=Affine.translation(x0, y0), merge_alg=MergeAlg.replace)
    return out


def _pixel_box(poly: Polygon, x0: int, y0: int, w: int, h: int, margin: int = 2) -> tuple[int, int, int, int]:
    """``(r0, r1, c0, c1)``: the block pixels whose centres can lie in ``poly``, plus ``margin`` px."""
    minx, miny, maxx, maxy = poly.bounds
    c0 = max(int(math.floor(minx - x0)) - margin, 0)
    c1 = min(int(math.ceil(maxx - x0)) + margin, w)
    r0 = max(int(math.floor(miny - y0)) - margin, 0)
    r1 = min(int(math.ceil(maxy - y0)) + margin, h)
    return r0, max(r1, r0), c0, max(c1, c0)


def _disc(mask: np.ndarray, cx: float, cy: float, r: float, x0: int, y0: int) -> None:
    """Burn 1 into ``mask`` where pixel centres are within ``r`` of ``(cx, cy)``."""
    h, w = mask.shape
    c0, c1 = max(int(cx - r - x0) - 1, 0), min(int(cx + r - x0) + 2, w)
    r0, r1 = max(int(cy - r - y0) - 1, 0), min(int(cy + r - y0) + 2, h)
    if c1 <= c0 or r1 <= r0:
        return
    xs = np.arange(c0, c1) + x0 + 0.5 - cx
    ys = np.arange(r0, r1) + y0 + 0.5 - cy
    mask[r0:r1, c0:c1] |= ((xs[None, :] ** 2 + ys[:, None] ** 2) <= r * r).astype(mask.dtype)


def render_block(plan: ScenePlan, window: Window, tree_index: shapely.STRtree | None = None) -> np.ndarray:
    """Render the ``3 x h x w`` uint8 pixels of one window of a planned scene.

    Rendered with a margin and cropped, so the pixels do not depend on how the scene is
    cut into blocks.
    """
    m = 2
    big = Window(
        int(window.col_off) - m, int(window.row_off) - m, int(window.width) + 2 * m, int(window.height) + 2 * m
    )
    return _render(plan, big, tree_index)[:, m:-m, m:-m]


def _render(plan: ScenePlan, window: Window, tree_index: shapely.STRtree | None) -> np.ndarray:
    x0, y0 = int(window.col_off), int(window.row_off)
    w, h = int(window.width), int(window.height)
    seed = plan.seed
    n1 = _fractal(x0, y0, w, h, seed, (160.0, 40.0))
    n2 = value_noise(x0, y0, w, h, 3.0, seed + 7)
    grain = value_noise(x0, y0, w, h, 1.0, seed + 11) - 0.5
    mix = np.clip((n1 - 0.35) * 2.5, 0, 1)[..., None]
    ground = GRASS * (1 - mix) + DRY * mix
    soil = np.clip((value_noise(x0, y0, w, h, 60.0, seed + 13) - 0.7) * 4, 0, 1)[..., None]
    img = ground * (1 - soil) + SOIL * soil
    img *= (0.85 + 0.3 * n2)[..., None]
    img += (grain * 18)[..., None]

    bbox = box(x0 - 60, y0 - 60, x0 + w + 60, y0 + h + 60)
    # Roads: each road paints its kerb (its outline grown by 1.5 px), then its asphalt, over
    # what was there. One burn of every outline in that order gives, per pixel, the last paint.
    roads = [road for road in plan.roads if road.intersects(bbox)]
    if roads:
        lab = _burn(
            [(g, 2 * k + j) for k, road in enumerate(roads) for j, g in ((1, road.buffer(1.5)), (2, road))],
            h,
            w,
            x0,
            y0,
        )
        kerb = lab % 2 == 1
        img[kerb] = KERB + grain[kerb, None] * 20
        sel = (lab > 0) & ~kerb
        img[sel] = ASPHALT * (0.9 + 0.2 * n2[sel, None]) + grain[sel, None] * 10

    sx, sy = plan.shadow
    near = [b for b in plan.buildings if b.polygon.intersects(bbox)]
    # Shadows first (they fall on the ground, roofs are drawn over them).
    hulls = []
    for b in near:
        off = translate(b.polygon, sx * b.height_px, sy * b.height_px)
        hull = shapely.union(b.polygon, off).convex_hull if b.shape == "rect" else shapely.union(b.polygon, off)
        hulls.append((hull, 1))
    img[_burn(hulls, h, w, x0, y0).astype(bool)] *= 0.45

    polys = [b.polygon for b in near]
    left, right = shapely.STRtree(polys).query(polys, predicate="intersects") if polys else ((), ())
    if np.array_equal(left, right):
        # Buildings that neither overlap nor touch share no pixel: one burn labels them all, and
        # each is drawn inside its own pixel box (the same pixels as a whole-block mask each).
        lab = _burn([(p, i + 1) for i, p in enumerate(polys)], h, w, x0, y0)
        for i, b in enumerate(near):
            r0, r1, c0, c1 = _pixel_box(b.polygon, x0, y0, w, h)
            sel = lab[r0:r1, c0:c1] == i + 1
            if sel.any():
                _roof(img[r0:r1, c0:c1], sel, b, n2[r0:r1, c0:c1], grain[r0:r1, c0:c1], x0 + c0, y0 + r0)
    else:  # pragma: no cover - plans keep buildings apart; kept for plans edited by hand
        m = np.zeros((h, w), np.uint8)
        for b in near:
            m[:] = 0
            _fill(m, b.polygon, x0, y0)
            sel = m.astype(bool)
            if sel.any():
                _roof(img, sel, b, n2, grain, x0, y0)

    if len(plan.trees):
        if tree_index is None:
            tree_index = shapely.STRtree(shapely.points(plan.trees[:, 0], plan.trees[:, 1]))
        idx = tree_index.query(bbox.buffer(10))
        tree_mask = np.zeros((h, w), np.uint8)
        tree_shadow = np.zeros((h, w), np.uint8)
        for cx, cy, r in plan.trees[idx]:
            _disc(tree_shadow, cx + sx * r, cy + sy * r, r, x0, y0)
            _disc(tree_mask, cx, cy, r, x0, y0)
        ts = tree_shadow.astype(bool) & ~tree_mask.astype(bool)
        img[ts] *= 0.55
        tm = tree_mask.astype(bool)
        leaf = value_noise(x0, y0, w, h, 2.0, seed + 17)[tm]
        img[tm] = TREE * (0.7 + 0.6 * leaf[:, None])
    return np.clip(img, 0, 255).astype(np.uint8).transpose(2, 0, 1)


def _roof(img: np.ndarray, sel: np.ndarray, b: Building, n2: np.ndarray, grain: np.ndarray, x0: int, y0: int) -> None:
    """Paint building ``b`` into ``img`` where ``sel``; ``(x0, y0)``: scene pixel of ``img[0, 0]``.

    ``sel`` must have a ring of False around the building (or end where the block ends) so
    that the one-pixel rim is the same as on the whole block.
    """
    h, w = sel.shape
    roof = np.broadcast_to(b.colour, (h, w, 3))[sel] * (0.94 + 0.12 * n2[sel, None])
    roof += grain[sel, None] * 8
    if b.gable_angle is not None:
        c = b.polygon.centroid
        t = math.radians(b.gable_angle)
        rr, cc = np.nonzero(sel)
        side = (cc + x0 + 0.5 - c.x) * -math.sin(t) + (rr + y0 + 0.5 - c.y) * math.cos(t)
        roof *= np.where(side > 0, 1.12, 0.80)[:, None]
    img[sel] = roof
    # A darker rim one pixel wide: eaves and parapets.
    rim = sel & ~erode3(sel)
    img[rim] *= 0.82


def erode3(mask: np.ndarray) -> np.ndarray:
    """Binary erosion by a 3 x 3 square; outside the array counts as set (OpenCV's default border).

    >>> m = np.ones((4, 5), bool); m[0, 2] = False
    >>> erode3(m).astype(int).tolist()
    [[1, 0, 0, 0, 1], [1, 0, 0, 0, 1], [1, 1, 1, 1, 1], [1, 1, 1, 1, 1]]
    """
    p = np.pad(mask, 1, constant_values=True)
    h, w = mask.shape
    out = np.ones((h, w), bool)
    for dy in range(3):
        for dx in range(3):
            out &= p[dy : dy + h, dx : dx + w]
    return out


# --------------------------------------------------------------------------- writing
@dataclass
class Scene:
    """A written scene: the raster, its truth, and the plan behind them."""

    raster: Path
    truth: gpd.GeoDataFrame
    plan: ScenePlan


def scene_transform(pixel_size: float, origin: tuple[float, float]) -> Affine:
    """North-up transform with the top-left corner at ``origin``."""
    return Affine(pixel_size, 0.0, origin[0], 0.0, -pixel_size, origin[1])


def truth_frame(plan: ScenePlan, transform: Affine, crs: str) -> gpd.GeoDataFrame:
    """The plan's footprints in map coordinates, as a GeoDataFrame."""
    mat = [transform.a, transform.b, transform.d, transform.e, transform.c, transform.f]
    geoms = [affine_transform(b.polygon, mat) for b in plan.footprints]
    return gpd.GeoDataFrame(
        {
            "id": np.arange(1, len(geoms) + 1, dtype=np.int64),
            "shape": [b.shape for b in plan.footprints],
        },
        geometry=geoms,
        crs=crs,
    )


def write_scene(
    path: str | os.PathLike[str],
    width: int = 2048,
    height: int | None = None,
    *,
    seed: int = 0,
    pixel_size: float = 0.5,
    crs: str = "EPSG:32633",
    origin: tuple[float, float] = (500000.0, 4650000.0),
    density: float = 0.7,
    truth_path: str | os.PathLike[str] | None = None,
    block: int = 1024,
) -> Scene:
    """Write a synthetic scene as a tiled, compressed GeoTIFF and its truth as a GeoPackage.

    The truth goes to ``truth_path`` (default ``<stem>_buildings.gpkg`` beside the raster),
    layer ``buildings``. Memory stays flat: the raster is rendered ``block`` px at a time.
    """
    height = width if height is None else height
    path = Path(path)
    plan = plan_scene(width, height, seed, pixel_size=pixel_size, density=density)
    transform = scene_transform(pixel_size, origin)
    profile = {
        "driver": "GTiff",
        "width": width,
        "height": height,
        "count": 3,
        "dtype": "uint8",
        "crs": crs,
        "transform": transform,
        "tiled": True,
        "blockxsize": 256,
        "blockysize": 256,
        "compress": "deflate",
        "photometric": "RGB",
        "predictor": 2,
        "interleave": "pixel",
    }
    tree_index = shapely.STRtree(shapely.points(plan.trees[:, 0], plan.trees[:, 1])) if len(plan.trees) else None
    path.parent.mkdir(parents=True, exist_ok=True)
    with rasterio.open(path, "w", **profile) as dst:
        for r in range(0, height, block):
            for c in range(0, width, block):
                win = Window(c, r, min(block, width - c), min(block, height - r))
                dst.write(render_block(plan, win, tree_index), window=win)
    truth = truth_frame(plan, transform, crs)
    tpath = Path(truth_path) if truth_path else path.with_name(f"{path.stem}_buildings.gpkg")
    if tpath.exists():
        tpath.unlink()
    truth.to_file(tpath, layer="buildings", driver="GPKG")
    return Scene(raster=path, truth=truth, plan=plan)
