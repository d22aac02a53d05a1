"""Opening, validating and reading real (small) GeoTIFFs, COGs and VRTs written in tmp_path."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import rasterio
import rasterio.shutil
from affine import Affine
from rasterio.enums import ColorInterp, Resampling
from rasterio.errors import NotGeoreferencedWarning
from rasterio.windows import Window

from fastsam_geo.errors import FastSAMGeoError, RasterError
from fastsam_geo.raster import Stretch, open_raster

pytestmark = pytest.mark.filterwarnings("ignore:Use `@` matmul:PendingDeprecationWarning")

UTM = Affine(0.5, 0.0, 500000.0, 0.0, -0.5, 4650000.0)


def write_tif(
    path: Path,
    data: np.ndarray,
    *,
    crs: str | None = "EPSG:32633",
    transform: Affine | None = UTM,
    **profile: object,
) -> Path:
    """Write ``bands x H x W`` ``data`` as a GeoTIFF (transform None: no geotransform at all)."""
    count, height, width = data.shape
    kw: dict[str, object] = {
        "driver": "GTiff",
        "width": width,
        "height": height,
        "count": count,
        "dtype": data.dtype.name,
        "crs": crs,
    }
    if transform is not None:
        kw["transform"] = transform
    kw.update(profile)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(path, "w", **kw) as dst:
            dst.write(data)
    return path


def rgb_uint8(height: int = 40, width: int = 60, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (3, height, width), dtype=np.uint8)


def read_all(path: Path, **kw: object) -> tuple[np.ndarray, np.ndarray | None]:
    with open_raster(path, **kw) as src:
        return src.read(Window(0, 0, src.info.width, src.info.height))


# --------------------------------------------------------------------------- bands and stretch
def test_uint8_rgb_passes_through_unchanged(tmp_path: Path) -> None:
    data = rgb_uint8()
    path = write_tif(tmp_path / "rgb.tif", data, photometric="RGB")
    with open_raster(path) as src:
        assert src.stretch is None
        assert src.bands == (1, 2, 3)
        info = src.info
        assert (info.width, info.height, info.count, info.dtype) == (60, 40, 3, "uint8")
        assert info.crs.to_epsg() == 32633 and info.transform == UTM
        assert info.bounds == (500000.0, 4650000.0 - 20.0, 500000.0 + 30.0, 4650000.0)
        assert not info.is_geographic
        rgb, nodata = src.read(Window(0, 0, 60, 40))
        assert rgb.dtype == np.uint8 and rgb.shape == (40, 60, 3) and rgb.flags.c_contiguous
        np.testing.assert_array_equal(rgb, data.transpose(1, 2, 0))
        assert nodata is None
        part, _ = src.read(Window(10, 5, 20, 15))
        np.testing.assert_array_equal(part, data[:, 5:20, 10:30].transpose(1, 2, 0))


def test_one_band_uint16_is_grey_with_a_global_stretch(tmp_path: Path) -> None:
    # Left half dark (1000-2000), right half bright (20000-60000); the value 5000 sits in both.
    rng = np.random.default_rng(1)
    data = np.empty((1, 64, 128), np.uint16)
    data[0, :, :64] = rng.integers(1000, 2001, (64, 64))
    data[0, :, 64:] = rng.integers(20000, 60001, (64, 64))
    data[0, 10, 10] = 5000
    data[0, 10, 100] = 5000
    path = write_tif(tmp_path / "pan16.tif", data)
    with open_raster(path) as src:
        assert src.bands == (1, 1, 1)
        assert src.stretch is not None
        lo, hi = np.percentile(data.astype(np.float64), (2, 98))
        np.testing.assert_allclose(src.stretch.lo, (lo,) * 3)
        np.testing.assert_allclose(src.stretch.hi, (hi,) * 3)
        left, _ = src.read(Window(0, 0, 64, 64))
        right, _ = src.read(Window(64, 0, 64, 64))
    assert left.dtype == np.uint8
    # Grey: the three channels are equal.
    assert (left[..., 0] == left[..., 1]).all() and (left[..., 1] == left[..., 2]).all()
    # Global, not per-tile: the same value gives the same output in both windows, although the
    # windows' own ranges differ (a per-tile min/max would map 5000 to 255 on the left and 0 on
    # the right).
    assert left[10, 10].tolist() == right[10, 100 - 64].tolist()
    o0, o1 = src.stretch.out  # the percentiles land at o0 and o1 (16 and 224), not at 0 and 255
    assert (o0, o1) == (16.0, 224.0)
    g = src.stretch.gamma  # half the pixels are dark 16-bit sensor data: a gamma lifts them
    assert 0.5 <= g < 1.0, src.radiometry
    expected = np.rint(((5000 - lo) / (hi - lo) * (o1 - o0) / 255 + o0 / 255) ** g * 255)
    assert abs(int(left[10, 10, 0]) - expected) <= 1
    # 5000 is the brightest pixel of the left window and the darkest of the right one.
    assert left[..., 0].max() == left[10, 10, 0] and right[..., 0].min() == right[10, 36, 0]
    assert left[..., 0].min() <= round((o0 / 255) ** g * 255) and right[..., 0].max() >= round((o1 / 255) ** g * 255)
    # The stretch is fixed when the source opens: reading a window changes nothing.
    assert Stretch(lo=(lo,), hi=(hi,), gamma=g, out=(o0, o1)).apply(data[:, 10:11, 10:11]).item() == left[10, 10, 0]


def test_four_bands_use_colour_interpretation(tmp_path: Path) -> None:
    data = np.random.default_rng(2).integers(0, 256, (4, 20, 30), dtype=np.uint8)
    path = tmp_path / "bgrn.tif"
    write_tif(path, data)
    with rasterio.open(path, "r+") as ds:
        ds.colorinterp = [ColorInterp.blue, ColorInterp.green, ColorInterp.red, ColorInterp.undefined]
    with open_raster(path) as src:
        assert src.bands == (3, 2, 1)
        rgb, _ = src.read(Window(0, 0, 30, 20))
    np.testing.assert_array_equal(rgb, data[[2, 1, 0]].transpose(1, 2, 0))


def test_four_bands_without_colour_interpretation_read_as_blue_green_red_nir(tmp_path: Path) -> None:
    data = np.random.default_rng(3).integers(0, 256, (4, 20, 30), dtype=np.uint8)
    path = write_tif(tmp_path / "four.tif", data, photometric="MINISBLACK")
    with rasterio.open(path) as ds:
        assert ColorInterp.red not in ds.colorinterp
    rgb, _ = read_all(path)
    np.testing.assert_array_equal(rgb, data[[2, 1, 0]].transpose(1, 2, 0))


def test_explicit_bands(tmp_path: Path) -> None:
    data = np.random.default_rng(4).integers(0, 256, (4, 20, 30), dtype=np.uint8)
    path = write_tif(tmp_path / "four.tif", data, photometric="MINISBLACK")
    with open_raster(path, bands=(4, 3, 2)) as src:
        assert src.bands == src.info.bands == (4, 3, 2)
        rgb, _ = src.read(Window(0, 0, 30, 20))
    np.testing.assert_array_equal(rgb, data[[3, 2, 1]].transpose(1, 2, 0))
    grey, _ = read_all(path, bands=(4,))
    np.testing.assert_array_equal(grey, np.repeat(data[3][..., None], 3, axis=2))


def test_rgba_alpha_is_nodata(tmp_path: Path) -> None:
    data = np.random.default_rng(8).integers(1, 256, (4, 20, 30), dtype=np.uint8)
    data[3, :, :] = 255
    data[3, 2:5, 3:7] = 0
    path = write_tif(tmp_path / "rgba.tif", data, photometric="RGB", alpha="YES")
    with rasterio.open(path) as ds:
        assert ds.colorinterp[3] == ColorInterp.alpha
    rgb, nodata = read_all(path)
    expected = data[3] == 0
    assert nodata is not None
    np.testing.assert_array_equal(nodata, expected)
    np.testing.assert_array_equal(rgb[~expected], data[:3].transpose(1, 2, 0)[~expected])
    assert (rgb[expected] == 0).all()


def test_float32_nan_is_nodata(tmp_path: Path) -> None:
    data = np.linspace(0.0, 1.0, 3 * 30 * 40, dtype=np.float32).reshape(3, 30, 40)
    data[:, 5:8, 6:9] = np.nan
    data[1, 20, 20] = np.nan  # one band NaN is enough
    path = write_tif(tmp_path / "float.tif", data)
    rgb, nodata = read_all(path)
    assert nodata is not None and nodata.dtype == bool and nodata.shape == (30, 40)
    expected = np.zeros((30, 40), bool)
    expected[5:8, 6:9] = True
    expected[20, 20] = True
    np.testing.assert_array_equal(nodata, expected)
    assert (rgb[nodata] == 0).all()
    # Stretched from the finite pixels: a spread past 16-224 (the percentiles), not all 0 or all 255.
    valid = rgb[~nodata]
    assert valid.min() < 16 and valid.max() > 224 and 50 < valid.mean() < 200


def test_nodata_border_is_masked(tmp_path: Path) -> None:
    data = np.random.default_rng(5).integers(1, 256, (3, 40, 50), dtype=np.uint8)
    data[:, :4, :] = 0
    data[:, :, -6:] = 0
    path = write_tif(tmp_path / "border.tif", data, nodata=0)
    with open_raster(path) as src:
        assert src.info.nodata == 0
        rgb, nodata = src.read(Window(0, 0, 50, 40))
        inner, inner_nodata = src.read(Window(10, 10, 20, 20))
    expected = np.zeros((40, 50), bool)
    expected[:4, :] = True
    expected[:, -6:] = True
    assert nodata is not None
    np.testing.assert_array_equal(nodata, expected)
    np.testing.assert_array_equal(rgb[~nodata], data.transpose(1, 2, 0)[~expected])
    assert inner_nodata is None
    np.testing.assert_array_equal(inner, data[:, 10:30, 10:30].transpose(1, 2, 0))


def test_geographic_raster_opens(tmp_path: Path) -> None:
    transform = Affine(1e-5, 0.0, -43.2, 0.0, -1e-5, -22.9)
    path = write_tif(tmp_path / "wgs84.tif", rgb_uint8(), crs="EPSG:4326", transform=transform)
    with open_raster(path) as src:
        assert src.info.is_geographic
        assert src.info.crs.to_epsg() == 4326
        assert src.info.res == pytest.approx((1e-5, 1e-5))
        rgb, _ = src.read(Window(0, 0, 60, 40))
    assert rgb.shape == (40, 60, 3)


def test_cog_with_overviews(tmp_path: Path) -> None:
    rng = np.random.default_rng(6)
    data = rng.integers(0, 4096, (3, 512, 512), dtype=np.uint16)
    path = write_tif(
        tmp_path / "cog.tif",
        data,
        tiled=True,
        blockxsize=256,
        blockysize=256,
        compress="deflate",
    )
    with rasterio.open(path, "r+") as ds:
        ds.build_overviews([2, 4], Resampling.average)
    cog = tmp_path / "real_cog.tif"
    rasterio.shutil.copy(path, cog, driver="COG")
    for p in (path, cog):
        with open_raster(p) as src:
            assert src.info.overviews == 2
            assert src.stretch is not None
            rgb, nodata = src.read(Window(256, 256, 256, 256))
            assert rgb.shape == (256, 256, 3) and nodata is None
            assert rgb.std() > 20  # stretched noise, not a flat image


def _write_vrt(path: Path, source: Path, width: int, height: int) -> Path:
    bands = "\n".join(
        f"""  <VRTRasterBand dataType="Byte" band="{b}">
    <SimpleSource>
      <SourceFilename relativeToVRT="1">{source.name}</SourceFilename>
      <SourceBand>{b}</SourceBand>
      <SrcRect xOff="0" yOff="0" xSize="{width}" ySize="{height}"/>
      <DstRect xOff="0" yOff="0" xSize="{width}" ySize="{height}"/>
    </SimpleSource>
  </VRTRasterBand>"""
        for b in (1, 2, 3)
    )
    t = UTM
    path.write_text(
        f"""<VRTDataset rasterXSize="{width}" rasterYSize="{height}">
  <SRS>EPSG:32633</SRS>
  <GeoTransform>{t.c}, {t.a}, {t.b}, {t.f}, {t.d}, {t.e}</GeoTransform>
{bands}
</VRTDataset>
"""
    )
    return path


def test_vrt_opens_and_reads(tmp_path: Path) -> None:
    data = rgb_uint8(30, 50, seed=7)
    src_tif = write_tif(tmp_path / "src.tif", data)
    vrt = _write_vrt(tmp_path / "mosaic.vrt", src_tif, 50, 30)
    with open_raster(vrt) as src:
        assert src.info.crs.to_epsg() == 32633 and src.info.transform == UTM
        rgb, nodata = src.read(Window(5, 5, 40, 20))
    np.testing.assert_array_equal(rgb, data[:, 5:25, 5:45].transpose(1, 2, 0))
    assert nodata is None


# --------------------------------------------------------------------------- bad input
def _bad_text(tmp_path: Path) -> tuple[Path, dict[str, object]]:
    p = tmp_path / "notes_not_a_raster.tif"
    p.write_text("this is not a GeoTIFF\n")
    return p, {}


def _bad_no_crs(tmp_path: Path) -> tuple[Path, dict[str, object]]:
    return write_tif(tmp_path / "no_crs.tif", rgb_uint8(), crs=None), {}


def _bad_missing(tmp_path: Path) -> tuple[Path, dict[str, object]]:
    return tmp_path / "nowhere" / "missing_ortho.tif", {}


def _bad_rotated(tmp_path: Path) -> tuple[Path, dict[str, object]]:
    rotated = Affine(0.5, 0.1, 500000.0, 0.1, -0.5, 4650000.0)
    return write_tif(tmp_path / "rotated.tif", rgb_uint8(), transform=rotated), {}


def _bad_identity(tmp_path: Path) -> tuple[Path, dict[str, object]]:
    return write_tif(tmp_path / "pixels_only.tif", rgb_uint8(), transform=None), {}


def _bad_band(tmp_path: Path) -> tuple[Path, dict[str, object]]:
    return write_tif(tmp_path / "three_bands.tif", rgb_uint8()), {"bands": (1, 2, 5)}


def _bad_band_zero(tmp_path: Path) -> tuple[Path, dict[str, object]]:
    return write_tif(tmp_path / "three_bands_zero.tif", rgb_uint8()), {"bands": (0,)}


@pytest.mark.parametrize(
    ("make", "needle"),
    [
        (_bad_text, "cannot be read"),
        (_bad_no_crs, "no CRS"),
        (_bad_missing, "no such file"),
        (_bad_rotated, "rotated"),
        (_bad_identity, "not georeferenced"),
        (_bad_band, "Band 5 does not exist"),
        (_bad_band_zero, "Band 0 does not exist"),
    ],
    ids=["text-file", "no-crs", "missing", "rotated", "identity-transform", "band-5", "band-0"],
)
def test_bad_input_raises_raster_error_naming_the_file(make, needle: str, tmp_path: Path) -> None:
    path, kwargs = make(tmp_path)
    with pytest.raises(RasterError, match=needle) as info:
        open_raster(path, **kwargs)
    err = info.value
    assert isinstance(err, ValueError) and isinstance(err, FastSAMGeoError)
    assert path.name in str(err)
    assert "\n" not in str(err)


def test_bad_stretch_mode_names_the_file(tmp_path: Path) -> None:
    path = write_tif(tmp_path / "ok.tif", rgb_uint8())
    with pytest.raises(RasterError, match=r"ok\.tif.*stretch="):
        open_raster(path, stretch="histogram")


def test_source_closes_after_an_error(tmp_path: Path) -> None:
    path = write_tif(tmp_path / "closed.tif", rgb_uint8())
    src = open_raster(path)
    with src:
        assert not src.dataset.closed
    assert src.dataset.closed


def test_two_bands_read_as_grey(tmp_path: Path) -> None:
    data = np.random.default_rng(9).integers(0, 256, (2, 10, 12), dtype=np.uint8)
    path = write_tif(tmp_path / "two.tif", data)
    with open_raster(path) as src:
        assert src.bands == (1, 1, 1)
        rgb, _ = src.read(Window(0, 0, 12, 10))
    np.testing.assert_array_equal(rgb, np.repeat(data[0][..., None], 3, axis=2))


# --------------------------------------------------------------------------- real imagery
def test_spacenet_chips_read_tile_by_tile(spacenet_chips: list[tuple[Path, Path]]) -> None:
    """Real SpaceNet Rio chips (EPSG:4326, 8-bit RGB): tiles read through their cores
    reassemble the chip exactly."""
    from fastsam_geo.tiling import TileGrid

    for image, _ in spacenet_chips:
        with rasterio.open(image) as ds:
            expected = ds.read([1, 2, 3]).transpose(1, 2, 0)
        with open_raster(image) as src:
            info = src.info
            assert info.is_geographic and info.crs.to_epsg() == 4326
            assert src.stretch is None
            grid = TileGrid(info.width, info.height, tile_size=128, overlap=16, transform=info.transform)
            out = np.zeros_like(expected)
            for spec in grid:
                rgb, _ = src.read(spec.window)
                assert rgb.shape == (spec.window.height, spec.window.width, 3)
                c, w = spec.core, spec.window
                r0, c0 = c.row_off - w.row_off, c.col_off - w.col_off
                out[c.row_off : c.row_off + c.height, c.col_off : c.col_off + c.width] = rgb[
                    r0 : r0 + c.height, c0 : c0 + c.width
                ]
        np.testing.assert_array_equal(out, expected, err_msg=image.name)
