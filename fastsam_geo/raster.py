"""Open, validate and read rasters as 8-bit RGB windows.

A :class:`RasterSource` wraps a rasterio dataset (GeoTIFF, COG, VRT: anything GDAL
reads) and answers one question: the 8-bit RGB pixels and the nodata mask of a window.

- Bands: 3 are chosen (default: the bands whose colour interpretation is red, green,
  blue, else 1, 2, 3); 1 band is replicated to grey RGB.
- Stretch: 8-bit imagery passes through unchanged (``stretch="auto"``); any other dtype
  is stretched with *global* per-band percentiles computed once from overviews or a
  sample of windows, never per tile (per-tile statistics make seams in brightness).
- Nodata: the dataset mask (nodata value, alpha band or internal mask) and NaNs.
- Working resolution (``gsd``): a raster much finer or coarser than the model's working
  ground resolution is seen through a *working grid* covering the same bounds at that
  resolution; every window of that grid is read resampled (GDAL uses the file's overviews
  when it shrinks), so tiles, prompts and polygons all live in one consistent grid.

The band rules live in :mod:`fastsam_geo.bands`, the stretch in :mod:`fastsam_geo.radiometry`,
the ground resolution and working grid in :mod:`fastsam_geo.gsd` (their names are importable
from here too).
"""

from __future__ import annotations

import contextlib
import logging
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio
from affine import Affine
from rasterio.enums import Resampling
from rasterio.errors import NotGeoreferencedWarning, RasterioIOError
from rasterio.windows import Window

# Band choice, radiometry and ground resolution have modules of their own; every name they took from
# here stays importable from here (F401: re-exported, not all used in this module).
from fastsam_geo.bands import (  # noqa: F401
    _COLOUR_WORDS,
    _NOT_COLOUR,
    KNOWN_LAYOUTS,
    _band_by_name,
    _palette,
    band_layout,
    choose_bands,
    expand_palette,
)
from fastsam_geo.errors import RasterError
from fastsam_geo.gsd import GSD_TOLERANCE, ground_resolution, working_grid  # noqa: F401
from fastsam_geo.radiometry import (  # noqa: F401
    DARK_MEDIAN,
    STRETCH_OUT,
    Stretch,
    StretchMode,
    _bit_depth,
    dark_gamma,
    sensor_data,
)

log = logging.getLogger(__name__)

@dataclass(frozen=True)
class RasterInfo:
    """What a raster is, in the terms a GIS user checks first."""

    path: str
    width: int
    height: int
    count: int
    dtype: str
    crs: rasterio.crs.CRS
    transform: rasterio.Affine
    bounds: tuple[float, float, float, float]
    res: tuple[float, float]
    nodata: float | None
    bands: tuple[int, int, int]
    overviews: int
    native_width: int = 0
    native_height: int = 0
    native_transform: Affine | None = None
    native_gsd_m: float = 0.0
    gsd_m: float = 0.0

    @property
    def resampled(self) -> bool:
        """True when tiles are read at a working resolution other than the raster's own."""
        return (self.width, self.height) != (self.native_width, self.native_height)

    @property
    def is_geographic(self) -> bool:
        """True when the CRS is in degrees (e.g. EPSG:4326)."""
        return bool(self.crs.is_geographic)


def gdal_path(path: str | os.PathLike[str]) -> str:
    """The path GDAL opens: an ``http(s)://`` or ``ftp://`` URL becomes ``/vsicurl/URL``.

    >>> gdal_path("https://example.org/ortho.tif"), gdal_path("ortho.tif")
    ('/vsicurl/https://example.org/ortho.tif', 'ortho.tif')
    """
    spath = os.fspath(path)
    if spath.lower().startswith(("http://", "https://", "ftp://")):
        return f"/vsicurl/{spath}"
    return spath


def display_path(path: str | os.PathLike[str]) -> str:
    """How a raster is named in metadata and messages: a URL as the URL (``/vsicurl/`` and
    ``pathlib`` would mangle it), a local file as its absolute path.

    >>> display_path("/vsicurl/https://example.org/ortho.tif")
    'https://example.org/ortho.tif'
    >>> display_path("/data/./ortho.tif")
    '/data/ortho.tif'
    """
    spath = os.fspath(path)
    if spath.startswith("/vsicurl/"):
        return spath[len("/vsicurl/") :]
    if "://" in spath or spath.startswith("/vsi"):
        return spath
    return os.path.abspath(spath)


def _open(path: str | os.PathLike[str]) -> rasterio.io.DatasetReader:
    shown = display_path(path) if "://" in os.fspath(path) else os.fspath(path)
    spath = gdal_path(path)
    if "\x00" in spath:
        raise RasterError(f"{spath!r}: a path cannot hold a NUL character; rename the file.")
    if spath.startswith("/vsicurl/"):
        # No directory listing and no sidecar probing over HTTP: each is a request, and
        # each 404 was a GDAL warning line on stderr.
        os.environ.setdefault("GDAL_DISABLE_READDIR_ON_OPEN", "EMPTY_DIR")
        os.environ.setdefault("GDAL_HTTP_MAX_RETRY", "2")
    elif "://" not in spath and not spath.startswith("/vsi"):
        p = Path(spath)
        if p.is_dir():
            raise RasterError(f"{spath} is a folder; give a raster file (extract also takes a folder of rasters).")
        if not p.exists():
            hint = " (a broken symbolic link)" if p.is_symlink() else ""
            raise RasterError(f"{spath}: no such file{hint}; check the path.")
    try:
        with warnings.catch_warnings(), rasterio.Env(CPL_LOG_ERRORS="OFF"):
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            ds = rasterio.open(spath)
    except (RasterioIOError, OSError) as exc:
        reason = " ".join(str(exc).split()) or type(exc).__name__
        raise RasterError(f"{shown}: cannot be read as a raster ({reason}); give a GeoTIFF, COG or VRT.") from None
    missing = _missing_sources(ds)
    if missing:
        ds.close()
        more = f" and {len(missing) - 1} more" if len(missing) > 1 else ""
        raise RasterError(
            f"{shown}: source file {missing[0]}{more} of this VRT does not exist; restore it, "
            "or rebuild the VRT from the files you have (gdalbuildvrt)."
        )
    return ds


def gdal_reason(exc: BaseException) -> str:
    """GDAL's own words for a failure, on one line: rasterio's "Read failed. See previous
    exception" wraps the real message in ``__cause__``.

    >>> gdal_reason(RasterioIOError("Read failed.\\nmore"))
    'Read failed. more'
    """
    msgs = []
    e: BaseException | None = exc
    while e is not None and len(msgs) < 5:
        text = " ".join(str(e).split())
        if text and "See previous exception" not in text:
            msgs.append(text)
        e = e.__cause__ or e.__context__
    return msgs[-1] if msgs else " ".join(str(exc).split()) or type(exc).__name__


def vrt_sources(path: str | os.PathLike[str]) -> list[str]:
    """The source files a local VRT names (relative ones resolved against its folder); [] otherwise.

    >>> vrt_sources("ortho.tif")
    []
    """
    import xml.etree.ElementTree as ET

    spath = os.fspath(path)
    if not spath.lower().endswith(".vrt") or not os.path.isfile(spath):
        return []
    try:
        root = ET.parse(spath).getroot()
    except (ET.ParseError, OSError):
        return []
    out = []
    for el in root.iter("SourceFilename"):
        name = (el.text or "").strip()
        out.append(os.path.join(os.path.dirname(spath), name) if el.get("relativeToVRT") == "1" else name)
    return out


def _missing_sources(ds: rasterio.io.DatasetReader) -> list[str]:
    """The local source files a VRT (or any multi-file dataset) lists but that do not exist."""
    if ds.driver != "VRT":
        return []
    try:
        files = list(ds.files)[1:]
    except Exception:
        return []
    return [f for f in files if not f.startswith("/vsi") and "://" not in f and not os.path.exists(f)]


def parse_crs(value: str) -> rasterio.crs.CRS:
    """An assigned CRS (``EPSG:32633``, a PROJ string or WKT) as rasterio's CRS.

    >>> parse_crs("EPSG:32633").to_epsg()
    32633
    >>> parse_crs("EPSG:nope")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    fastsam_geo.errors.RasterError: assigned CRS 'EPSG:nope' is not a CRS GDAL knows; give e.g. EPSG:32633, ...
    """
    from rasterio.crs import CRS
    from rasterio.errors import CRSError

    try:
        return CRS.from_user_input(str(value).strip())
    except (CRSError, ValueError):
        raise RasterError(
            f"assigned CRS {value!r} is not a CRS GDAL knows; give e.g. EPSG:32633, a PROJ string or WKT."
        ) from None


def suggest_crs(bounds: Sequence[float]) -> tuple[str, str]:
    """A CRS to try for a raster without one, from its bounds, and how sure that guess is.

    Bounds inside [-180, 180] x [-90, 90] look like degrees (EPSG:4326); anything else is in
    a projected CRS, which the numbers alone cannot name (EPSG:32633 stands for "your UTM zone").

    >>> suggest_crs((9.52, 45.40, 9.53, 45.41))[0]
    'EPSG:4326'
    >>> code, why = suggest_crs((500000, 4649000, 500512, 4649512)); code, "check" in why
    ('EPSG:32633', True)
    """
    xmin, ymin, xmax, ymax = (float(v) for v in bounds)
    if max(abs(xmin), abs(xmax)) <= 180.0 and max(abs(ymin), abs(ymax)) <= 90.0:
        return "EPSG:4326", "its bounds look like degrees of longitude and latitude"
    return "EPSG:32633", (
        "its bounds look like metres of a projected CRS: EPSG:32633 (UTM 33N) is an example; "
        "check which CRS the data are in (e.g. their UTM zone)"
    )


def no_crs_hint(path: str, bounds: Sequence[float], editable: bool) -> str:
    """The one-line error for a raster without a CRS: a CRS that fits its coordinates, and how to assign it.

    >>> print(no_crs_hint("a.tif", (9.5, 45.4, 9.6, 45.5), True))  # doctest: +ELLIPSIS
    a.tif: raster has no CRS; ... `gdal_edit.py -a_srs EPSG:4326 a.tif`, or ...--assign-crs EPSG:4326; ...
    """
    code, why = suggest_crs(bounds)
    how = (
        f"`gdal_edit.py -a_srs {code} {path}`"
        if editable
        else f"`gdal_translate -a_srs {code} {path} {Path(path).with_suffix('')}.tif`"
    )
    return (
        f"{path}: raster has no CRS; {why}: assign one with {how}, or pass it to the run "
        f"(fastsam-geo extract --assign-crs {code}; in QGIS: Layer > Set CRS, then run again)."
    )


def validate(ds: rasterio.io.DatasetReader, path: str, *, crs_assigned: bool = False) -> None:
    """Raise :class:`RasterError` naming the broken rule when ``ds`` cannot be tiled
    (``crs_assigned``: the caller assigns a CRS, so the file may have none)."""
    if ds.width == 0 or ds.height == 0 or ds.count == 0:
        raise RasterError(f"{path}: raster is empty ({ds.width} x {ds.height} px, {ds.count} bands).")
    t = ds.transform
    gcps, _ = ds.gcps
    if gcps and t.is_identity:
        raise RasterError(
            f"{path}: raster is georeferenced by {len(gcps)} ground control points only; warp it with them first, "
            f"e.g. `gdalwarp -order 1 {path} warped.tif` (or -tps for a thin-plate spline)."
        )
    editable = ds.driver == "GTiff"
    if t.is_identity:
        stem = Path(path).with_suffix("")
        how = (
            f"`gdal_edit.py -a_srs EPSG:32633 -a_ullr ULX ULY LRX LRY {path}`"
            if editable
            else f"`gdal_translate -a_srs EPSG:32633 -a_ullr ULX ULY LRX LRY {path} {stem}.tif`"
        )
        raise RasterError(f"{path}: raster has no geotransform (not georeferenced); georeference it, e.g. {how}.")
    if ds.crs is None and not crs_assigned:
        raise RasterError(no_crs_hint(path, tuple(ds.bounds), editable))
    if t.b != 0 or t.d != 0:
        raise RasterError(
            f"{path}: raster transform is rotated; warp it north-up first, "
            f"e.g. `gdalwarp {path} north_up.tif`."
        )
    if t.a <= 0 or t.e >= 0:
        raise RasterError(
            f"{path}: raster is not north-up (pixel size {t.a}, {t.e}); warp it first, "
            f"e.g. `gdalwarp {path} north_up.tif`."
        )


class RasterSource:
    """A validated raster read as 8-bit RGB windows.

    Use it as a context manager; :meth:`read` is the only pixel access.

    Args:
        path: GeoTIFF, COG or VRT path (any GDAL path, ``/vsicurl/`` included).
        bands: three 1-based band numbers (or one, replicated); default from colour
            interpretation, else 1, 2, 3.
        stretch: ``"auto"`` (8-bit unchanged, other dtypes percentile-stretched),
            ``"percentile"`` (always) or ``"none"`` (clip to 0-255).
        percentiles: low and high percentiles of the global stretch.
        gsd: working ground resolution in metres per pixel (None: the raster's own). A
            raster more than ``GSD_TOLERANCE`` times finer or coarser is read resampled to
            it: ``info`` then describes the working grid (same bounds, other pixel size),
            and :meth:`read` takes windows of that grid.
        assign_crs: the raster's CRS (EPSG code, PROJ string or WKT), assigned as ``gdal_translate
            -a_srs`` does: it replaces the file's own, and lets a raster without one be read.
            The file is not changed.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        bands: Sequence[int] | None = None,
        stretch: StretchMode = "auto",
        percentiles: tuple[float, float] = (2.0, 98.0),
        gsd: float | None = None,
        assign_crs: str | None = None,
    ) -> None:
        self.path = os.fspath(path)
        self._assigned = parse_crs(assign_crs) if assign_crs else None
        self._ds = _open(self.path)
        _say_replaced_crs(self.path, self._ds.crs, self._assigned)
        try:
            validate(self._ds, self.path, crs_assigned=self._assigned is not None)
            try:
                self.bands, band_rule = band_layout(
                    self._ds.count, self._ds.colorinterp, bands, self._ds.descriptions
                )
            except RasterError as exc:
                # choose_bands does not know the file: name it, as every raster error does.
                raise RasterError(f"{self.path}: {exc}") from None
            dtype = self._ds.dtypes[self.bands[0] - 1]
            self._palette = _palette(self._ds, bands)
            if stretch not in ("auto", "none", "percentile"):
                raise RasterError(f"{self.path}: stretch={stretch!r}: use 'auto', 'none' or 'percentile'.")
            self.stretch: Stretch | None
            self.radiometry = f"{dtype}{_bit_depth(self._ds, dtype)}; RGB from bands {self.bands} ({band_rule})"
            if self._palette is not None:  # colour-table entries are 8-bit RGB already
                self.stretch = None
                self.radiometry += "; colour table expanded to RGB"
            elif stretch == "percentile" or (stretch == "auto" and dtype != "uint8"):
                self.stretch, how = self._global_stretch(percentiles)
                self.radiometry += f"; {how}"
            else:
                self.stretch = None
            trivial = self.stretch is None and band_rule == "colour interpretation" and self._ds.count <= 4
            log.log(logging.DEBUG if trivial else logging.INFO, "%s: %s", self.path, self.radiometry)
        except Exception:
            self._ds.close()
            raise
        self.set_gsd(gsd, dtype)

    def set_gsd(self, gsd: float | None, dtype: str | None = None) -> None:
        """Read through the working grid at ``gsd`` metres per pixel from now on (None: the file's own).

        ``info`` then describes that grid; the stretch (whole-raster statistics) is unchanged.
        """
        self.info = self._describe(dtype or self.info.dtype, gsd)
        self._scale = (self._ds.width / self.info.width, self._ds.height / self.info.height)

    def _describe(self, dtype: str, gsd: float | None) -> RasterInfo:
        ds = self._ds
        crs = self.crs
        gx, gy = ground_resolution(crs, ds.transform, ds.width, ds.height)
        native = (gx + gy) / 2
        w, h, t = working_grid(ds.width, ds.height, ds.transform, native, gsd)
        return RasterInfo(
            path=self.path,
            width=w,
            height=h,
            count=ds.count,
            dtype=dtype,
            crs=crs,
            transform=t,
            bounds=tuple(ds.bounds),
            res=(abs(t.a), abs(t.e)),
            nodata=ds.nodata,
            bands=self.bands,
            overviews=len(ds.overviews(1)),
            native_width=ds.width,
            native_height=ds.height,
            native_transform=ds.transform,
            native_gsd_m=native,
            gsd_m=native * ds.width / w,
        )

    @property
    def crs(self) -> rasterio.crs.CRS:
        """The raster's CRS: the one assigned (``assign_crs``), else the file's own."""
        return self._assigned if self._assigned is not None else self._ds.crs

    def source_window(self, window: Window) -> Window:
        """The window of the file's own pixels that ``window`` (of the working grid) covers.

        Fractional where the grids do not line up; GDAL reads it with sub-pixel accuracy.
        """
        sx, sy = self._scale
        if sx == sy == 1.0:
            return window
        return Window(window.col_off * sx, window.row_off * sy, window.width * sx, window.height * sy)

    # -------------------------------------------------------------- context manager
    def __enter__(self) -> RasterSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the underlying dataset."""
        self._ds.close()

    @property
    def dataset(self) -> rasterio.io.DatasetReader:
        """The open rasterio dataset (read-only use)."""
        return self._ds

    # -------------------------------------------------------------- statistics
    def _stats_sample(self, max_side: int = 1024) -> np.ma.MaskedArray:
        """A small, whole-raster sample: a decimated read (overviews when present),
        or for big rasters without overviews an 8 x 8 grid of 128 px windows."""
        ds = self._ds
        idx = list(dict.fromkeys(self.bands))
        big = ds.width * ds.height > 4096 * 4096
        if not big or ds.overviews(1):
            scale = max(ds.width, ds.height) / max_side
            shape = (len(idx), max(1, int(ds.height / max(scale, 1))), max(1, int(ds.width / max(scale, 1))))
            return ds.read(idx, out_shape=shape, masked=True, resampling=Resampling.nearest)
        parts = []
        for fy in np.linspace(0, 1, 8, endpoint=False) + 1 / 16:
            for fx in np.linspace(0, 1, 8, endpoint=False) + 1 / 16:
                win = Window(int(fx * (ds.width - 128)), int(fy * (ds.height - 128)), 128, 128)
                parts.append(ds.read(idx, window=win, masked=True))
        return np.ma.concatenate(parts, axis=2)

    def _global_stretch(self, percentiles: tuple[float, float]) -> tuple[Stretch, str]:
        """Per-band percentiles of the valid pixels of the whole raster, and a gamma for dark
        high-bit-depth data; returns the stretch and how it was made (for the metadata)."""
        try:
            sample = self._stats_sample()
        except (RasterioIOError, OSError) as exc:
            reason = gdal_reason(exc)
            raise RasterError(
                f"{self.path}: cannot read the raster for its global statistics ({reason}); "
                "the file may be truncated or corrupt (check it with gdalinfo -checksum)."
            ) from None
        idx = list(dict.fromkeys(self.bands))
        valid = ~np.ma.getmaskarray(sample).any(axis=0)
        data = np.ma.getdata(sample).astype(np.float64)
        valid &= np.isfinite(data).all(axis=0)
        note = ""
        if self._ds.nodata is None and np.issubdtype(np.dtype(self._ds.dtypes[idx[0] - 1]), np.integer):
            collar = (data == 0).all(axis=0) & valid
            if collar.any() and collar.sum() < valid.sum():
                valid &= ~collar  # an undeclared black collar would drag the low percentile to 0
                note = f", {collar.sum() / max(valid.sum() + collar.sum(), 1):.0%} black (0) pixels left out"
        lo_by_band: dict[int, float] = {}
        hi_by_band: dict[int, float] = {}
        for k, b in enumerate(idx):
            vals = data[k][valid]
            if vals.size == 0:
                raise RasterError(
                    f"{self.path}: band {b} has no valid pixels (all nodata); "
                    "check the nodata value or the file."
                )
            lo, hi = np.percentile(vals, percentiles)
            if hi <= lo:
                hi = lo + 1.0
            lo_by_band[b], hi_by_band[b] = float(lo), float(hi)
        lo_t = tuple(lo_by_band[b] for b in self.bands)
        hi_t = tuple(hi_by_band[b] for b in self.bands)
        gamma = 1.0
        if sensor_data(self._ds.dtypes[idx[0] - 1], data[:, valid]):  # linear: 16-bit, 32-bit, float
            gamma = dark_gamma(data[:, valid], [lo_by_band[b] for b in idx], [hi_by_band[b] for b in idx])
        how = f"global {percentiles[0]:g}-{percentiles[1]:g} % percentile stretch of the valid pixels{note}"
        if gamma != 1.0:
            how += f", gamma {gamma:.2f}"
        return Stretch(lo=lo_t, hi=hi_t, gamma=gamma, out=STRETCH_OUT), how

    # -------------------------------------------------------------- pixels
    @staticmethod
    def _read_pixels(
        ds: rasterio.io.DatasetReader,
        bands: list[int],
        window: Window,
        src_win: Window,
        shape: tuple[int, int],
        resampling: Resampling,
    ) -> tuple[np.ndarray, np.ndarray]:
        """The bands' pixels of ``src_win`` at ``shape`` and where they hold data."""
        if src_win is window:
            return ds.read(bands, window=window), ds.dataset_mask(window=window) > 0
        data = ds.read(bands, window=src_win, out_shape=(len(bands), *shape), resampling=resampling)
        return data, ds.dataset_mask(window=src_win, out_shape=shape) > 0

    def read(self, window: Window) -> tuple[np.ndarray, np.ndarray | None]:
        """RGB pixels (``H x W x 3`` uint8) and nodata (``H x W`` bool, True = no data) of ``window``.

        The nodata mask is None when the window holds no nodata pixel.
        """
        ds = self._ds
        uniq = list(dict.fromkeys(self.bands))
        src_win = self.source_window(window)
        shape = (int(window.height), int(window.width))
        # shrinking averages (area), enlarging is bilinear; the mask takes the nearest pixel
        resampling = Resampling.average if self._scale[0] > 1 else Resampling.bilinear
        if self._palette is not None:  # colour-table indices are labels: never averaged
            resampling = Resampling.nearest
        # GDAL 3.10 reads a VRT's sources on several threads, and a resampled read of the same window
        # then differed between reads (1-2 of 30 under load, along sheet seams): mosaics gave other
        # polygons from run to run
        one_thread = rasterio.Env(VRT_NUM_THREADS=1) if ds.driver == "VRT" else contextlib.nullcontext()
        try:
            with one_thread:
                data, valid = self._read_pixels(ds, uniq, window, src_win, shape, resampling)
        except RasterioIOError as exc:
            reason = gdal_reason(exc)
            raise RasterError(
                f"{self.path}: cannot read window {window!r} ({reason}); "
                "the file may be truncated or corrupt."
            ) from None
        if np.issubdtype(data.dtype, np.floating):
            valid &= np.isfinite(data).all(axis=0)
        pos = {b: i for i, b in enumerate(uniq)}
        data = data[[pos[b] for b in self.bands]]
        if self._palette is not None:
            data = expand_palette(data[0], self._palette)
        if self.stretch is not None:
            rgb = self.stretch.apply(data)
        elif data.dtype == np.uint8:
            rgb = data
        else:
            rgb = np.clip(np.nan_to_num(data.astype(np.float32)), 0, 255).astype(np.uint8)
        nodata = ~valid
        rgb = np.ascontiguousarray(rgb.transpose(1, 2, 0))
        if nodata.any():
            rgb[nodata] = 0
            return rgb, nodata
        return rgb, None


_REPLACED: set[tuple[str, str]] = set()


def _say_replaced_crs(path: str, own: rasterio.crs.CRS | None, assigned: rasterio.crs.CRS | None) -> None:
    """A warning (once per raster and CRS) when ``--assign-crs`` replaces a CRS the file has: it
    is meant for rasters without one, and a wrong one moves every building (EPSG:32634 for
    EPSG:32633: 600 km) with exit 0."""
    if own is None or assigned is None or own == assigned or (path, str(assigned)) in _REPLACED:
        return
    _REPLACED.add((path, str(assigned)))
    name = own.to_string() if own.is_epsg_code else (own.to_wkt()[:60] + "...")
    log.warning(
        "Warning: %s has its own CRS (%s); --assign-crs %s replaces it, as gdal_translate -a_srs does: "
        "leave it out unless the file's CRS is wrong.",
        path,
        name,
        assigned.to_string(),
    )


def open_raster(path: str | os.PathLike[str], **kwargs: object) -> RasterSource:
    """Open and validate a raster: ``with open_raster("ortho.tif") as src: ...``."""
    return RasterSource(path, **kwargs)  # type: ignore[arg-type]
