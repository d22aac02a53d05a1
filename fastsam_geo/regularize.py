"""Right-angle building outlines: snap a footprint's edges to one dominant direction.

A footprint vectorised from a mask has pixel staircases and wobbly edges. Most buildings
are made of right angles, so :func:`regularize`:

1. finds the building's dominant direction: the minimum rotated rectangle's, refined by
   the length-weighted mean (modulo 90°) of the simplified edges within
   ``angle_tolerance`` of it;
2. simplifies the outline (Douglas-Peucker, ``tolerance``) and rotates it so that the
   dominant direction is the x axis;
3. snaps every edge to horizontal or vertical, merges consecutive edges of one direction
   into a *run* (a line ``y = a`` or ``x = b``, placed at the length-weighted mean of its
   edges), drops runs shorter than ``2 * tolerance`` (steps of the staircase: their two
   neighbours merge), and rebuilds the ring from the intersections of consecutive runs;
4. does the same for every hole, with the same direction (holes are kept);
5. checks the result and REFUSES it -- returns the input unchanged -- when it is invalid,
   when the input is not right-angled to start with (less than ``min_aligned`` of its
   simplified outline within ``angle_tolerance`` of the two directions: a round or
   free-form building), when it moves the outline by more than ``max_hausdorff``, or when
   it changes the area by more than ``max_area_change``.

shapely and numpy only; every length is in the polygon's units (map units).
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np
import shapely
from shapely.geometry import MultiPolygon, Polygon
from shapely.geometry.base import BaseGeometry

__all__ = ["dominant_angle", "regularize", "regularize_array"]


def _edge_angles(coords: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Angles (degrees) and lengths of the edges of a closed ring's coordinates."""
    d = np.diff(coords[:, :2], axis=0)
    return np.degrees(np.arctan2(d[:, 1], d[:, 0])), np.hypot(d[:, 0], d[:, 1])


def _wrap90(a: np.ndarray | float) -> np.ndarray:
    """Angle differences folded to ``[-45, 45)`` degrees (directions modulo 90°)."""
    return (np.asarray(a, np.float64) + 45.0) % 90.0 - 45.0


def _rings(polygon: Polygon) -> list[np.ndarray]:
    return [np.asarray(polygon.exterior.coords)] + [np.asarray(r.coords) for r in polygon.interiors]


def dominant_angle(polygon: Polygon, *, tolerance: float = 0.0, angle_tolerance: float = 15.0) -> float:
    """The building's dominant direction in degrees, in ``[-45, 45)`` (it is defined modulo 90°).

    The minimum rotated rectangle gives a first guess, robust to pixel staircases; the
    length-weighted mean deviation of the (simplified) edges within ``angle_tolerance`` of
    it refines it.

    >>> sq = shapely.affinity.rotate(shapely.box(0, 0, 10, 4), 30, origin=(0, 0))
    >>> round(dominant_angle(sq), 6)
    30.0
    """
    env = shapely.oriented_envelope(polygon)
    if env.geom_type != "Polygon":
        return 0.0
    angles, lengths = _edge_angles(np.asarray(env.exterior.coords))
    theta = float(_wrap90(angles[int(np.argmax(lengths))]))
    simple = shapely.simplify(polygon, tolerance, preserve_topology=True) if tolerance > 0 else polygon
    a, w = (
        np.concatenate([_edge_angles(r)[0] for r in _rings(simple)]),
        np.concatenate([_edge_angles(r)[1] for r in _rings(simple)]),
    )
    for _ in range(2):
        dev = _wrap90(a - theta)
        near = np.abs(dev) <= angle_tolerance
        if w[near].sum() > 0:
            theta = float(_wrap90(theta + np.average(dev[near], weights=w[near] ** 2)))
    return theta


def _aligned_fraction(polygon: Polygon, theta: float, angle_tolerance: float) -> float:
    a = np.concatenate([_edge_angles(r)[0] for r in _rings(polygon)])
    w = np.concatenate([_edge_angles(r)[1] for r in _rings(polygon)])
    total = w.sum()
    return float(w[np.abs(_wrap90(a - theta)) <= angle_tolerance].sum() / total) if total > 0 else 0.0


def _chord_indices(ring: np.ndarray, simple: np.ndarray) -> np.ndarray | None:
    """Index in ``ring`` of each vertex of its simplification ``simple`` (both closed), in order.

    Douglas-Peucker keeps a subset of the vertices, so each simplified edge (a *chord*) stands
    for a stretch of the original ring. None when the vertices cannot be matched.
    """
    pts = ring[:-1]
    n = len(pts)
    out: list[int] = []
    pos = 0
    for p in simple[:-1]:
        for step in range(n):
            j = (pos + step) % n
            if pts[j, 0] == p[0] and pts[j, 1] == p[1]:
                out.append(j)
                pos = j + 1
                break
        else:
            return None
    return np.asarray(out, np.int64)


def _snapped_chords(pts: np.ndarray, chords: np.ndarray) -> list[tuple[bool, float, float]]:
    """Each chord snapped to horizontal or vertical: ``(is_horizontal, offset, weight)``.

    The offset is the area-preserving line of the stretch of ``pts`` the chord stands for
    (``y = sum(y dx) / sum(dx)`` for a horizontal chord); the weight is the chord's extent
    along its direction. Chords whose two ends coincide are left out.
    """
    n_pts = len(pts)
    out: list[tuple[bool, float, float]] = []
    for k in range(len(chords)):
        i0, i1 = int(chords[k]), int(chords[(k + 1) % len(chords)])
        span = (i1 - i0) % n_pts or n_pts
        idx = (i0 + np.arange(span + 1)) % n_pts
        sub = pts[idx]
        d = np.diff(sub, axis=0)
        mid = (sub[:-1] + sub[1:]) / 2.0
        cx, cy = sub[-1] - sub[0]
        if cx == 0 and cy == 0:
            continue
        if abs(cx) >= abs(cy):
            out.append((True, float((mid[:, 1] * d[:, 0]).sum() / cx), abs(float(cx))))
        else:
            out.append((False, float((mid[:, 0] * d[:, 1]).sum() / cy), abs(float(cy))))
    return out


def _runs(snapped: list[tuple[bool, float, float]]) -> list[list[float]]:
    """Runs of consecutive chords of one direction (cyclic): ``[is_horizontal, offset, weight]``,
    each offset the weighted mean of its chords'."""
    runs: list[list[float]] = []
    for h, o, w in snapped:
        if runs and bool(runs[-1][0]) == h:
            r = runs[-1]
            r[1] = (r[1] * r[2] + o * w) / (r[2] + w) if r[2] + w > 0 else o
            r[2] += w
        else:
            runs.append([float(h), o, w])
    if len(runs) > 1 and runs[0][0] == runs[-1][0]:
        first, last = runs[0], runs.pop()
        tot = first[2] + last[2]
        first[1] = (first[1] * first[2] + last[1] * last[2]) / tot if tot > 0 else first[1]
        first[2] = tot
    return runs


def _drop_short_runs(runs: list[list[float]], min_run: float) -> list[list[float]]:
    """Drop the shortest run while it is shorter than ``min_run`` (a step of a staircase): its two
    neighbours, of one direction, merge. At least 4 runs stay."""
    while len(runs) > 4:
        n = len(runs)
        span = np.asarray([abs(runs[(k + 1) % n][1] - runs[k - 1][1]) for k in range(n)])
        k = int(np.argmin(span))
        if span[k] >= min_run:
            break
        runs = runs[k - 1 :] + runs[: k - 1] if k else runs[-1:] + runs[:-1]  # now prev, k, next = 0, 1, 2
        a, b = runs[0], runs[2]
        tot = a[2] + b[2]
        merged = [a[0], (a[1] * a[2] + b[1] * b[2]) / tot if tot > 0 else a[1], tot]
        runs = [merged, *runs[3:]]
    return runs


def _corners(runs: list[list[float]]) -> np.ndarray | None:
    """The closed ring through the intersections of consecutive runs, duplicate corners merged;
    None when fewer than 4 corners are left."""
    n = len(runs)
    corners = []
    for k in range(n):
        r, s = runs[k], runs[(k + 1) % n]
        if r[0]:  # horizontal y = r[1], then vertical x = s[1]
            corners.append((s[1], r[1]))
        else:
            corners.append((r[1], s[1]))
    ring = np.asarray(corners, np.float64)
    # merge duplicates and collinear corners (zero-length runs)
    keep_idx = [i for i in range(len(ring)) if not np.allclose(ring[i], ring[i - 1])]
    ring = ring[keep_idx]
    if len(ring) < 4:
        return None
    return np.vstack([ring, ring[:1]])


def _regularize_ring(ring: np.ndarray, chords: np.ndarray | None, min_run: float) -> np.ndarray | None:
    """Snap a closed ring (already rotated: dominant direction = x axis) to right angles.

    ``chords`` are the indices of the simplified ring's vertices in ``ring`` (see
    :func:`_chord_indices`); each chord is snapped to horizontal or vertical by its own
    direction, and placed where the original stretch it stands for balances on both sides
    (``y = sum(y dx) / sum(dx)`` for a horizontal chord, the area-preserving line: a pixel
    staircase lands on the true edge, not half a pixel off). Returns the closed coordinates
    of the new ring, or None when nothing ring-like is left.
    """
    if chords is None or len(chords) < 3:
        return None
    snapped = _snapped_chords(ring[:-1, :2], chords)
    if len(snapped) < 3:
        return None
    runs = _runs(snapped)
    if len(runs) < 4 or len(runs) % 2:
        return None
    return _corners(_drop_short_runs(runs, min_run))


def _default_tolerance(polygon: Polygon) -> float:
    """``0.05 * sqrt(area)``; for a pixel outline (every edge axis-parallel) at least its
    shortest edge (one pixel on a staircase), capped at ``0.1 * sqrt(area)``."""
    scale = math.sqrt(polygon.area)
    base = 0.05 * scale
    d = np.abs(np.diff(np.asarray(polygon.exterior.coords)[:, :2], axis=0))
    length = np.hypot(d[:, 0], d[:, 1])
    eps = 1e-9 * max(scale, 1.0)
    if len(length) and ((d[:, 0] <= eps) | (d[:, 1] <= eps)).all() and (length > eps).any():
        return max(base, min(float(length[length > eps].min()), 0.1 * scale))
    return base


def regularize(
    polygon: BaseGeometry,
    *,
    tolerance: float | None = None,
    max_hausdorff: float | None = None,
    max_area_change: float = 0.25,
    angle_tolerance: float = 15.0,
    min_aligned: float = 0.6,
) -> BaseGeometry:
    """A right-angle version of ``polygon``, or ``polygon`` itself when that would be wrong.

    Args:
        polygon: a Polygon (a MultiPolygon is done part by part; anything else comes back).
        tolerance: simplification tolerance in map units: give the pixel size when you
            know it. The default is ``0.05 * sqrt(area)``, or for a pixel outline its shortest
            edge (one pixel) when that is larger (capped at ``0.1 * sqrt(area)``). Runs
            (straight stretches) shorter than twice it are steps and disappear.
        max_hausdorff: refuse when the outline moves further than this (map units); default
            ``max(2 * tolerance, 0.1 * sqrt(area))``.
        max_area_change: refuse when ``|new area / old area - 1|`` exceeds this.
        angle_tolerance: degrees; edges this close to the dominant directions count as
            aligned (for the direction estimate and for ``min_aligned``).
        min_aligned: refuse when less than this fraction of the simplified outline's length
            is aligned: the building is not right-angled (round, free-form).

    A noisy rectangle becomes 4 corners; holes are regularised too:

    >>> noisy = Polygon([(0, 0), (5, 0.2), (10, 0), (10, 6), (5, 5.8), (0, 6)])
    >>> r = regularize(noisy, tolerance=0.5)
    >>> len(r.exterior.coords) - 1, round(r.area, 1), round(noisy.area, 1)   # area kept
    (4, 58.0, 58.0)
    >>> court = shapely.box(0, 0, 20, 20).difference(shapely.box(6, 6, 14, 14))
    >>> len(regularize(court).interiors)
    1
    >>> circle = shapely.Point(0, 0).buffer(10)
    >>> regularize(circle) is circle      # refused: not right-angled
    True
    """
    if polygon is None or polygon.is_empty:
        return polygon
    if isinstance(polygon, MultiPolygon):
        parts = [
            regularize(
                p,
                tolerance=tolerance,
                max_hausdorff=max_hausdorff,
                max_area_change=max_area_change,
                angle_tolerance=angle_tolerance,
                min_aligned=min_aligned,
            )
            for p in polygon.geoms
        ]
        out = MultiPolygon(parts)
        return out if out.is_valid else polygon
    if not isinstance(polygon, Polygon) or polygon.area <= 0:
        return polygon

    area = polygon.area
    tol = _default_tolerance(polygon) if tolerance is None else float(tolerance)
    max_h = max(2.0 * tol, 0.1 * math.sqrt(area)) if max_hausdorff is None else float(max_hausdorff)
    result = _squared(polygon, tol, angle_tolerance, min_aligned)
    if result is None:
        return polygon
    if abs(result.area / area - 1.0) > max_area_change:
        return polygon
    if shapely.hausdorff_distance(result, polygon) > max_h:
        return polygon
    return result


def _squared(polygon: Polygon, tol: float, angle_tolerance: float, min_aligned: float) -> Polygon | None:
    """Steps 1-4 of :func:`regularize` on one polygon: its right-angle version, a valid polygon in
    the input's coordinates, or None when it is not right-angled or cannot be squared."""
    # work near the origin: map coordinates (1e6 m) cost precision in the rotations
    x0, y0 = polygon.centroid.x, polygon.centroid.y
    local = shapely.affinity.translate(polygon, -x0, -y0)
    simple = shapely.simplify(local, tol, preserve_topology=True)
    if simple.is_empty or simple.geom_type != "Polygon":
        return None
    theta = dominant_angle(simple, angle_tolerance=angle_tolerance)
    if _aligned_fraction(simple, theta, angle_tolerance) < min_aligned:
        return None

    c, s = math.cos(math.radians(-theta)), math.sin(math.radians(-theta))
    rot = np.array([[c, -s], [s, c]])
    if len(simple.interiors) != len(local.interiors):
        return None
    rings = []
    for orig, simp in zip(_rings(local), _rings(simple), strict=True):
        rings.append((orig[:, :2] @ rot.T, _chord_indices(orig[:, :2], simp[:, :2])))
    shell = _regularize_ring(*rings[0], 2.0 * tol)
    if shell is None:
        return None
    holes = []
    for ring, chords in rings[1:]:
        h = _regularize_ring(ring, chords, 2.0 * tol)
        holes.append(ring if h is None else h)
    back = rot  # inverse rotation = transpose; coordinates are rows, so multiply by rot
    try:
        result = Polygon(shell @ back, [h @ back for h in holes])
    except (ValueError, shapely.errors.GEOSException):
        return None
    if not result.is_valid or result.is_empty:
        return None
    return shapely.affinity.translate(result, x0, y0)


def regularize_array(geoms: Iterable[BaseGeometry | None], **kwargs: float | None) -> np.ndarray:
    """:func:`regularize` over a GeoSeries, an array or a list; an object array comes back.

    >>> out = regularize_array([shapely.box(0, 0, 4, 2), None, shapely.Point(0, 0).buffer(3)])
    >>> [g is None or g.geom_type for g in out]
    ['Polygon', True, 'Polygon']
    """
    values = geoms.values if hasattr(geoms, "values") else geoms
    items = list(np.asarray(values, dtype=object).ravel()) if not isinstance(values, list) else values
    out = np.empty(len(items), dtype=object)
    for i, g in enumerate(items):
        out[i] = regularize(g, **kwargs) if g is not None else None
    return out
