"""Adjacent sheets as one surface: check that rasters form a mosaic, write it as a GDAL VRT.

Sheets form a mosaic when they share CRS, pixel size, band count, data type and nodata value, their
bands can be matched by colour interpretation (each sheet is read with its own band order), and their
pixel grids are aligned (each origin lies a whole number of pixels from the others); where
two sheets overlap, their pixels must be the same. The VRT is written here as XML
(``osgeo.gdal`` is not a dependency; rasterio has no VRT builder): each sheet is one
``SimpleSource`` of each band, placed at its pixel offset in the mosaic.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from xml.sax.saxutils import escape

import numpy as np
import rasterio
from affine import Affine
from rasterio.windows import Window, from_bounds

from fastsam_geo.errors import RasterError
from fastsam_geo.plan import Sheet

GDAL_TYPES = {
    "uint8": "Byte",
    "int8": "Int8",
    "uint16": "UInt16",
    "int16": "Int16",
    "uint32": "UInt32",
    "int32": "Int32",
    "float32": "Float32",
    "float64": "Float64",
}


@dataclass(frozen=True)
class SheetInfo:
    """What the mosaic needs to know of one sheet."""

    path: str
    width: int
    height: int
    count: int
    dtype: str
    crs_wkt: str
    transform: Affine
    nodata: float | None
    colorinterp: tuple[str, ...]
    block: tuple[int, int]
    descriptions: tuple[str | None, ...] = ()


def _info(path: str) -> SheetInfo:
    try:
        with rasterio.open(path) as ds:
            return SheetInfo(
                path,
                ds.width,
                ds.height,
                ds.count,
                ds.dtypes[0],
                ds.crs.to_wkt() if ds.crs else "",
                ds.transform,
                ds.nodata,
                tuple(c.name for c in ds.colorinterp),
                tuple(ds.block_shapes[0]),
                tuple(ds.descriptions),
            )
    except rasterio.errors.RasterioIOError as exc:
        raise RasterError(f"{path}: cannot be read as a raster ({str(exc).splitlines()[0]}).") from None


def grid_offset(ref: Affine, t: Affine, tol: float = 1e-3) -> tuple[int, int] | None:
    """Whole-pixel offset (col, row) of grid ``t`` in grid ``ref``, or None when misaligned.

    >>> grid_offset(Affine(0.5, 0, 100, 0, -0.5, 200), Affine(0.5, 0, 150, 0, -0.5, 180))
    (100, 40)
    >>> grid_offset(Affine(0.5, 0, 100, 0, -0.5, 200), Affine(0.5, 0, 150.2, 0, -0.5, 180)) is None
    True
    """
    col = (t.c - ref.c) / ref.a
    row = (t.f - ref.f) / ref.e
    if abs(col - round(col)) > tol or abs(row - round(row)) > tol:
        return None
    return int(round(col)), int(round(row))


def _check_same(ref: SheetInfo, s: SheetInfo) -> None:
    from rasterio.crs import CRS

    what = f"{s.path} and {ref.path} cannot form a mosaic"
    if not s.crs_wkt or CRS.from_wkt(s.crs_wkt) != CRS.from_wkt(ref.crs_wkt):
        raise RasterError(f"{what}: other CRS; warp them to one CRS first (gdalwarp -t_srs ...).")
    t, r = s.transform, ref.transform
    if t.b or t.d or not math.isclose(t.a, r.a, rel_tol=1e-6) or not math.isclose(t.e, r.e, rel_tol=1e-6):
        raise RasterError(
            f"{what}: other resolution ({t.a:g} x {-t.e:g} against {r.a:g} x {-r.e:g}); resample to one (gdalwarp -tr)."
        )
    if (s.count, s.dtype) != (ref.count, ref.dtype):
        raise RasterError(f"{what}: other bands ({s.count} {s.dtype} against {ref.count} {ref.dtype}).")
    if not _same_nodata(s.nodata, ref.nodata):
        raise RasterError(
            f"{what}: other nodata values ({s.nodata} against {ref.nodata}), so the result would depend on the "
            f"order of the inputs; give them one (gdal_edit.py -a_nodata {ref.nodata if ref.nodata is not None else 0} "
            "SHEET.tif)."
        )
    band_map(ref, s)  # refuses band layouts that cannot be matched
    if grid_offset(r, t) is None:
        raise RasterError(f"{what}: their pixel grids are not aligned; warp them onto one grid (gdalwarp -tap -tr).")


def _same_nodata(a: float | None, b: float | None) -> bool:
    """Whether two nodata values are the same (NaN equals NaN; None only equals None).

    >>> _same_nodata(0.0, 0.0), _same_nodata(None, 0.0), _same_nodata(float("nan"), float("nan"))
    (True, False, True)
    """
    if a is None or b is None:
        return a is b
    return a == b or (math.isnan(a) and math.isnan(b))


def _layout(s: SheetInfo) -> tuple[tuple[int, int, int], int | None]:
    """The bands a sheet alone is read with as R, G, B (:func:`~fastsam_geo.raster.band_layout`:
    colour interpretation, band names, known layouts) and its alpha band (None: none)."""
    from rasterio.enums import ColorInterp

    from fastsam_geo.raster import band_layout

    ci = [ColorInterp[c] if c in ColorInterp.__members__ else ColorInterp.undefined for c in s.colorinterp]
    rgb = band_layout(s.count, ci, None, s.descriptions)[0]
    alpha = next((i + 1 for i, c in enumerate(ci) if c == ColorInterp.alpha), None)
    return rgb, alpha


def band_map(ref: SheetInfo, s: SheetInfo) -> tuple[int, ...]:
    """For each band of the mosaic (the first sheet's layout), the band of sheet ``s`` that holds
    it: the bands each sheet alone is read with as red, green and blue, its alpha band, and
    the other bands in their order. So a sheet stored B,G,R (and saying so in its colour
    interpretation) is read as R,G,B. An alpha band in one sheet and not in the other is refused.

    >>> info = lambda ci: SheetInfo("a.tif", 1, 1, len(ci), "uint8", "", Affine.identity(), None, ci, (1, 1))
    >>> band_map(info(("red", "green", "blue")), info(("blue", "green", "red")))
    (3, 2, 1)
    >>> band_map(info(("gray", "undefined", "undefined")), info(("red", "green", "blue")))
    (1, 2, 3)
    """
    (r_rgb, r_alpha), (s_rgb, s_alpha) = _layout(ref), _layout(s)
    if (r_alpha is None) != (s_alpha is None):
        has, lacks = (ref, s) if r_alpha is not None else (s, ref)
        raise RasterError(
            f"{s.path} and {ref.path} cannot form a mosaic: {has.path} has an alpha band and {lacks.path} has none, "
            "so their empty pixels are told apart differently; give both an alpha band or a nodata value."
        )
    if s.count < 3:
        return tuple(range(1, s.count + 1))
    out: dict[int, int] = dict(zip(r_rgb, s_rgb, strict=True))
    if r_alpha is not None and s_alpha is not None:
        out[r_alpha] = s_alpha
    rest_s = [b for b in range(1, s.count + 1) if b not in out.values()]
    rest_r = [b for b in range(1, ref.count + 1) if b not in out]
    out.update(zip(rest_r, rest_s, strict=False))
    if len(set(out.values())) != len(out) or len(out) != ref.count:
        raise RasterError(
            f"{s.path} and {ref.path} cannot form a mosaic: their bands cannot be matched "
            f"({','.join(s.colorinterp)} against {','.join(ref.colorinterp)}); give the sheets one band order "
            "(gdal_translate -b ...)."
        )
    return tuple(out[b] for b in range(1, ref.count + 1))


def _check_overlaps(sheets: Sequence[SheetInfo]) -> None:
    """Overlapping sheets must hold the same pixels where they overlap."""
    boxes = [
        rasterio.coords.BoundingBox(*rasterio.transform.array_bounds(s.height, s.width, s.transform)) for s in sheets
    ]
    for i in range(len(sheets)):
        for j in range(i + 1, len(sheets)):
            a, b = boxes[i], boxes[j]
            left, right = max(a.left, b.left), min(a.right, b.right)
            bottom, top = max(a.bottom, b.bottom), min(a.top, b.top)
            px = abs(sheets[i].transform.a)
            if right - left < px / 2 or top - bottom < px / 2:
                continue
            with rasterio.open(sheets[i].path) as da, rasterio.open(sheets[j].path) as db:
                wa = from_bounds(left, bottom, right, top, da.transform).round_offsets().round_lengths()
                wb = from_bounds(left, bottom, right, top, db.transform).round_offsets().round_lengths()
                order = list(band_map(sheets[i], sheets[j]))  # each sheet in its own band order
                if not np.array_equal(da.read(window=wa), db.read(order, window=wb)):
                    raise RasterError(
                        f"{sheets[i].path} and {sheets[j].path} overlap with different pixels; "
                        "they cannot form a mosaic (crop the overlap, or extract them separately)."
                    )


def check_mosaic(paths: Sequence[str | os.PathLike[str]]) -> tuple[list[SheetInfo], Affine, int, int]:
    """Check that ``paths`` form one mosaic: (sheets, mosaic transform, width, height)."""
    if not paths:
        raise RasterError("--mosaic needs at least one raster.")
    sheets = [_info(os.fspath(p)) for p in paths]
    for s in sheets:  # else the mosaic's VRT, a file the user never named, is what the error names
        t = s.transform
        if t.b or t.d or t.e >= 0:
            raise RasterError(
                f"{s.path}: sheet is not north-up (rotated or south-up); warp it first, e.g. "
                f"`gdalwarp {s.path} north_up.tif`."
            )
    ref = sheets[0]
    if not ref.crs_wkt:
        raise RasterError(
            f"{ref.path}: raster has no CRS; a mosaic needs georeferenced sheets (--assign-crs reads one raster: "
            f"give each sheet its CRS, e.g. `gdal_edit.py -a_srs EPSG:32633 {ref.path}`)."
        )
    for s in sheets[1:]:
        _check_same(ref, s)
    offsets = [grid_offset(ref.transform, s.transform) or (0, 0) for s in sheets]
    c0 = min(o[0] for o in offsets)
    r0 = min(o[1] for o in offsets)
    width = max(o[0] + s.width for o, s in zip(offsets, sheets, strict=True)) - c0
    height = max(o[1] + s.height for o, s in zip(offsets, sheets, strict=True)) - r0
    _check_overlaps(sheets)
    return sheets, ref.transform * Affine.translation(c0, r0), width, height


def _source_xml(s: SheetInfo, band: int, dst: Window, gdal_type: str) -> str:
    bx, by = s.block[1], s.block[0]
    return (
        f'      <SimpleSource>\n        <SourceFilename relativeToVRT="0">{escape(str(Path(s.path).resolve()))}'
        f"</SourceFilename>\n        <SourceBand>{band}</SourceBand>\n"
        f'        <SourceProperties RasterXSize="{s.width}" RasterYSize="{s.height}" DataType="{gdal_type}" '
        f'BlockXSize="{bx}" BlockYSize="{by}" />\n'
        f'        <SrcRect xOff="0" yOff="0" xSize="{s.width}" ySize="{s.height}" />\n'
        f'        <DstRect xOff="{int(dst.col_off)}" yOff="{int(dst.row_off)}" '
        f'xSize="{s.width}" ySize="{s.height}" />\n'
        "      </SimpleSource>\n"
    )


def write_vrt(paths: Sequence[str | os.PathLike[str]], vrt: str | os.PathLike[str]) -> tuple[Sheet, ...]:
    """Write the mosaic of ``paths`` as a VRT at ``vrt``; returns the sheets (name, bounds).

    Refuses, with one line naming the files, rasters that cannot form a mosaic.
    """
    sheets, transform, width, height = check_mosaic(paths)
    gdal_type = GDAL_TYPES.get(sheets[0].dtype)
    if gdal_type is None:
        raise RasterError(f"{sheets[0].path}: data type {sheets[0].dtype} is not supported in a mosaic.")
    gt = ", ".join(repr(float(v)) for v in (transform.c, transform.a, 0.0, transform.f, 0.0, transform.e))
    lines = [
        f'<VRTDataset rasterXSize="{width}" rasterYSize="{height}">\n',
        f"  <SRS>{escape(sheets[0].crs_wkt)}</SRS>\n",
        f"  <GeoTransform>{gt}</GeoTransform>\n",
    ]
    nodata = sheets[0].nodata
    for band in range(1, sheets[0].count + 1):
        lines.append(f'  <VRTRasterBand dataType="{gdal_type}" band="{band}">\n')
        ci = sheets[0].colorinterp[band - 1] if band <= len(sheets[0].colorinterp) else "undefined"
        lines.append(f"    <ColorInterp>{ci.capitalize()}</ColorInterp>\n")
        if nodata is not None:
            lines.append(f"    <NoDataValue>{nodata!r}</NoDataValue>\n")
        for s in sheets:
            off = grid_offset(transform, s.transform) or (0, 0)
            src_band = band_map(sheets[0], s)[band - 1]
            lines.append(_source_xml(s, src_band, Window(off[0], off[1], s.width, s.height), gdal_type))
        lines.append("  </VRTRasterBand>\n")
    lines.append("</VRTDataset>\n")
    _write_if_changed(Path(vrt), "".join(lines), [s.path for s in sheets])
    out = []
    for s in sheets:
        b = rasterio.transform.array_bounds(s.height, s.width, s.transform)
        out.append(Sheet(Path(s.path).name, (b[0], b[1], b[2], b[3])))
    return tuple(out)


def _write_if_changed(vrt: Path, text: str, sources: Sequence[str]) -> None:
    """Write ``text`` to ``vrt`` unless it already holds it, and give it the newest source's
    modification time: the same sheets give the same bytes, size and time on every run, so a
    ``--resume`` or the mask cache sees the same raster (changed sheets change the VRT's time)."""
    data = text.encode()
    if not (vrt.is_file() and vrt.read_bytes() == data):
        vrt.write_bytes(data)
    newest = max(os.stat(p).st_mtime_ns for p in sources)
    os.utime(vrt, ns=(newest, newest))


__all__ = ["band_map", "check_mosaic", "grid_offset", "write_vrt"]
