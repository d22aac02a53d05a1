"""Right-angle regularisation of footprints vectorised from pixel masks."""

from __future__ import annotations

import geopandas as gpd
import numpy as np
import pytest
import rasterio.features
import shapely
from affine import Affine
from shapely.geometry import MultiPolygon, Polygon, shape

from fastsam_geo.regularize import dominant_angle, regularize, regularize_array

# 0.5 m pixels in UTM 33N: the footprints live at realistic map coordinates
TRANSFORM = Affine(0.5, 0, 500_000.0, 0, -0.5, 5_000_000.0)


def vectorise(truth: Polygon, size: int = 200, transform: Affine = TRANSFORM) -> Polygon:
    """Rasterise a map-coordinate polygon on the pixel grid and vectorise the mask back:
    the pixel staircase a segmentation mask gives."""
    mask = rasterio.features.rasterize([truth], out_shape=(size, size), transform=transform).astype(np.uint8)
    parts = [
        shape(g)
        for g, v in rasterio.features.shapes(mask, mask=mask.astype(bool), transform=transform)
        if v == 1
    ]
    return max(parts, key=lambda g: g.area)


def on_map(poly: Polygon) -> Polygon:
    """Pixel-unit shape (col, row) -> map coordinates."""
    return shapely.affinity.affine_transform(poly, TRANSFORM.to_shapely())


def iou(a: Polygon, b: Polygon) -> float:
    return a.intersection(b).area / a.union(b).area


def corners(p: Polygon) -> int:
    return len(p.exterior.coords) - 1


@pytest.mark.parametrize("angle", [0.0, 8.0, 23.0, 37.0, 45.0, 71.0])
def test_staircase_rectangle_becomes_the_rectangle(angle):
    truth = on_map(shapely.affinity.rotate(shapely.box(60, 80, 140, 120), angle))  # 40 m x 20 m
    stair = vectorise(truth)
    assert corners(stair) >= 4 if angle == 0 else corners(stair) > 20
    out = regularize(stair)
    assert out is not stair and out.is_valid
    assert corners(out) == 4
    assert iou(out, truth) > 0.95
    # the four angles are right angles
    c = np.asarray(out.exterior.coords)[:-1]
    e = np.roll(c, -1, axis=0) - c
    cos = (
        np.einsum("ij,ij->i", e, np.roll(e, -1, axis=0))
        / np.linalg.norm(e, axis=1)
        / np.linalg.norm(np.roll(e, -1, axis=0), axis=1)
    )
    assert np.abs(cos).max() < 1e-9
    assert dominant_angle(out) == pytest.approx(((-angle + 45) % 90) - 45, abs=1.5)  # y axis flips


@pytest.mark.parametrize("angle", [0.0, 17.0, 40.0])
def test_l_shape_keeps_six_corners(angle):
    ell = Polygon([(50, 50), (150, 50), (150, 90), (90, 90), (90, 150), (50, 150)])
    truth = on_map(shapely.affinity.rotate(ell, angle, origin=(100, 100)))
    stair = vectorise(truth)
    out = regularize(stair)
    assert out is not stair and out.is_valid
    assert corners(out) == 6
    assert iou(out, truth) > 0.95


def test_courtyard_keeps_its_hole():
    court = shapely.box(40, 40, 160, 160).difference(shapely.box(80, 80, 120, 130))
    truth = on_map(shapely.affinity.rotate(court, 25, origin=(100, 100)))
    stair = vectorise(truth)
    assert len(stair.interiors) == 1
    out = regularize(stair)
    assert out is not stair and out.is_valid
    assert len(out.interiors) == 1
    assert corners(out) == 4 and len(out.interiors[0].coords) - 1 == 4
    assert iou(out, truth) > 0.95
    hole_truth = Polygon(truth.interiors[0])
    assert iou(Polygon(out.interiors[0]), hole_truth) > 0.9


def test_circle_is_refused():
    circle = on_map(shapely.Point(100, 100).buffer(40))
    assert regularize(circle) is circle
    stair = vectorise(circle)
    assert regularize(stair) is stair


def test_refusals_return_the_input_unchanged():
    truth = on_map(shapely.affinity.rotate(shapely.box(60, 80, 140, 120), 23))
    stair = vectorise(truth)
    assert regularize(stair, max_hausdorff=0.01) is stair  # 1 cm: the staircase moves more
    assert regularize(stair, max_area_change=1e-6) is stair
    assert regularize(stair, min_aligned=1.01) is stair
    assert regularize(Polygon()).is_empty
    pt = shapely.Point(0, 0)
    assert regularize(pt) is pt
    assert regularize(None) is None


def test_staircase_noise_smaller_than_a_step_disappears():
    # a rectangle with a one-pixel notch and a one-pixel bump: steps, not walls
    pix = (
        shapely.box(50, 50, 150, 110)
        .difference(shapely.box(90, 50, 92, 51))
        .union(shapely.box(120, 110, 122, 111))
    )
    poly = on_map(pix)
    out = regularize(poly, tolerance=0.5)  # about one pixel
    assert corners(out) == 4
    assert iou(out, on_map(shapely.box(50, 50, 150, 110))) > 0.99


def test_real_wall_step_is_kept():
    # a 6 m (12 px) step in the facade is architecture, not noise
    pix = Polygon([(50, 50), (150, 50), (150, 110), (100, 110), (100, 122), (50, 122)])
    out = regularize(on_map(pix), tolerance=0.5)
    assert corners(out) == 6


def test_multipolygon_and_array():
    a = vectorise(on_map(shapely.affinity.rotate(shapely.box(20, 20, 80, 60), 12)))
    b = vectorise(on_map(shapely.affinity.rotate(shapely.box(110, 110, 180, 150), 30)))
    out = regularize(MultiPolygon([a, b]))
    assert out.geom_type == "MultiPolygon" and [corners(g) for g in out.geoms] == [4, 4]
    circle = on_map(shapely.Point(100, 100).buffer(20))
    gs = gpd.GeoSeries([a, None, circle, b], crs="EPSG:32633")
    arr = regularize_array(gs)
    assert isinstance(arr, np.ndarray) and arr.shape == (4,)
    assert corners(arr[0]) == 4 and arr[1] is None and arr[2] is circle and corners(arr[3]) == 4
    arr2 = regularize_array(np.asarray([a, b], dtype=object), tolerance=0.5)
    assert [corners(g) for g in arr2] == [4, 4]


def test_random_rectangles_are_valid_and_close():
    rng = np.random.default_rng(7)
    for _ in range(25):
        w, h, ang = rng.uniform(20, 90), rng.uniform(20, 90), rng.uniform(-45, 45)
        truth = on_map(
            shapely.affinity.rotate(shapely.box(100 - w / 2, 100 - h / 2, 100 + w / 2, 100 + h / 2), ang)
        )
        out = regularize(vectorise(truth))
        assert out.is_valid
        assert corners(out) == 4
        assert iou(out, truth) > 0.93
