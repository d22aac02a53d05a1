"""Radiometry of real sensors: 16-bit, 11-bit, panchromatic, 4- and 8-band, JPEG YCbCr.

Each case is a synthetic town saved in that format (small files made here). The picture the
model is given must be the 8-bit original again (correlation > 0.95, right bands), and with
the bundled model the buildings must come out as in the 8-bit run.
"""

from __future__ import annotations

from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import rasterio
from rasterio.enums import ColorInterp
from rasterio.windows import Window

from fastsam_geo.evaluate import evaluate
from fastsam_geo.raster import RasterSource
from fastsam_geo.synthetic import Scene, write_scene

REPO = Path(__file__).resolve().parents[1]
TOWN = REPO / "weights" / "fastsam-geo-town-n.pt"
WV_NAMES = ("coastal", "blue", "green", "yellow", "red", "red edge", "nir1", "nir2")
PLANET_NAMES = ("coastal_blue", "blue", "green_i", "green", "yellow", "red", "rededge", "nir")


@pytest.fixture(scope="module")
def town(tmp_path_factory: pytest.TempPathFactory) -> Scene:
    return write_scene(tmp_path_factory.mktemp("radiometry") / "town.tif", 512, seed=11)


def _rgb8(scene: Scene) -> tuple[np.ndarray, dict]:
    with rasterio.open(scene.raster) as ds:
        return ds.read(), ds.profile


def _luma(rgb: np.ndarray) -> np.ndarray:
    """ITU-R 601 luminance of a ``3 x H x W`` array (what a panchromatic band resembles)."""
    return 0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2]


def _write(path: Path, data: np.ndarray, profile: dict, descriptions=None, **extra: object) -> Path:
    prof = {**profile, "count": data.shape[0], "dtype": data.dtype.name, **extra}
    prof.pop("photometric", None)
    prof.update({k: v for k, v in extra.items()})
    with rasterio.open(path, "w", **prof) as dst:
        dst.write(data)
        if descriptions:
            for i, d in enumerate(descriptions, start=1):
                dst.set_band_description(i, d)
    return path


def _nir(rgb: np.ndarray) -> np.ndarray:
    """A plausible NIR band: bright vegetation (green > red), darker roofs."""
    g, r = rgb[1].astype(np.float64), rgb[0].astype(np.float64)
    return np.clip(1.6 * g - 0.6 * r + 30, 0, 255)


def make_variant(kind: str, scene: Scene, folder: Path, collar: bool = True) -> Path:
    """``scene`` saved as ``kind``; the same pixels, another sensor's format."""
    rgb, prof = _rgb8(scene)
    f = rgb.astype(np.float64)
    rng = np.random.default_rng(5)
    path = folder / f"{kind}.tif"
    if kind == "uint16":  # 16-bit: a 12-bit-ish signal in the middle of the range, plus sensor noise
        data = np.clip(f * 60 + 3000 + rng.normal(0, 20, f.shape), 0, 65535).astype(np.uint16)
        return _write(path, data, prof, photometric="RGB")
    if kind == "uint11":  # 11-bit data in uint16 (0-2047), an undeclared black collar around it
        data = np.rint(f * 2047 / 255).astype(np.uint16)
        if collar:
            data[:, :, :24] = 0
        return _write(path, data, prof, photometric="RGB", nbits=11)
    if kind == "grey8":  # the panchromatic picture in 8 bits: what pan16 must look like to the model
        return _write(path, np.rint(_luma(f))[None].astype(np.uint8), prof)
    if kind == "pan16":  # one 16-bit panchromatic band
        data = np.rint(_luma(f) * 40 + 800)[None].astype(np.uint16)
        return _write(path, data, prof)
    if kind == "bgrn":  # 4 bands blue, green, red, NIR; no colour interpretation
        data = np.stack([f[2], f[1], f[0], _nir(f)]).astype(np.uint16) * 8
        return _write(path, data, prof, photometric="MINISBLACK")
    if kind in ("wv8", "planet8"):  # 8 bands; the Planet file names its bands
        others = [np.clip(0.5 * f[2] + 0.5 * f[1], 0, 255), _nir(f), np.clip(0.9 * _nir(f), 0, 255)]
        if kind == "wv8":  # coastal, blue, green, yellow, red, red edge, NIR1, NIR2
            bands = [0.8 * f[2] + 20, f[2], f[1], others[0], f[0], others[1], others[1], others[2]]
            names = None
        else:  # coastal blue, blue, green I, green, yellow, red, red edge, NIR
            bands = [0.8 * f[2] + 20, f[2], 0.9 * f[1], f[1], others[0], f[0], others[1], others[2]]
            names = PLANET_NAMES
        data = (np.stack(bands) * 8).astype(np.uint16)
        return _write(path, data, prof, descriptions=names, photometric="MINISBLACK")
    if kind == "ycbcr":  # JPEG-compressed YCbCr, as many orthophoto deliveries are
        return _write(path, rgb, prof, photometric="ycbcr", compress="jpeg", tiled=True, blockxsize=256,
                      blockysize=256, interleave="pixel")
    if kind == "uint16_nodata":  # 16-bit with a large nodata hole (value 0, declared)
        data = np.clip(f * 60 + 3000, 0, 65535).astype(np.uint16)
        data[:, 100:400, 50:300] = 0
        return _write(path, data, prof, photometric="RGB", nodata=0)
    raise ValueError(kind)


def _picture(path: Path) -> tuple[np.ndarray, np.ndarray | None, RasterSource]:
    src = RasterSource(path)
    with src:
        img, nodata = src.read(Window(0, 0, src.info.width, src.info.height))
    return img, nodata, src


def _corr(a: np.ndarray, b: np.ndarray, mask: np.ndarray | None = None) -> float:
    a, b = a.astype(np.float64), b.astype(np.float64)
    if mask is not None:
        a, b = a[mask], b[mask]
    return float(np.corrcoef(a.ravel(), b.ravel())[0, 1])


@pytest.mark.parametrize(
    ("kind", "bands"),
    [("uint16", (1, 2, 3)), ("uint11", (1, 2, 3)), ("bgrn", (3, 2, 1)), ("wv8", (5, 3, 2)),
     ("planet8", (6, 4, 2)), ("ycbcr", (1, 2, 3))],
)
def test_the_model_sees_the_8_bit_picture(kind: str, bands: tuple[int, int, int], town: Scene, tmp_path: Path) -> None:
    rgb, _ = _rgb8(town)
    img, _, src = _picture(make_variant(kind, town, tmp_path))
    assert src.bands == bands, src.radiometry
    valid = np.ones(rgb.shape[1:], bool)
    if kind == "uint11":
        valid[:, :24] = False  # the collar
    for c in range(3):
        assert _corr(img[..., c], rgb[c], valid) > 0.95, (kind, c, src.radiometry)
    # brightness in the 8-bit range, not squashed into a few grey levels
    assert np.percentile(img[valid], 98) > 180 and np.percentile(img[valid], 2) < 60, src.radiometry


def test_ycbcr_jpeg_is_read_as_rgb(town: Scene, tmp_path: Path) -> None:
    path = make_variant("ycbcr", town, tmp_path)
    with rasterio.open(path) as ds:
        assert ds.tags(ns="IMAGE_STRUCTURE").get("SOURCE_COLOR_SPACE") == "YCbCr"
        assert ds.tags(ns="IMAGE_STRUCTURE").get("COMPRESSION") == "YCbCr JPEG"
        assert list(ds.colorinterp) == [ColorInterp.red, ColorInterp.green, ColorInterp.blue]
    rgb, _ = _rgb8(town)
    img, _, src = _picture(path)
    assert src.stretch is None  # 8-bit RGB: as it is
    assert np.abs(img.astype(int) - rgb.transpose(1, 2, 0).astype(int)).mean() < 8


def test_panchromatic_16_bit_is_a_grey_picture(town: Scene, tmp_path: Path) -> None:
    rgb, _ = _rgb8(town)
    img, _, src = _picture(make_variant("pan16", town, tmp_path))
    assert src.bands == (1, 1, 1) and "one grey band" in src.radiometry
    assert (img[..., 0] == img[..., 1]).all() and (img[..., 1] == img[..., 2]).all()
    assert _corr(img[..., 0], _luma(rgb.astype(np.float64))) > 0.95
    assert np.percentile(img, 98) > 200 and np.percentile(img, 2) < 40


def test_the_stretch_ignores_nodata_and_black_collars(town: Scene, tmp_path: Path) -> None:
    """Percentiles are of the valid pixels: a hole or a collar must not move them."""
    full = make_variant("uint16", town, tmp_path)
    holed = make_variant("uint16_nodata", town, tmp_path)
    with RasterSource(full) as a, RasterSource(holed) as b:
        rgb, _ = _rgb8(town)
        mask = np.ones(rgb.shape[1:], bool)
        mask[100:400, 50:300] = False
        # the same stretch as the valid pixels of the holed file give (noise-free: +-60 DN of 3000+)
        f = rgb.astype(np.float64)[:, mask] * 60 + 3000
        expected_lo = np.percentile(f, 2, axis=1)
        np.testing.assert_allclose(b.stretch.lo, expected_lo, rtol=0.01)
        _, nodata = b.read(Window(0, 0, b.info.width, b.info.height))
        assert nodata is not None and nodata[200, 100] and not nodata[50, 50]
        assert abs(a.stretch.gamma - b.stretch.gamma) < 0.1  # the hole moves the median a little
    with RasterSource(make_variant("uint11", town, tmp_path)) as c:
        assert "black (0) pixels left out" in c.radiometry and "(11-bit)" in c.radiometry
        assert min(c.stretch.lo) > 0


def test_dark_11_bit_data_get_a_gamma(town: Scene, tmp_path: Path) -> None:
    """A dark 11-bit satellite scene (long bright tail): one gamma for the whole raster."""
    rgb, prof = _rgb8(town)
    f = rgb.astype(np.float64) / 255
    data = np.rint(f**2.5 * 2047).astype(np.uint16)
    path = _write(tmp_path / "dark11.tif", data, prof, photometric="RGB", nbits=11)
    img, _, src = _picture(path)
    assert src.stretch is not None and 0.5 <= src.stretch.gamma < 0.9, src.radiometry
    assert f"gamma {src.stretch.gamma:.2f}" in src.radiometry
    assert 60 < np.median(img) < 160
    with RasterSource(path) as again:  # decided from the whole raster: the same for every read
        assert again.stretch == src.stretch


@pytest.mark.parametrize(
    ("kind", "scale", "dtype"),
    [("full-range 16-bit", 60000.0, np.uint16), ("float reflectance", 0.6, np.float32), ("32-bit", 1e6, np.int32)],
)
def test_linear_sensor_data_get_the_gamma_too(
    town: Scene, tmp_path: Path, kind: str, scale: float, dtype: type
) -> None:
    """Sensor products are linear in radiance (an 8-bit picture is display-encoded): dark whatever their range."""
    rgb, prof = _rgb8(town)
    linear = (rgb.astype(np.float64) / 255) ** 2.5 * scale
    img, _, src = _picture(_write(tmp_path / "linear.tif", linear.astype(dtype), prof, photometric="RGB"))
    assert src.stretch is not None and 0.5 <= src.stretch.gamma < 0.9, (kind, src.radiometry)
    assert 60 < np.median(img) < 160
    as_bytes = _write(tmp_path / "bytes16.tif", rgb.astype(np.uint16), prof, photometric="RGB")  # 8-bit in 16
    with RasterSource(as_bytes) as again:
        assert again.stretch is not None and again.stretch.gamma == 1.0, again.radiometry


@pytest.mark.model
def test_extract_finds_the_buildings_in_every_format(town: Scene, tmp_path: Path) -> None:
    """Each format scores as its 8-bit picture does: RGB formats as the RGB original,
    panchromatic 16-bit as the same scene in 8-bit grey (the bundled model was trained on
    colour only, so grey itself costs F1: that is the model's limit, not the radiometry's)."""
    from fastsam_geo.pipeline import extract_buildings
    from fastsam_geo.segment import FastSAMSegmenter

    seg = FastSAMSegmenter(TOWN, device="cpu")

    def f1(raster: Path) -> float:
        out = tmp_path / f"{raster.stem}.gpkg"
        extract_buildings(raster, out, segmenter=seg, gsd=0.5, tile_size=512, overlap=64, overwrite=True)
        return evaluate(gpd.read_file(out, layer="buildings"), town.truth).f1

    base = f1(town.raster)
    grey = f1(make_variant("grey8", town, tmp_path))
    assert base > 0.9
    for kind in ("uint16", "uint11", "pan16", "bgrn", "wv8", "planet8", "ycbcr"):
        got = f1(make_variant(kind, town, tmp_path, collar=False))
        ref = grey if kind == "pan16" else base
        print(f"{kind}: F1 {got:.3f} (8-bit reference {ref:.3f})")
        assert got >= ref - 0.1, (kind, got, ref)
