"""Radiometry: how a raster's values become the 8-bit RGB the model sees.

8-bit imagery passes through; other data are stretched per band with global percentiles
(:class:`Stretch`, computed once by :class:`fastsam_geo.raster.RasterSource`) onto
``STRETCH_OUT``, with a gamma (:func:`dark_gamma`) for dark sensor data (:func:`sensor_data`:
16-bit, 32-bit and float values, linear in radiance or reflectance where 8-bit pictures are
display-encoded). Imported by :mod:`fastsam_geo.raster`, which re-exports these names.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import rasterio

StretchMode = Literal["auto", "none", "percentile"]


@dataclass(frozen=True)
class Stretch:
    """Per-band stretch ``((value - lo) / (hi - lo)) ** gamma * 255``, clipped to 0-255.

    >>> s = Stretch(lo=(0.0,), hi=(1000.0,))
    >>> s.apply(np.array([[[0, 500, 2000]]], np.float32)).tolist()
    [[[0, 128, 255]]]
    >>> Stretch(lo=(0.0,), hi=(1000.0,), gamma=0.5).apply(np.array([[[250]]], np.float32)).tolist()
    [[[128]]]
    """

    lo: tuple[float, ...]
    hi: tuple[float, ...]
    gamma: float = 1.0
    out: tuple[float, float] = (0.0, 255.0)

    def apply(self, data: np.ndarray) -> np.ndarray:
        """Stretch a ``bands x H x W`` array to uint8: ``lo`` -> ``out[0]``, ``hi`` -> ``out[1]``."""
        lo = np.asarray(self.lo, np.float32)[:, None, None]
        hi = np.asarray(self.hi, np.float32)[:, None, None]
        o0, o1 = np.float32(self.out[0] / 255.0), np.float32(self.out[1] / 255.0)
        scale = (o1 - o0) / np.maximum(hi - lo, np.float32(1e-12))
        out = (data.astype(np.float32) - lo) * scale + o0
        out = np.clip(np.nan_to_num(out, nan=0.0, posinf=1.0, neginf=0.0), 0.0, 1.0)
        if self.gamma != 1.0:
            out = out ** np.float32(self.gamma)
        return np.rint(out * np.float32(255.0)).astype(np.uint8)


def _bit_depth(ds: rasterio.io.DatasetReader, dtype: str) -> str:
    """`` (11-bit)`` for integer data that declares fewer bits than its type (``NBITS``), else ``""``."""
    try:
        nbits = ds.tags(1, ns="IMAGE_STRUCTURE").get("NBITS")
    except Exception:
        nbits = None
    if nbits and np.issubdtype(np.dtype(dtype), np.integer) and int(nbits) < np.dtype(dtype).itemsize * 8:
        return f" ({int(nbits)}-bit)"
    return ""


def sensor_data(dtype: str, valid: np.ndarray) -> bool:
    """True for data that may need :func:`dark_gamma`: anything but an 8-bit picture.

    Sensor products in 16-bit integers (full range, or 10-14 bits as in 11-bit satellite data),
    32-bit integers or floats (reflectance 0-1) are linear in radiance, and most of a scene sits
    in the dark part of their range; 8-bit pictures (and 8-bit values in a wider type: none above
    255) are display-encoded already. ``valid``: the valid sample values.

    >>> sensor_data("uint16", np.array([0, 1800])), sensor_data("float32", np.array([0.02, 0.4]))
    (True, True)
    >>> sensor_data("uint8", np.array([0, 255])), sensor_data("uint16", np.array([3, 250]))
    (False, False)
    """
    kind = np.dtype(dtype)
    if kind.itemsize == 1:
        return False
    if np.issubdtype(kind, np.integer):
        return bool(valid.size) and float(valid.max()) > 255
    return True


RADIOMETRY_RULES = 2
"""Bumped whenever the way a raster's values become the model's picture changes (2, stop 31: the
dark-data gamma for every sensor product, from a median under 0.4). Part of every mask-cache key
(:func:`fastsam_geo.cache.cache_key`): masks cached under other rules are misses, not served."""


#: Where the low and high percentiles land in 0-255. Real 8-bit orthophotos do not fill the
#: range: measured on the real sets of this project (Banepa, Kampala, Rio), their 2 % and 98 %
#: points lie at 4-29 and 106-254 per band. Mapping them to 16 and 224 keeps the outer 2 % of
#: roofs and shadows unclipped and gives a picture of the contrast the models were trained on.
STRETCH_OUT = (16.0, 224.0)


#: Median brightness (0-1, after the linear stretch) under which sensor data get a gamma, and
#: where the gamma lifts it to: one value, so that the gamma goes to 1 continuously as the median
#: rises to it (with 0.3 and a target of 0.4, a median of 0.299 got gamma 0.76 and 0.301 none).
#: Display-encoded 8-bit imagery has its median at 0.32-0.74 (the real training rasters here);
#: the same rasters as linear radiance at 0.10-0.57.
DARK_MEDIAN = 0.4


def dark_gamma(data: np.ndarray, lo: Sequence[float], hi: Sequence[float], target: float = DARK_MEDIAN) -> float:
    """A gamma (0.5-1) that lifts the median of dark, high-dynamic-range data towards ``target``.

    Satellite 11/12-bit scenes are mostly dark with a long bright tail (roofs, clouds): after
    a linear percentile stretch their median can sit near black, where the model sees little.
    Used for sensor data (:func:`sensor_data`: 16-bit, 32-bit, float); 8-bit pictures keep the
    linear stretch. Measured on the validation split read as linear-radiance panchromatic data
    (README, "Radiometry"): full-range 16-bit 0.519 -> 0.532 object F1, float reflectance 0.523 ->
    0.534, where 11-bit data, which had the gamma already, give 0.530.
    ``data`` is ``bands x N`` valid pixels; 1.0 (no gamma) when the median is not dark.

    >>> v = np.linspace(0, 1, 1001) ** 2 * 2000
    >>> round(dark_gamma(v[None], [0.0], [2000.0]), 2)
    0.66
    >>> dark_gamma(np.linspace(0, 2000, 1001)[None], [0.0], [2000.0])
    1.0
    """
    lo_a = np.asarray(lo, np.float64)[:, None]
    hi_a = np.asarray(hi, np.float64)[:, None]
    norm = np.clip((data - lo_a) / np.maximum(hi_a - lo_a, 1e-12), 0, 1).mean(axis=0)
    med = float(np.median(norm)) if norm.size else 0.5
    if med >= target or med <= 0.0:
        return 1.0
    return float(np.clip(np.log(target) / np.log(med), 0.5, 1.0))
