"""Ground resolution: metres per pixel on the ground, and the working grid at a chosen resolution.

A raster much finer or coarser than the model's working ground resolution is seen through a
working grid covering the same bounds at that resolution (:func:`working_grid`); within
``GSD_TOLERANCE`` of it the raster is read as it is. Imported by :mod:`fastsam_geo.raster`,
which re-exports these names.
"""

from __future__ import annotations

import numpy as np
import rasterio
from affine import Affine

#: A raster within this ratio of the working resolution is read as it is (no resampling).
GSD_TOLERANCE = 1.2


def ground_resolution(crs: rasterio.crs.CRS, transform: Affine, width: int, height: int) -> tuple[float, float]:
    """Metres on the ground per pixel (x, y) at the raster's centre, on the WGS84 ellipsoid.

    True ground metres whatever the CRS: degrees (EPSG:4326) and web-mercator "metres"
    (EPSG:3857, too large by 1/cos(latitude)) are both measured geodesically.

    >>> from rasterio.crs import CRS
    >>> gx, gy = ground_resolution(CRS.from_epsg(32633), Affine(0.5, 0, 500000, 0, -0.5, 4649000), 100, 100)
    >>> round(gx, 3), round(gy, 3)
    (0.5, 0.5)
    >>> gx, gy = ground_resolution(CRS.from_epsg(4326), Affine(1e-5, 0, 0, 0, -1e-5, 0.0005), 100, 100)
    >>> round(gx, 3), round(gy, 3)
    (1.113, 1.106)
    """
    from pyproj import CRS as PCRS
    from pyproj import Geod, Transformer

    try:
        to_geo = Transformer.from_crs(PCRS.from_user_input(crs.to_wkt()), PCRS.from_epsg(4326), always_xy=True)
        cx, cy = transform * (width / 2, height / 2)
        px, py = transform * (width / 2 + 1, height / 2)
        qx, qy = transform * (width / 2, height / 2 + 1)
        (lon0, lon1, lon2), (lat0, lat1, lat2) = to_geo.transform([cx, px, qx], [cy, py, qy])
        geod = Geod(ellps="WGS84")
        gx = geod.inv(lon0, lat0, lon1, lat1)[2]
        gy = geod.inv(lon0, lat0, lon2, lat2)[2]
        if gx > 0 and gy > 0 and np.isfinite(gx) and np.isfinite(gy):
            return float(gx), float(gy)
    except Exception:  # a local/engineering CRS: fall back on its linear units
        pass
    unit = float(crs.linear_units_factor[1]) if not crs.is_geographic else 111_320.0
    return abs(transform.a) * unit, abs(transform.e) * unit


def working_grid(
    width: int, height: int, transform: Affine, native_gsd: float, gsd: float | None, tolerance: float = GSD_TOLERANCE
) -> tuple[int, int, Affine]:
    """The grid (width, height, transform) at ground resolution ``gsd`` over the same bounds.

    The raster's own grid when ``gsd`` is None or within ``tolerance`` of ``native_gsd``.

    >>> t = Affine(0.05, 0, 0, 0, -0.05, 100)
    >>> w, h, t2 = working_grid(4000, 2000, t, 0.05, 0.3)
    >>> (w, h, round(t2.a, 4), round(t2.e, 4))
    (667, 333, 0.2999, -0.3003)
    >>> working_grid(1000, 1000, t, 0.05, 0.055)[:2]
    (1000, 1000)
    """
    if gsd is None or gsd <= 0 or 1 / tolerance <= gsd / native_gsd <= tolerance:
        return width, height, transform
    factor = gsd / native_gsd
    w = max(1, round(width / factor))
    h = max(1, round(height / factor))
    return w, h, transform * Affine.scale(width / w, height / h)
