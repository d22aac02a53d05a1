"""Band choice: which three bands of a raster are read as RGB, and colour tables.

The rules of :func:`band_layout` (bands given, grey, colour interpretation, band descriptions,
:data:`KNOWN_LAYOUTS`, else 1, 2, 3) and the palette expansion of one-band paletted rasters.
Imported by :mod:`fastsam_geo.raster`, which re-exports these names.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import rasterio
from rasterio.enums import ColorInterp

from fastsam_geo.errors import RasterError

#: RGB of multispectral rasters that name neither colours nor bands, by band count:
#: 4 bands are taken as blue, green, red, NIR (Maxar WorldView/GeoEye/QuickBird 4-band and
#: PlanetScope 4-band analytic deliveries); 8 bands in the WorldView-2/3 order coastal, blue,
#: green, yellow, red, red edge, NIR1, NIR2. Pléiades and NAIP deliver red, green, blue, NIR:
#: their files carry colour interpretation (else pass ``bands=(1, 2, 3)``); PlanetScope 8-band
#: and Maxar ARD files name their bands (read from the band descriptions).
KNOWN_LAYOUTS: dict[int, tuple[tuple[int, int, int], str]] = {
    4: ((3, 2, 1), "4 bands without colour names: blue, green, red, NIR order assumed"),
    8: ((5, 3, 2), "8 bands without colour names: WorldView-2/3 order assumed (coastal, blue, green, yellow, red...)"),
}

_COLOUR_WORDS = {"red": ("red", "r"), "green": ("green", "g"), "blue": ("blue", "b")}
_NOT_COLOUR = {"edge", "rededge", "coastal", "nir", "i", "ii", "1", "2"}


def _band_by_name(descriptions: Sequence[str | None]) -> tuple[int, int, int] | None:
    """Bands whose description names red, green and blue ("Red", "BAND_R", "B04 red"...).

    >>> _band_by_name(["coastal_blue", "blue", "green_i", "green", "yellow", "red", "rededge", "nir"])
    (6, 4, 2)
    >>> _band_by_name(["BAND_B", "BAND_C", "BAND_G", "BAND_R", "BAND_IR", "BAND_Y", "BAND_RE", "BAND_N2"])
    (4, 3, 1)
    >>> _band_by_name([None, None, None]) is None
    True
    """
    import re

    found: dict[str, int] = {}
    for i, desc in enumerate(descriptions, start=1):
        words = [w for w in re.split(r"[^a-z0-9]+", (desc or "").lower()) if w and w != "band"]
        words = [w for w in words if not re.fullmatch(r"b?\d+", w)]  # "B04", "5": numbers, not names
        if not words or _NOT_COLOUR & set(words):
            continue
        for colour, names in _COLOUR_WORDS.items():
            if colour not in found and any(w in names for w in words):
                found[colour] = i
    if len(found) == 3:
        return found["red"], found["green"], found["blue"]
    return None


def band_layout(
    count: int,
    colorinterp: Sequence[ColorInterp] = (),
    bands: Sequence[int] | None = None,
    descriptions: Sequence[str | None] = (),
) -> tuple[tuple[int, int, int], str]:
    """The three 1-based band indexes to read as RGB, and the rule that chose them.

    Rules, first that applies: ``bands`` given; 1 or 2 bands (grey, grey + alpha): grey; colour
    interpretation red, green, blue; band descriptions naming red, green, blue; a known
    layout by band count (:data:`KNOWN_LAYOUTS`); else bands 1, 2, 3.

    >>> band_layout(8)
    ((5, 3, 2), '8 bands without colour names: WorldView-2/3 order assumed (coastal, blue, green, yellow, red...)')
    >>> band_layout(2)[0], band_layout(5)[0]
    ((1, 1, 1), (1, 2, 3))
    """
    if bands is not None:
        return choose_bands(count, colorinterp, bands), "bands given"
    if count < 3:
        return (1, 1, 1), "one grey band" if count == 1 else "grey band 1 (2 bands: grey and alpha)"
    ci = list(colorinterp)
    if all(c in ci for c in (ColorInterp.red, ColorInterp.green, ColorInterp.blue)):
        red, green, blue = (ci.index(c) + 1 for c in (ColorInterp.red, ColorInterp.green, ColorInterp.blue))
        return (red, green, blue), "colour interpretation"
    named = _band_by_name(descriptions)
    if named is not None:
        return named, "band descriptions"
    if count in KNOWN_LAYOUTS:
        return KNOWN_LAYOUTS[count]
    return (1, 2, 3), f"{count} bands without colour names: bands 1, 2, 3"


def choose_bands(
    count: int, colorinterp: Sequence[ColorInterp] = (), bands: Sequence[int] | None = None
) -> tuple[int, int, int]:
    """The three 1-based band indexes to read as RGB (see :func:`band_layout` for the rules).

    >>> choose_bands(1)
    (1, 1, 1)
    >>> choose_bands(4, [ColorInterp.blue, ColorInterp.green, ColorInterp.red, ColorInterp.undefined])
    (3, 2, 1)
    >>> choose_bands(8)
    (5, 3, 2)
    >>> choose_bands(4, bands=(4, 3, 2))
    (4, 3, 2)
    """
    if bands is not None:
        chosen = tuple(int(b) for b in bands)
        if len(chosen) == 1:
            chosen = chosen * 3
        if len(chosen) != 3:
            raise RasterError(f"bands={list(bands)}: give 1 or 3 band numbers, e.g. --bands 1,2,3.")
        bad = [b for b in chosen if not 1 <= b <= count]
        if bad:
            raise RasterError(
                f"Band {bad[0]} does not exist: the raster has {count} band(s), numbered 1 to {count}."
            )
        return chosen  # type: ignore[return-value]
    return band_layout(count, colorinterp)[0]


def expand_palette(indices: np.ndarray, colormap: dict[int, tuple[int, ...]]) -> np.ndarray:
    """Colour-table indices (``H x W``) to RGB (``3 x H x W`` uint8); unknown indices are black.

    >>> expand_palette(np.array([[0, 1]], np.uint8), {0: (0, 0, 0, 255), 1: (200, 100, 50, 255)}).tolist()
    [[[0, 200]], [[0, 100]], [[0, 50]]]
    """
    size = max(int(indices.max(initial=0)) + 1, max(colormap, default=0) + 1)
    lut = np.zeros((size, 3), np.uint8)
    for k, rgba in colormap.items():
        if 0 <= k < size:
            lut[k] = rgba[:3]
    return np.ascontiguousarray(lut[indices.astype(np.intp)].transpose(2, 0, 1))


def _palette(ds: rasterio.io.DatasetReader, bands: Sequence[int] | None) -> dict[int, tuple[int, ...]] | None:
    """The colour table of a one-band paletted raster read with default bands, else None."""
    if bands is not None or ds.count != 1 or ds.colorinterp[0] != ColorInterp.palette:
        return None
    try:
        return ds.colormap(1)
    except ValueError:  # palette interpretation but no table
        return None
