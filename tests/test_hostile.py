"""A hostile user's matrix: the real CLI in a subprocess, fed broken files and bad values.

Every refusal must be: exit code 1, exactly one line on stderr (``Error: ...``) naming the
file or option and the fix, no traceback, no output file, nothing new beside the output
(no ``.part``, ledger, lock or staging file), and every input's bytes unchanged.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.server
import os
import shutil
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyogrio
import pytest
import rasterio
from range_http_server import RangeHandler
from rasterio.control import GroundControlPoint
from rasterio.windows import Window

from fastsam_geo.errors import FastSAMGeoError
from fastsam_geo.synthetic import Scene, write_scene

REPO = Path(__file__).resolve().parents[1]
WEIGHTS = REPO / "weights" / "fastsam-geo-town-n.pt"
FSG = [sys.executable, "-m", "fastsam_geo"]
ENV = {
    **os.environ,
    "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep),
    "YOLO_OFFLINE": "1",
    "HF_HUB_OFFLINE": "1",
    "YOLO_VERBOSE": "False",
}
# one view of each tile: these tests are about inputs, outputs and failures (tests/test_tta.py: the views)
FAST = ["--tile-size", "256", "--overlap", "32", "-w", str(WEIGHTS), "--no-cache", "--tta", "1"]
IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0


def run_cli(*args: str, timeout: float = 300, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*FSG, *map(str, args)], capture_output=True, text=True, timeout=timeout, env=ENV, cwd=cwd)


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def snapshot(folders: list[Path]) -> dict[Path, str]:
    """Every file under ``folders`` and its sha256 (symlinks by their target text)."""
    out: dict[Path, str] = {}
    for folder in folders:
        for p in folder.rglob("*"):
            if p.is_symlink():
                out[p] = "link:" + os.readlink(p)
            elif p.is_file():
                out[p] = sha(p)
    return out


def assert_refused(
    args: list[object], folder: Path, *must: str, output: Path | None = None, cwd: Path | None = None
) -> str:
    """Run the CLI and check the whole refusal contract; returns the error line."""
    before = snapshot([folder])
    r = run_cli(*map(str, args), cwd=cwd)
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert r.returncode == 1, (r.returncode, r.stderr)
    assert "Traceback" not in r.stderr, r.stderr
    assert len(lines) == 1 and lines[0].startswith("Error: "), r.stderr
    for m in must:
        assert m in lines[0], (m, lines[0])
    if output is not None and output not in before:
        assert not output.exists(), output
    after = snapshot([folder])
    assert after == before, {"new or changed": sorted(str(p) for p in set(after.items()) ^ set(before.items()))}
    return lines[0]


@pytest.fixture(scope="module")
def town(tmp_path_factory: pytest.TempPathFactory) -> Scene:
    return write_scene(tmp_path_factory.mktemp("town") / "town.tif", 512, seed=21)


@pytest.fixture()
def work(tmp_path: Path, town: Scene) -> Path:
    """A folder with a copy of the town raster (``r.tif``)."""
    shutil.copy(town.raster, tmp_path / "r.tif")
    return tmp_path


# ------------------------------------------------------------------ raster helpers
def write_like(src: Path, dst: Path, dtype: str, **extra: object) -> Path:
    with rasterio.open(src) as ds:
        data = ds.read().astype(dtype) * (200 if dtype != "uint8" else 1)
        profile = {**ds.profile, "dtype": dtype, **extra}
    with rasterio.open(dst, "w", **profile) as out:
        out.write(data)
    return dst


def truncate(path: Path, keep: float = 0.5) -> Path:
    size = path.stat().st_size
    with open(path, "r+b") as f:
        f.truncate(int(size * keep))
    return path


def gpkg_raster(src: Path, dst: Path) -> Path:
    with rasterio.open(src) as ds:
        profile = {**ds.profile, "driver": "GPKG", "blockxsize": 256, "blockysize": 256}
        profile.pop("tiled", None)
        profile.pop("interleave", None)
        profile.pop("compress", None)
        with rasterio.open(dst, "w", **profile) as out:
            out.write(ds.read())
    return dst


def vrt_of(src_name: str, vrt: Path, size: int = 512) -> Path:
    bands = "".join(
        f'<VRTRasterBand dataType="Byte" band="{b}"><SimpleSource>'
        f'<SourceFilename relativeToVRT="1">{src_name}</SourceFilename><SourceBand>{b}</SourceBand>'
        f'<SrcRect xOff="0" yOff="0" xSize="{size}" ySize="{size}"/>'
        f'<DstRect xOff="0" yOff="0" xSize="{size}" ySize="{size}"/></SimpleSource></VRTRasterBand>'
        for b in (1, 2, 3)
    )
    vrt.write_text(
        f'<VRTDataset rasterXSize="{size}" rasterYSize="{size}"><SRS>EPSG:32633</SRS>'
        "<GeoTransform>500000, 0.5, 0, 4650000, 0, -0.5</GeoTransform>" + bands + "</VRTDataset>"
    )
    return vrt


# ================================================================== option values (no model needed)
BAD_OPTIONS = [
    (["--point", "nan,nan"], "--point"),
    (["--point", "inf,4649900"], "--point"),
    (["--point", "abc,def"], "--point"),
    (["--point", "500100,4649900,2"], "--point"),
    (["--box", "500000,nan,500100,4649900"], "--box"),
    (["--min-area", "500", "--max-area", "10"], "--min-area"),
    (["--min-area", "-1"], "--min-area"),
    (["--max-area", "nan"], "--max-area"),
    (["--simplify", "-1"], "--simplify"),
    (["--tile-size", "7"], "--tile-size"),
    (["--tile-size", "256.5"], "--tile-size"),
    (["--tile-size", "256", "--overlap", "128"], "--overlap"),
    (["--overlap", "-5"], "--overlap"),
    (["--conf", "2"], "--conf"),
    (["--conf", "nan"], "--conf"),
    (["--iou", "5"], "--iou"),
    (["--iou", "-0.1"], "--iou"),
    (["--tta", "3"], "--tta"),
    (["--tta", "0"], "--tta"),
    (["--tta", "eight"], "--tta"),
    (["--batch-size", "0"], "--batch-size"),
    (["--batch-size", "-3"], "--batch-size"),
    (["--device", "tpu"], "--device"),
    (["--device", "cuda:x"], "--device"),
    (["--bands", "0"], "--bands"),
    (["--bands", "1.5,2,3"], "--bands"),
    (["--stretch", "bogus"], "--stretch"),
    (["--top-k", "0", "--text", "building"], "--top-k"),
    (["--text", " "], "--text"),
    (["--text", "building", "--text-threshold", "5"], "--text-threshold"),
    (["--no-such-option"], "--no-such-option"),
]


@pytest.mark.parametrize("extra,option", BAD_OPTIONS, ids=[" ".join(a) for a, _ in BAD_OPTIONS])
def test_bad_option_values_are_one_line_usage_errors(work: Path, extra: list[str], option: str) -> None:
    out = work / "b.gpkg"
    assert_refused(["extract", work / "r.tif", out, *FAST, *extra], work, option, output=out)


@pytest.mark.parametrize(
    "args,must",
    [
        (["sample", "{w}/s.tif", "--size", "0"], "--size"),
        (["sample", "{w}/s.tif", "--size", "-5"], "--size"),
        (["sample", "{w}/s.tif", "--size", "999999999"], "at most 32768"),
        (["sample", "{w}/s.tif", "--density", "2"], "--density"),
        (["sample", "{w}/s.tif", "--size", "abc"], "--size"),
        (["sample", "{w}/s.tif", "--crs", "bogus"], "--crs"),
        (["info", "{w}/r.tif", "--tile-size", "7"], "--tile-size"),
        (["extract", "{w}/r.tif"], "OUTPUT"),
        (["bogus-command"], "bogus-command"),
        (["prompt", "{w}/r.tif", "{w}/b.gpkg"], "--point"),
    ],
    ids=[
        "sample-size-0",
        "sample-size-neg",
        "sample-size-huge",
        "sample-density",
        "sample-size-text",
        "sample-crs",
        "info-tile",
        "no-output",
        "unknown-command",
        "prompt-without-prompt",
    ],
)
def test_other_usage_errors_are_one_line(work: Path, args: list[str], must: str) -> None:
    assert_refused([a.format(w=work) for a in args], work, must)


# ================================================================== paths
def test_output_is_a_folder_and_folder_without_rasters(work: Path) -> None:
    (work / "empty").mkdir()
    assert_refused(["extract", work / "r.tif", work / "empty", *FAST], work, "is a folder")
    assert_refused(["extract", work / "empty", work / "b.gpkg", *FAST], work, "holds no raster", output=work / "b.gpkg")


@pytest.mark.parametrize(
    "make,must",
    [
        (lambda w: w / "missing.tif", "no such file"),
        (lambda w: (w / "loop.tif").symlink_to(w / "loop.tif") or w / "loop.tif", "loop.tif"),
        (lambda w: (w / "dangling.tif").symlink_to(w / "gone.tif") or w / "dangling.tif", "broken symbolic link"),
        (lambda w: (w / "notes.tif").write_text("not a raster") and w / "notes.tif", "cannot be read as a raster"),
        (lambda w: (w / "line\nbreak.tif").write_text("x") and w / "line\nbreak.tif", "cannot be read"),
    ],
    ids=["missing", "symlink-loop", "dangling-symlink", "text-file", "newline-in-name"],
)
def test_bad_raster_paths(work: Path, make, must: str) -> None:
    raster = make(work)
    assert_refused(["extract", raster, work / "b.gpkg", *FAST], work, must, output=work / "b.gpkg")


@pytest.mark.parametrize(
    "out,must",
    [
        ("b.shp", "unknown output format"),
        ("no/such/folder/b.gpkg", "does not exist"),
        ("b\nc.gpkg", "newline"),
    ],
    ids=["unknown-extension", "missing-folder", "newline-in-output"],
)
def test_bad_output_paths(work: Path, out: str, must: str) -> None:
    assert_refused(["extract", work / "r.tif", work / out, *FAST], work, must)


def test_weights_path_is_a_folder(work: Path) -> None:
    (work / "wdir.pt").mkdir()
    args = ["extract", work / "r.tif", work / "b.gpkg", "--tile-size", "256", "--overlap", "32", "-w", work / "wdir.pt"]
    assert_refused(args, work, "wdir.pt", output=work / "b.gpkg")


def test_read_only_output_folder(work: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    if not IS_ROOT:
        pytest.skip("needs root to mount a read-only tmpfs (chmod does not stop root)")
    ro = tmp_path_factory.mktemp("ro")
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1M,ro", "tmpfs", str(ro)], check=True)
    try:
        assert_refused(["extract", work / "r.tif", ro / "b.gpkg", *FAST], work, "not writable")
    finally:
        subprocess.run(["umount", str(ro)], check=True)


# ================================================================== an output that is an input
@pytest.fixture()
def gpkg_input(work: Path) -> Path:
    return gpkg_raster(work / "r.tif", work / "r.gpkg")


@pytest.mark.parametrize(
    "spell",
    [
        lambda w: w / "r.gpkg",
        lambda w: w / "sub" / ".." / "r.gpkg",
        lambda w: (w / "link.gpkg").symlink_to(w / "r.gpkg") or w / "link.gpkg",
        lambda w: os.link(w / "r.gpkg", w / "hard.gpkg") or w / "hard.gpkg",
    ],
    ids=["same-path", "other-spelling", "symlink", "hard-link"],
)
def test_output_that_is_the_raster_is_refused_even_with_overwrite(gpkg_input: Path, spell) -> None:
    work = gpkg_input.parent
    (work / "sub").mkdir()
    out = spell(work)
    line = assert_refused(["extract", gpkg_input, out, *FAST, "--overwrite"], work, "is also an input")
    assert str(out) in line


def test_output_that_is_the_prompts_file_or_a_vrt_source_is_refused(gpkg_input: Path, town: Scene) -> None:
    work = gpkg_input.parent
    prompts = work / "prompts.gpkg"
    town.truth.iloc[:3].to_file(prompts, layer="prompts")
    args = ["extract", work / "r.tif", prompts, *FAST, "--prompts", prompts, "--overwrite"]
    assert_refused(args, work, "is also an input")
    vrt = vrt_of("r.gpkg", work / "v.vrt")
    assert_refused(["extract", vrt, gpkg_input, *FAST, "--overwrite"], work, "is also an input")


# ================================================================== broken rasters
def test_vrt_with_missing_source_names_it(work: Path) -> None:
    vrt = vrt_of("gone.tif", work / "v.vrt")
    assert_refused(["extract", vrt, work / "b.gpkg", *FAST], work, "gone.tif", "does not exist", output=work / "b.gpkg")
    assert_refused(["info", vrt], work, "gone.tif")


@pytest.mark.parametrize("dtype", ["uint16", "float32"])
def test_truncated_16bit_and_float_rasters(work: Path, dtype: str) -> None:
    raster = truncate(
        write_like(
            work / "r.tif", work / f"{dtype}.tif", dtype, tiled=True, blockxsize=256, blockysize=256, compress="deflate"
        )
    )
    assert_refused(["extract", raster, work / "b.gpkg", *FAST], work, raster.name, "truncated", output=work / "b.gpkg")
    assert_refused(["info", raster], work, raster.name, "truncated")


def test_raster_without_bands(work: Path) -> None:
    vrt = work / "zero.vrt"
    vrt.write_text(
        '<VRTDataset rasterXSize="64" rasterYSize="64"><SRS>EPSG:32633</SRS>'
        "<GeoTransform>500000, 0.5, 0, 4650000, 0, -0.5</GeoTransform></VRTDataset>"
    )
    assert_refused(["extract", vrt, work / "b.gpkg", *FAST], work, "zero.vrt", output=work / "b.gpkg")


def test_gcp_only_raster_hint_works(work: Path) -> None:
    raster = work / "gcp.tif"
    with rasterio.open(work / "r.tif") as ds:
        profile = {**ds.profile}
        profile.pop("transform")
        profile.pop("crs")
        data = ds.read()
    gcps = [
        GroundControlPoint(row=r, col=c, x=500000 + c * 0.5, y=4650000 - r * 0.5)
        for r, c in ((0, 0), (0, 511), (511, 0), (511, 511))
    ]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with rasterio.open(raster, "w", **profile) as out:
            out.write(data)
            out.gcps = (gcps, rasterio.crs.CRS.from_epsg(32633))
    line = assert_refused(["extract", raster, work / "b.gpkg", *FAST], work, "ground control points", "gdalwarp")
    if shutil.which("gdalwarp") is None:
        pytest.skip("gdalwarp is not installed: the hint's command cannot be run here")
    cmd = line.split("`")[1].replace("warped.tif", str(work / "warped.tif"))
    subprocess.run(cmd.split(), check=True, capture_output=True)
    with rasterio.open(work / "warped.tif") as ds:
        assert ds.crs.to_epsg() == 32633 and not ds.transform.is_identity


def test_png_without_georeferencing_hint_works(work: Path) -> None:
    png = work / "photo.png"
    with rasterio.open(work / "r.tif") as ds:
        data = ds.read()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with rasterio.open(png, "w", driver="PNG", width=512, height=512, count=3, dtype="uint8") as out:
            out.write(data)
    line = assert_refused(["extract", png, work / "b.gpkg", *FAST], work, "gdal_translate", "-a_ullr")
    assert "gdal_edit" not in line
    if shutil.which("gdal_translate") is None:
        pytest.skip("gdal_translate is not installed: the hint's command cannot be run here")
    cmd = line.split("`")[1].replace("ULX ULY LRX LRY", "500000 4650000 500256 4649744").split()
    subprocess.run(cmd, check=True, capture_output=True)
    with rasterio.open(work / "photo.tif") as ds:
        assert ds.crs.to_epsg() == 32633 and ds.transform.a == 0.5


def test_expand_palette_reads_a_paletted_geotiff_as_its_colours(work: Path) -> None:
    from fastsam_geo.raster import RasterSource

    with rasterio.open(work / "r.tif") as ds:
        rgb = ds.read()
        profile = {**ds.profile, "count": 1, "photometric": "palette"}
    q = (rgb[0] // 64) * 16 + (rgb[1] // 64) * 4 + rgb[2] // 64  # 64 colours
    cmap = {i: (int((i // 16) * 64 + 32), int((i // 4 % 4) * 64 + 32), int((i % 4) * 64 + 32), 255) for i in range(256)}
    with rasterio.open(work / "pal.tif", "w", **profile) as out:
        out.write(q.astype("uint8"), 1)
        out.write_colormap(1, cmap)
    with RasterSource(work / "pal.tif") as src:
        img, _ = src.read(Window(0, 0, 512, 512))
    expect = np.stack([(q // 16) * 64 + 32, (q // 4 % 4) * 64 + 32, (q % 4) * 64 + 32], axis=-1)
    np.testing.assert_array_equal(img, expect.astype(np.uint8))
    assert np.abs(img.astype(int) - rgb.transpose(1, 2, 0)).mean() < 20  # the picture, not grey indices


# ================================================================== runs with the model
def test_min_area_holds_on_final_polygons_and_brackets_are_literal(work: Path) -> None:
    raster = work / "ortho[2023].tif"
    (work / "r.tif").rename(raster)
    out = work / "b.gpkg"
    r = run_cli("-q", "extract", raster, out, *FAST, "--min-area", "100", "--simplify", "3")
    assert r.returncode == 0, r.stderr
    assert r.stderr == ""
    df = pyogrio.read_dataframe(out)
    assert len(df) > 0
    assert df.area_m2.min() >= 100
    assert sorted(p.name for p in work.iterdir()) == ["b.gpkg", "ortho[2023].tif"]
    layers = pyogrio.list_layers(out)
    assert [list(x) for x in layers] == [["buildings", "Polygon"]]
    import geopandas as gpd

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert len(gpd.read_file(out)) == len(df)
    from fastsam_geo.output import read_run_tables

    meta, tiles = read_run_tables(out)
    assert meta["tile_size"] == "256" and len(tiles) == 9 and set(tiles.status) == {"done"}
    assert pyogrio.read_info(out)["layer_metadata"]["tile_size"] == "256"  # GDAL reads it too


def test_dash_o_output(work: Path) -> None:
    r = run_cli("-q", "extract", work / "r.tif", "-o", work / "b.gpkg", *FAST, "--box", "500000,4649744,500128,4649872")
    assert r.returncode == 0, r.stderr
    assert (work / "b.gpkg").exists()


def test_failed_multi_raster_run_leaves_no_part_files(work: Path) -> None:
    bad = truncate(write_like(work / "r.tif", work / "bad.tif", "uint16", tiled=True, blockxsize=256, blockysize=256))
    out = work / "city.gpkg"
    assert_refused(["-q", "extract", work / "r.tif", bad, out, *FAST], work, "bad.tif", output=out)


def test_two_rasters_of_the_same_name_in_two_folders_are_both_kept(work: Path, town: Scene) -> None:
    (work / "x").mkdir()
    (work / "y").mkdir()
    shutil.copy(work / "r.tif", work / "x" / "r.tif")
    write_scene(work / "y" / "r.tif", 256, seed=8)
    out = work / "city.gpkg"
    box = ["--box", "500000,4649872,500128,4650000"]  # the top-left tile of both
    r = run_cli("-q", "extract", work / "x" / "r.tif", work / "y" / "r.tif", out, *FAST, *box, "--layout", "merged")
    assert r.returncode == 0, r.stderr
    df = pyogrio.read_dataframe(out)
    assert df.raster.tolist().count("r.tif") == len(df)
    assert len(df) > 0
    r1 = run_cli("-q", "extract", work / "x" / "r.tif", work / "one.gpkg", *FAST, *box)
    r2 = run_cli("-q", "extract", work / "y" / "r.tif", work / "two.gpkg", *FAST, *box)
    assert r1.returncode == 0 and r2.returncode == 0
    n1, n2 = len(pyogrio.read_dataframe(work / "one.gpkg")), len(pyogrio.read_dataframe(work / "two.gpkg"))
    assert len(df) == n1 + n2
    assert not [p.name for p in work.iterdir() if ".part" in p.name or p.name.endswith(".lock")]


def test_overwrite_of_one_tile_drops_an_interrupted_runs_ledger(work: Path) -> None:
    """--overwrite after an interrupted run: a run of one tile keeps no ledger, and the old one stayed
    behind (exit 0), so the next run without flags was told to --resume a run that had been replaced."""
    from fastsam_geo.ledger import Ledger, ledger_path

    out = work / "o.gpkg"
    Ledger.create(out, {"tile_size": 256}).close()
    one_tile = ["-w", str(WEIGHTS), "--no-cache", "--tta", "1", "--tile-size", "2048", "--gsd", "native"]
    r = run_cli("extract", work / "r.tif", out, *one_tile, "--overwrite")
    assert r.returncode == 0, r.stderr
    assert not ledger_path(out).exists() and sorted(p.name for p in work.iterdir()) == ["o.gpkg", "r.tif"]


def test_resume_after_pixels_changed_in_place_is_refused(work: Path) -> None:
    from fastsam_geo.errors import Cancelled
    from fastsam_geo.pipeline import extract_buildings

    raster, out = work / "raw.tif", work / "b.gpkg"
    write_like(work / "r.tif", raster, "uint8", compress=None)  # uncompressed: in-place writes keep the size
    (work / "r.tif").unlink()
    calls = []
    with pytest.raises(Cancelled):
        extract_buildings(
            raster,
            out,
            weights=WEIGHTS,
            tile_size=256,
            overlap=32,
            tta=1,  # as FAST
            progress=lambda d, t: calls.append(d),
            cancel=lambda: len(calls) >= 3,
        )
    st = raster.stat()
    with rasterio.open(raster, "r+") as ds:  # same path, same size, new pixels
        ds.write(255 - ds.read(window=Window(0, 0, 256, 256)), window=Window(0, 0, 256, 256))
    os.utime(raster, ns=(st.st_atime_ns, st.st_mtime_ns))  # even with the old mtime
    assert raster.stat().st_size == st.st_size
    line = assert_refused(["extract", raster, out, *FAST, "--resume"], work, "raw.tif", "pixels", "--overwrite")
    assert "--resume" in line
    r = run_cli("-q", "extract", raster, out, *FAST, "--overwrite")
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in work.iterdir()) == ["b.gpkg", "raw.tif"]


def test_second_run_on_the_same_output_is_told_at_once(work: Path, town: Scene) -> None:
    big = write_scene(work / "big.tif", 1024, seed=2).raster
    out = work / "b.gpkg"
    first = subprocess.Popen([*FSG, "-q", "extract", big, out, *FAST], env=ENV, stderr=subprocess.PIPE, text=True)
    lock = work / ".b.gpkg.lock"
    deadline = time.time() + 60
    while not lock.exists() and time.time() < deadline:
        time.sleep(0.05)
    assert lock.exists()
    r = run_cli("extract", big, out, *FAST, timeout=60)
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert r.stderr.strip().splitlines() == [
        f"Error: another fastsam-geo run is writing {out} (pid {first.pid}); "
        "wait for it to finish, or stop it (a lock held by a dead process is "
        "released by the system)."
    ]
    assert first.wait(300) == 0, first.stderr.read() if first.stderr else ""
    assert out.exists() and not lock.exists()


def test_unwritable_cache_dir_warns_once_and_goes_on(work: Path) -> None:
    (work / "afile").write_text("x")
    out = work / "b.gpkg"
    args = [
        "extract",
        work / "r.tif",
        out,
        "--tile-size",
        "256",
        "--overlap",
        "32",
        "-w",
        WEIGHTS,
        "--cache-dir",
        work / "afile" / "cache",
    ]
    r = run_cli("-q", *args)
    assert r.returncode == 0, r.stderr
    assert r.stderr.count("mask cache") == 1 and "Traceback" not in r.stderr
    assert out.exists()


def test_text_offline_without_clip_weights_fails_at_once(work: Path) -> None:
    t0 = time.perf_counter()
    assert_refused(["extract", work / "r.tif", work / "b.gpkg", *FAST, "--text", "building"], work, "--clip-weights")
    assert time.perf_counter() - t0 < 30


@pytest.mark.parametrize("size", ["24k", "160k"], ids=["ledger", "geopackage"])
def test_full_disk_is_one_line_and_leaves_nothing(
    work: Path, tmp_path_factory: pytest.TempPathFactory, size: str
) -> None:
    if not IS_ROOT:
        pytest.skip("needs root to mount a small tmpfs (a real full disk)")
    full = tmp_path_factory.mktemp("full")
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(full)], check=True)
    try:
        big = write_scene(work / "big.tif", 1024, seed=5).raster
        assert_refused(
            ["extract", big, full / "b.gpkg", *FAST, "--overlap", "0", "--min-area", "1"],
            work,
            "no space left",
            output=full / "b.gpkg",
        )
        assert list(full.iterdir()) == []
    finally:
        subprocess.run(["umount", str(full)], check=True)


# ================================================================== URLs


@pytest.fixture()
def served(work: Path) -> Iterator[str]:
    handler = lambda *a, **k: RangeHandler(*a, directory=str(work), **k)  # noqa: E731
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_plain_url_is_read_quietly_and_recorded_as_given(work: Path, served: str, tmp_path_factory) -> None:
    out_dir = tmp_path_factory.mktemp("urlout")
    url = f"{served}/r.tif"
    r = run_cli("-q", "extract", url, out_dir / "b.gpkg", *FAST)
    assert r.returncode == 0, r.stderr
    assert r.stderr == ""  # no GDAL warning lines
    from fastsam_geo.output import read_run_tables

    meta, _ = read_run_tables(out_dir / "b.gpkg")
    assert meta["raster"] == url
    r = run_cli("info", url)
    assert r.returncode == 0 and "EPSG:32633" in r.stdout, r.stderr
    r = run_cli("info", f"{served}/missing.tif")
    assert r.returncode == 1 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert "missing.tif" in r.stderr


def test_progress_bar_only_on_a_terminal(work: Path) -> None:
    import pty

    r = run_cli("extract", work / "r.tif", work / "b.gpkg", *FAST)
    assert r.returncode == 0 and "tile/s" not in r.stderr and "\r" not in r.stderr
    import fcntl
    import struct
    import termios

    main, sub = pty.openpty()
    fcntl.ioctl(sub, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 120, 0, 0))  # a terminal 120 columns wide
    p = subprocess.Popen(
        [*FSG, "extract", work / "r.tif", work / "c.gpkg", *FAST], env=ENV, stderr=sub, stdout=subprocess.DEVNULL
    )
    os.close(sub)
    chunks = []
    while True:
        try:
            data = os.read(main, 4096)
        except OSError:
            break
        if not data:
            break
        chunks.append(data)
    assert p.wait(120) == 0
    text = b"".join(chunks).decode(errors="replace")
    assert "9/9" in text and ("tile/s" in text or "s/tile" in text)


# ================================================================== mosaic: each sheet as it is stored
def _sheets(src: Path, folder: Path, *, bgr_second: bool = False, nodata: tuple = (None, None)) -> list[Path]:
    """The raster ``src`` cut into a left and a right sheet; the right one optionally stored B,G,R
    (and saying so in its colour interpretation), each with its own nodata value."""
    from rasterio.enums import ColorInterp

    out = []
    with rasterio.open(src) as ds:
        half = ds.width // 2
        for k in range(2):
            w = Window(half * k, 0, half, ds.height)
            data = ds.read(window=w)
            prof = {**ds.profile, "width": half, "height": ds.height, "transform": ds.window_transform(w)}
            prof.update(photometric=None, nodata=nodata[k])
            path = folder / f"sheet{k}.tif"
            with rasterio.open(path, "w", **prof) as dst:
                if k == 1 and bgr_second:
                    dst.write(data[::-1])
                    dst.colorinterp = [ColorInterp.blue, ColorInterp.green, ColorInterp.red]
                else:
                    dst.write(data)
                    dst.colorinterp = [ColorInterp.red, ColorInterp.green, ColorInterp.blue]
            out.append(path)
    return out


def test_mosaic_reads_a_bgr_sheet_in_its_own_band_order(work: Path) -> None:
    rgb = work / "rgb"
    bgr = work / "bgr"
    rgb.mkdir()
    bgr.mkdir()
    a = _sheets(work / "r.tif", rgb)
    b = _sheets(work / "r.tif", bgr, bgr_second=True)
    for sheets, folder in ((a, rgb), (b, bgr)):
        r = run_cli("-q", "extract", *sheets, folder / "m.gpkg", *FAST, "--mosaic")
        assert r.returncode == 0, r.stderr
    da = pyogrio.read_dataframe(rgb / "m.gpkg")
    db = pyogrio.read_dataframe(bgr / "m.gpkg")
    assert len(da) > 3
    assert len(da) == len(db)
    assert abs(da.area.sum() - db.area.sum()) < 1e-6 * da.area.sum()


@pytest.mark.parametrize("nodata", [(0, 255), (None, 0)], ids=["0-255", "none-0"])
def test_mosaic_of_sheets_with_other_nodata_is_refused(work: Path, nodata: tuple) -> None:
    sheets = _sheets(work / "r.tif", work, nodata=nodata)
    out = work / "m.gpkg"
    line = assert_refused(["extract", *sheets, out, *FAST, "--mosaic"], work, "nodata", "sheet", output=out)
    assert "gdal_edit" in line
    # the other order says the same: never a result that depends on the order of the inputs
    assert_refused(["extract", *sheets[::-1], out, *FAST, "--mosaic"], work, "nodata", output=out)


def test_mosaic_of_sheets_with_alpha_in_one_only_is_refused(work: Path) -> None:
    from rasterio.enums import ColorInterp

    sheets = _sheets(work / "r.tif", work)
    with rasterio.open(sheets[1]) as ds:
        data, prof = ds.read(), ds.profile
    prof.update(count=4)
    with rasterio.open(sheets[1], "w", **prof) as ds:
        ds.write(np.concatenate([data, np.full_like(data[:1], 255)]))
        ds.colorinterp = [ColorInterp.red, ColorInterp.green, ColorInterp.blue, ColorInterp.alpha]
    with rasterio.open(sheets[0]) as ds:
        data, prof = ds.read(), ds.profile
    prof.update(count=4, alpha="UNSPECIFIED", photometric="RGB")  # a 4th band that is not alpha (e.g. NIR)
    with rasterio.open(sheets[0], "w", **prof) as ds:
        ds.write(np.concatenate([data, np.full_like(data[:1], 7)]))
    with rasterio.open(sheets[0]) as ds:
        assert ds.colorinterp[3] == ColorInterp.undefined
    assert_refused(["extract", *sheets, work / "m.gpkg", *FAST, "--mosaic"], work, "alpha", "sheet1.tif")


def test_mosaic_with_a_south_up_sheet_names_the_sheet(work: Path) -> None:
    """A south-up sheet: the error named the mosaic's hidden VRT (`.m.gpkg.mosaic.vrt`: not north-up,
    `gdalwarp .m.gpkg.mosaic.vrt ...`), a file the user never gave and that is gone."""
    from affine import Affine

    sheets = _sheets(work / "r.tif", work)
    with rasterio.open(sheets[1]) as ds:
        data, prof, t = ds.read(), ds.profile, ds.transform
    prof["transform"] = Affine(t.a, 0, t.c, 0, -t.e, t.f + t.e * data.shape[1])
    with rasterio.open(sheets[1], "w", **prof) as ds:
        ds.write(data[:, ::-1])
    line = assert_refused(["extract", *sheets, work / "m.gpkg", *FAST, "--mosaic"], work, "sheet1.tif", "north-up")
    assert "mosaic.vrt" not in line and "gdalwarp" in line, line


def test_several_inputs_give_each_building_once_in_a_file_that_holds_them(work: Path) -> None:
    """Without --mosaic every input is extracted on its own: r.tif and ./r.tif gave every building twice,
    a VRT beside its own sheet too (exit 0 both); several rasters written to .geojson made a GeoPackage
    under that name; sheets that overlap in --layout merged keep their shared buildings twice, unsaid."""
    from fastsam_geo.mosaic import write_vrt

    one = run_cli("-q", "extract", work / "r.tif", work / "one.gpkg", *FAST)
    two = run_cli("extract", work / "r.tif", f"{work}/./r.tif", work / "two.gpkg", *FAST, "--layout", "merged")
    assert one.returncode == 0 and two.returncode == 0, two.stderr
    assert "is " in two.stderr and "read once" in two.stderr, two.stderr
    count = [len(pyogrio.read_dataframe(work / f"{n}.gpkg")) for n in ("one", "two")]
    assert count[0] == count[1] > 0, count
    sheets = _sheets(work / "r.tif", work)
    write_vrt(sheets, work / "all.vrt")
    assert_refused(["extract", work / "all.vrt", sheets[0], work / "v.gpkg", *FAST], work, "also an input", "all.vrt")
    assert_refused(["extract", *sheets, work / "s.geojson", *FAST], work, "one GeoPackage", ".gpkg", "--mosaic")
    with rasterio.open(work / "r.tif") as ds:  # the right sheet again, 40 px wider to the left
        w = Window(ds.width // 2 - 40, 0, ds.width // 2 + 40, ds.height)
        prof = {**ds.profile, "width": int(w.width), "height": ds.height, "transform": ds.window_transform(w)}
        with rasterio.open(work / "wide.tif", "w", **prof) as dst:
            dst.write(ds.read(window=w))
    r = run_cli("extract", sheets[0], work / "wide.tif", work / "m.gpkg", *FAST, "--layout", "merged")
    assert r.returncode == 0 and "overlap" in r.stderr and "--mosaic" in r.stderr, r.stderr


def test_a_mosaic_run_resumes(work: Path) -> None:
    """An interrupted --mosaic run goes on with --resume (the VRT is written again, to the same stamp)."""
    import signal
    import sqlite3

    big = write_scene(work / "big.tif", 1024, seed=5).raster
    sheets = _sheets(big, work)
    out = work / "m.gpkg"
    ledger = work / ".m.gpkg.resume.sqlite"
    p = subprocess.Popen([*FSG, "-q", "extract", *sheets, out, *FAST, "--mosaic"], env=ENV, stderr=subprocess.PIPE)
    done = 0
    deadline = time.monotonic() + 240
    while p.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
        try:
            with contextlib.closing(sqlite3.connect(f"file:{ledger}?mode=ro", uri=True, timeout=1)) as con:
                done = con.execute("SELECT count(*) FROM tiles").fetchone()[0]
        except sqlite3.Error:
            continue
        if done >= 3:
            p.send_signal(signal.SIGINT)
            break
    p.communicate(timeout=120)
    assert done >= 3 and p.returncode == 130, (done, p.returncode)
    assert ledger.exists() and not out.exists()
    r = run_cli("extract", *sheets, out, *FAST, "--mosaic", "--resume")
    assert r.returncode == 0, r.stderr
    assert "resum" in r.stderr.lower(), r.stderr
    full = work / "full.gpkg"
    assert run_cli("-q", "extract", *sheets, full, *FAST, "--mosaic").returncode == 0
    assert len(pyogrio.read_dataframe(out)) == len(pyogrio.read_dataframe(full))
    assert not list(work.glob(".*.vrt"))


# ================================================================== the worker (a real process) and the API
def _worker_session(requests: list[str], timeout: float = 240) -> tuple[list[dict], str, int]:
    proc = subprocess.Popen(
        [*FSG, "worker"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV
    )
    out, err = proc.communicate("\n".join(requests) + "\n", timeout=timeout)
    import json

    return [json.loads(line) for line in out.splitlines()], err, proc.returncode


@pytest.mark.parametrize("rid", ["NaN", "Infinity", "-Infinity", "[1, 2]", '{"a": 1}', "true"])
def test_worker_answers_a_request_with_an_unwritable_id_and_goes_on(rid: str) -> None:
    replies, err, code = _worker_session(
        [f'{{"id": {rid}, "cmd": "hello"}}', '{"id": 2, "cmd": "hello"}', '{"id": 3, "cmd": "shutdown"}']
    )
    assert code == 0, err
    assert "Traceback" not in err, err
    assert replies[0]["id"] is None and replies[0]["type"] == "error", replies
    assert "id" in replies[0]["error"] and "\n" not in replies[0]["error"]
    assert [r["id"] for r in replies[1:]] == [2, 3]
    assert replies[1]["type"] == "result"


@pytest.mark.parametrize(
    "prompts,must",
    [
        ('{"points": [[NaN, NaN]]}', "finite"),
        ('{"points": [[500010.0, Infinity, 1]]}', "finite"),
        ('{"boxes": [[500000, NaN, 500100, 4649900]]}', "finite"),
        ('{"text": "building", "text_threshold": NaN}', "text_threshold"),
        ('{"text": "building", "text_threshold": 7}', "text_threshold"),
        ('{"text": "building", "top_k": 2.5}', "text_top_k"),
    ],
    ids=["nan-point", "inf-point", "nan-box", "nan-threshold", "threshold-7", "top-k-2.5"],
)
def test_worker_refuses_non_finite_prompts_and_writes_nothing(work: Path, prompts: str, must: str) -> None:
    import json

    out = work / "w.gpkg"
    before = snapshot([work])
    params = f'{{"raster": {json.dumps(str(work / "r.tif"))}, "output": {json.dumps(str(out))}, '
    params += f'"weights": {json.dumps(str(WEIGHTS))}, "tile_size": 256, "overlap": 32, "prompts": {prompts}}}'
    replies, err, code = _worker_session(
        [f'{{"id": 1, "cmd": "extract", "params": {params}}}', '{"id": 2, "cmd": "hello"}']
    )
    assert code == 0, err
    first = next(r for r in replies if r["id"] == 1 and r["type"] != "progress")
    assert first["type"] == "error" and must in first["error"], first
    assert "\n" not in first["error"]
    assert any(r["id"] == 2 and r["type"] == "result" for r in replies)
    assert snapshot([work]) == before and not out.exists()


@pytest.mark.parametrize(
    "make",
    [
        lambda: __import__("fastsam_geo.prompts").prompts.PointPrompt(float("nan"), 4649900.0),
        lambda: __import__("fastsam_geo.prompts").prompts.PointPrompt(500010.0, float("-inf")),
        lambda: __import__("fastsam_geo.prompts").prompts.BoxPrompt(500000, 4649800, float("inf"), 4649900),
        lambda: __import__("fastsam_geo.prompts").prompts.PointPrompt("x", 1.0),  # type: ignore[arg-type]
        lambda: __import__("fastsam_geo.prompts").prompts.Prompts(text="building", text_threshold=float("nan")),
        lambda: __import__("fastsam_geo.prompts").prompts.Prompts(text="building", text_threshold=1.5),
        lambda: __import__("fastsam_geo.prompts").prompts.Prompts(text="building", text_top_k=0),
        lambda: __import__("fastsam_geo.prompts").prompts.Prompts(text="building", text_top_k=2.5),
    ],
    ids=["nan-x", "inf-y", "inf-box", "text-x", "nan-threshold", "threshold-1.5", "top-k-0", "top-k-2.5"],
)
def test_api_prompts_refuse_bad_values_where_the_roads_meet(make) -> None:
    from fastsam_geo.errors import PromptError

    with pytest.raises(PromptError) as err:
        make()
    assert "\n" not in str(err.value)


def test_api_nan_point_never_gives_an_empty_result(work: Path) -> None:
    from fastsam_geo.errors import PromptError
    from fastsam_geo.pipeline import extract_buildings
    from fastsam_geo.prompts import PointPrompt, Prompts

    before = snapshot([work])
    with pytest.raises(PromptError, match="finite"):
        extract_buildings(
            work / "r.tif",
            work / "api.gpkg",
            weights=WEIGHTS,
            tile_size=256,
            overlap=32,
            prompts=Prompts(points=[PointPrompt(float("nan"), float("nan"))]),
        )
    assert snapshot([work]) == before


# ================================================================== a matrix per command: vector inputs
@pytest.fixture()
def labels(work: Path, town: Scene) -> dict[str, Path]:
    """Footprint files beside the raster: good, points, empty, elsewhere, bow-ties, several layers."""
    from shapely.geometry import Polygon

    t = town.truth
    out = {"good": work / "truth.gpkg"}
    t.to_file(out["good"], layer="buildings")
    pts = t.copy()
    pts.geometry = t.geometry.centroid
    pts.to_file(work / "points.gpkg")
    out["points"] = work / "points.gpkg"
    t.iloc[:0].to_file(work / "empty.gpkg")
    out["empty"] = work / "empty.gpkg"
    far = t.copy()
    far.geometry = t.geometry.translate(50_000, 0)
    far.to_file(work / "far.gpkg")
    out["far"] = work / "far.gpkg"
    bow = t.copy()
    bow.geometry = [Polygon([(a, b), (c, d), (c, b), (a, d)]) for a, b, c, d in t.geometry.bounds.to_numpy()]
    bow.to_file(work / "bow.gpkg")
    out["bow"] = work / "bow.gpkg"
    t.to_file(work / "layers.gpkg", layer="houses")
    far.to_file(work / "layers.gpkg", layer="sheds")
    out["layers"] = work / "layers.gpkg"
    return out


@pytest.mark.parametrize(
    "kind,must",
    [("points", "no building polygons"), ("empty", "no building polygons"), ("far", "none of the footprints")],
)
def test_train_refuses_labels_it_cannot_learn_from(work: Path, labels: dict[str, Path], kind: str, must: str) -> None:
    out = work / "m.pt"
    assert_refused(
        ["train", work / "r.tif", "--labels", labels[kind], "-o", out, "--epochs", "1"], work, must, output=out
    )
    assert not (work / "train_work").exists()


def test_train_takes_an_empty_layer_beside_others_as_a_raster_without_buildings(
    work: Path, labels: dict[str, Path]
) -> None:
    """make_real.sh trains on Rio chips without a building (empty footprint files) beside the rest."""
    from fastsam_geo.dataset import check_labels

    raster = work / "r.tif"
    assert check_labels([raster, raster], [labels["good"], labels["empty"]]) > 0


@pytest.mark.parametrize(
    "target,extra,must",
    [
        ("r.tif", [], "also an input"),
        ("r.tif", ["--overwrite"], "also an input"),
        ("truth.gpkg", ["--overwrite"], "also an input"),
        ("base.pt", ["--base", "BASE", "--overwrite"], "also an input"),
        ("exists.pt", [], "--overwrite"),
        ("m.onnx", [], ".pt"),
        ("no/such/m.pt", [], "does not exist"),
    ],
    ids=["raster", "raster-overwrite", "labels", "base", "exists", "onnx", "no-folder"],
)
def test_train_output_guard(work: Path, labels: dict[str, Path], target: str, extra: list[str], must: str) -> None:
    shutil.copy(WEIGHTS, work / "base.pt")
    (work / "exists.pt").write_bytes(b"an earlier model")
    extra = [str(work / "base.pt") if e == "BASE" else e for e in extra]
    out = work / target
    args = ["train", work / "r.tif", "--labels", labels["good"], "-o", out, "--epochs", "1", *extra]
    assert_refused(args, work, must, output=out)
    assert not (work / "train_work").exists()


TINY_TRAIN = ["--epochs", "1", "--imgsz", "64", "--batch", "2", "--workers", "0", "--tta", "1"]


def test_train_learns_only_the_rasters_it_is_given(work: Path, labels: dict[str, Path]) -> None:
    """Two runs beside each other share train_work/: the second trained on the first's crops as well
    (120 images scanned, "25 crops" reported). A raster named with "[" lost its validation row and
    its stored threshold (a glob pattern built from its name). Bow-tie footprints were a GEOS traceback."""
    base = ["--base", WEIGHTS]
    first = run_cli("train", work / "r.tif", "--labels", labels["good"], "-o", work / "a.pt", *TINY_TRAIN, *base)
    assert first.returncode == 0, first.stderr
    other = write_scene(work / "o[1].tif", 256, seed=5)
    r = run_cli(
        "train", other.raster, "--labels", work / "o[1]_buildings.gpkg", "-o", work / "b.pt", *TINY_TRAIN, *base
    )
    assert r.returncode == 0, r.stderr
    crops = list((work / "train_work" / "dataset" / "images").rglob("*.png"))
    assert crops and all(p.name.startswith("o[1]_000_") for p in crops), sorted(p.name for p in crops)[:5]
    assert f"({len(crops)} crops" in r.stderr, r.stderr
    assert "\no[1] " in r.stdout, r.stdout  # the raster's row of the validation table
    from fastsam_geo.modelmeta import read_model_meta

    assert read_model_meta(work / "b.pt").get("conf") is not None
    bow = run_cli("train", work / "r.tif", "--labels", labels["bow"], "-o", work / "c.pt", *TINY_TRAIN, *base)
    assert bow.returncode == 0 and "Traceback" not in bow.stderr, bow.stderr
    assert "repaired with make_valid" in bow.stderr, bow.stderr


def test_a_failed_train_leaves_no_work_folder(work: Path, labels: dict[str, Path]) -> None:
    """A raster of nodata only, or footprints too small to learn: refused after the dataset was built,
    which stayed behind (an empty tree, or 251 files)."""
    with rasterio.open(work / "r.tif") as src:
        profile = {**src.profile, "nodata": 0}
        blank = np.zeros((src.count, src.height, src.width), np.uint8)
    with rasterio.open(work / "blank.tif", "w", **profile) as dst:
        dst.write(blank)
    tiny = labels["good"].with_name("tiny.gpkg")
    t = pyogrio.read_dataframe(labels["good"])
    t.geometry = t.geometry.centroid.buffer(0.5)
    t.to_file(tiny)
    args = [*TINY_TRAIN, "--base", WEIGHTS]
    line = assert_refused(["train", work / "blank.tif", "--labels", labels["good"], "-o", work / "m.pt", *args], work)
    assert "blank.tif" in line and "nodata" in line, line
    assert_refused(["train", work / "r.tif", "--labels", tiny, "-o", work / "m.pt", *args], work, "no building")
    assert not (work / "train_work").exists()


def test_overwrite_drops_its_own_staging_files_only(tmp_path: Path) -> None:
    """--overwrite of b[1].gpkg drops the staging files an interrupted run of it left, and not those of
    b1.gpkg, which may be running: the pattern was built from the name, "[1]" matching "1"."""
    from fastsam_geo.sink import preflight

    own, other = tmp_path / ".b[1].gpkg.0a1b2c3d.partial.gpkg", tmp_path / ".b1.gpkg.9e8f7a6b.partial.gpkg"
    journal = own.with_name(own.name + "-journal")  # left by kill -9 during a write: it stayed behind
    for p in (own, other, journal):
        p.write_bytes(b"x")
    preflight(tmp_path / "b[1].gpkg", overwrite=True, resume=False)
    assert not own.exists() and not journal.exists() and other.exists()


def test_train_refuses_a_view_count_extract_does_not_take(work: Path, labels: dict[str, Path]) -> None:
    """--tta is the calibration's view count: a bad one is told before the dataset is built, not after hours."""
    out = work / "m.pt"
    args = ["train", work / "r.tif", "--labels", labels["good"], "-o", out, "--epochs", "1", "--tta", "6"]
    assert_refused(args, work, "--tta 6", "1 (off), 2, 4, 8 or 12", output=out)
    assert not (work / "train_work").exists()


def test_train_refuses_min_crops_without_augment(work: Path, labels: dict[str, Path]) -> None:
    """--min-crops adds sensor copies: without --augment it would do nothing, silently."""
    out = work / "m.pt"
    args = ["train", work / "r.tif", "--labels", labels["good"], "-o", out, "--min-crops", "8"]
    assert_refused(args, work, "--augment", output=out)
    assert not (work / "train_work").exists()


@pytest.mark.parametrize(
    "base,must",
    [("FastSAM-s.pt", ["FastSAM-s.pt", "not found", "YOLO_OFFLINE"]), ("BAD", ["--base", "cannot load it"])],
    ids=["official-name-offline", "not-a-checkpoint"],
)
def test_train_tells_a_base_it_cannot_load(work: Path, labels: dict[str, Path], base: str, must: list[str]) -> None:
    """Both were a traceback (the failed download or the unpickling), after the dataset was built."""
    bad = work / "bad.pt"
    bad.write_bytes(b"not a checkpoint\n")
    out = work / "m.pt"
    args = ["train", work / "r.tif", "--labels", labels["good"], "-o", out, "--epochs", "1"]
    assert_refused([*args, "--base", str(bad) if base == "BAD" else base], work, *must, output=out, cwd=work)
    assert not (work / "train_work").exists()


@pytest.mark.parametrize(
    "extra,must",
    [
        (["--freeze", "23"], ["--freeze 23", "23 layers", "at most 22"]),
        (["--freeze", "-1"], ["--freeze"]),
        (["--lr0", "0"], ["--lr0"]),
        (["--lr0", "2"], ["--lr0"]),
        (["--lr0", "nan"], ["--lr0 nan", "above 0"]),
        (["--min-valid", "nan"], ["--min-valid nan", "above 0"]),
        (["--gsd", "nan"], ["--gsd nan", "above 0"]),
        (["--hours", "nan"], ["--hours nan", "above 0"]),
        (["--hours", "-1"], ["--hours -1", "above 0"]),
        (["--epochs", "0"], ["--epochs 0", "1 or more"]),
        (["--batch", "0"], ["--batch 0", "1 or more"]),
        (["--imgsz", "7"], ["--imgsz 7", "multiple of 32"]),
        (["--imgsz", "100"], ["--imgsz 100", "e.g. 96 or 128"]),
    ],
    ids=["freeze-everything", "freeze-negative", "lr0-zero", "lr0-above-one", "lr0-nan", "min-valid-nan", "gsd-nan",
         "hours-nan", "hours-negative", "epochs-0", "batch-0", "imgsz-7", "imgsz-100"],
)
def test_train_refuses_a_schedule_that_cannot_learn(
    work: Path, labels: dict[str, Path], extra: list[str], must: list[str]
) -> None:
    """--freeze of every layer would train nothing (ultralytics says so only after the dataset is built); NaN
    passed click's ranges (a traceback, or --min-valid nan trained on what it pleased), --hours -1 trained;
    --epochs 0, --batch 0 and --imgsz 7 were ultralytics' tracebacks after the dataset was built."""
    out = work / "m.pt"
    args = ["train", work / "r.tif", "--labels", labels["good"], "-o", out, "--base", WEIGHTS, *extra]
    assert_refused(args, work, *must, output=out)
    assert not (work / "train_work").exists()


@pytest.mark.parametrize(
    "command,extra,must",
    [
        ("train", [], ["2 layers (houses, sheds)", "--labels-layer NAME"]),
        ("train", ["--labels-layer", "nope"], ["no layer 'nope'", "--labels-layer"]),
        ("calibrate", [], ["2 layers (houses, sheds)", "--labels-layer NAME"]),
        ("calibrate", ["--labels-layer", "nope"], ["no layer 'nope'", "--labels-layer"]),
    ],
    ids=["train", "train-no-such-layer", "calibrate", "calibrate-no-such-layer"],
)
def test_labels_of_several_layers_are_never_read_by_their_first(
    work: Path, labels: dict[str, Path], command: str, extra: list[str], must: list[str]
) -> None:
    """A GeoPackage of houses and sheds: `train` read its first layer, silently, and `calibrate`
    pointed to a --truth-layer it does not have; both now name the layers and --labels-layer."""
    out = work / "m.pt"
    if command == "train":
        args = ["train", work / "r.tif", "--labels", labels["layers"], "-o", out, *extra]
    else:
        shutil.copy(WEIGHTS, out)
        args = ["calibrate", out, work / "r.tif", "--labels", labels["layers"], "--write", *extra]
    assert_refused(args, work, *must, output=out)
    assert not (work / "train_work").exists()


def test_labels_layer_picks_the_layer(work: Path, labels: dict[str, Path]) -> None:
    from fastsam_geo.dataset import check_labels

    raster = work / "r.tif"
    houses = check_labels([raster], labels["layers"], labels_layer="houses")
    assert houses == check_labels([raster], labels["good"]) > 0
    with pytest.raises(FastSAMGeoError, match="none of the footprints"):  # the sheds lie 50 km away
        check_labels([raster], labels["layers"], labels_layer="sheds")


def test_train_refuses_a_base_that_is_not_a_model(work: Path, labels: dict[str, Path]) -> None:
    out = work / "m.pt"
    args = ["train", work / "r.tif", "--labels", labels["good"], "-o", out, "--base", labels["good"]]
    assert_refused(args, work, "--base", output=out)


@pytest.mark.parametrize(
    "truth,extra,must",
    [
        ("points", [], "no polygons"),
        ("empty", [], "no footprints"),
        ("layers", [], "--truth-layer"),
        ("layers", ["--truth-layer", "nope"], "nope"),
    ],
    ids=["points", "empty", "layers", "no-such-layer"],
)
def test_evaluate_refuses_truth_it_cannot_score(
    work: Path, labels: dict[str, Path], truth: str, extra: list[str], must: str
) -> None:
    line = assert_refused(["evaluate", labels["good"], labels[truth], *extra], work, must)
    assert labels[truth].name in line


@pytest.mark.parametrize("iou", ["nan", "2", "0"])
def test_evaluate_refuses_an_iou_nothing_can_reach(work: Path, labels: dict[str, Path], iou: str) -> None:
    """--iou 2 (or NaN) matched nothing and printed F1 0.000 with exit 0: a wrong answer, not an error."""
    for args in (["evaluate", labels["good"], labels["good"]], ["evaluate", "--pair", labels["good"], labels["good"],
                                                                 work / "r.tif"]):
        assert_refused([*args, "--iou", iou], work, f"--iou {float(iou)}", "above 0 and at most 1")
    junk = work / "junk.gpkg"  # the value is checked before any footprint is read
    junk.write_text("not a GeoPackage")
    for args in (["evaluate", junk, labels["good"]], ["evaluate", "--pair", junk, labels["good"], work / "r.tif"]):
        assert_refused([*args, "--iou", iou], work, f"--iou {float(iou)}")
    junk.unlink()


def test_evaluate_repairs_invalid_truth_with_one_warning(work: Path, labels: dict[str, Path]) -> None:
    r = run_cli("evaluate", labels["good"], labels["bow"], "--json")
    assert r.returncode == 0, r.stderr
    warn = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(warn) == 1 and "bow.gpkg" in warn[0] and "make_valid" in warn[0], r.stderr
    r = run_cli("evaluate", labels["good"], labels["layers"], "--truth-layer", "houses", "--json")
    assert r.returncode == 0 and '"f1": 1.0' in r.stdout, r.stdout + r.stderr


def test_prompts_file_of_several_layers_is_refused_unless_one_is_named(work: Path, labels: dict[str, Path]) -> None:
    out = work / "p.gpkg"
    line = assert_refused(["extract", work / "r.tif", out, *FAST, "--prompts", labels["layers"]], work, output=out)
    assert "houses" in line and "sheds" in line and "--prompts-layer" in line
    assert_refused(
        ["extract", work / "r.tif", out, *FAST, "--prompts", labels["layers"], "--prompts-layer", "nope"],
        work,
        "nope",
        output=out,
    )
    r = run_cli("-q", "extract", work / "r.tif", out, *FAST, "--prompts", labels["layers"], "--prompts-layer", "houses")
    assert r.returncode == 0, r.stderr
    assert len(pyogrio.read_dataframe(out)) > 0


# ================================================================== export, info, calibrate, sample
@pytest.mark.parametrize(
    "args,must",
    [
        (["--imgsz", "0"], "--imgsz 0"),
        (["--imgsz", "100"], "e.g. 96 or 128"),
        (["--imgsz", "99999"], "--imgsz"),
        (["--opset", "1"], "--opset 1"),
        (["--opset", "99"], "--opset 99"),
        (["--batch", "0"], "--batch"),
    ],
    ids=["imgsz-0", "imgsz-100", "imgsz-huge", "opset-1", "opset-99", "batch-0"],
)
def test_export_refuses_bad_values(work: Path, args: list[str], must: str) -> None:
    out = work / "m.onnx"
    assert_refused(["export", WEIGHTS, out, *args], work, must, output=out)


def test_export_names_the_files_it_was_given(work: Path) -> None:
    onnx = work / "given.onnx"
    onnx.write_text("not a model")
    line = assert_refused(["export", onnx, work / "m.onnx"], work, str(onnx), ".pt", output=work / "m.onnx")
    assert "fastsam-geo-export" not in line
    broken = work / "broken.pt"
    broken.write_text("not a checkpoint")
    line = assert_refused(["export", broken, work / "m.onnx"], work, str(broken), output=work / "m.onnx")
    assert "fastsam-geo-export" not in line
    shutil.copy(WEIGHTS, work / "w.pt")
    assert_refused(["export", work / "w.pt", work / "r.tif"], work, ".onnx")
    (work / "m.onnx").write_bytes(b"keep")
    assert_refused(["export", work / "w.pt", work / "m.onnx"], work, "--overwrite")


@pytest.mark.parametrize("name", ["text.onnx", "text.pt", "r.tif"])
def test_info_on_weights_that_are_not_a_model(work: Path, name: str) -> None:
    if name != "r.tif":
        (work / name).write_text("hello")
    assert_refused(["info", work / "r.tif", "--weights", work / name], work, name)


def test_calibrate_write_checks_the_model_first(work: Path, labels: dict[str, Path]) -> None:
    (work / "text.onnx").write_text("hello")
    args = ["calibrate", work / "text.onnx", work / "r.tif", "--labels", labels["good"], "--write"]
    assert_refused(args, work, "text.onnx")
    args = ["calibrate", WEIGHTS, work / "r.tif", "--labels", labels["points"], "--write"]
    before = sha(WEIGHTS)
    assert_refused(args, work, "points.gpkg")
    assert sha(WEIGHTS) == before


def test_calibrate_refuses_footprints_elsewhere_before_segmenting(work: Path, labels: dict[str, Path]) -> None:
    """Footprints 50 km away: calibrate ran the model over every tile at every threshold, then said no
    threshold finds a building. Now it says so before the model loads."""
    args = ["calibrate", WEIGHTS, work / "r.tif", "--labels", labels["far"], "--tta", "1"]
    line = assert_refused(args, work, "none of the footprints lies on its raster", "r.tif")
    assert "wrong CRS" in line, line


@pytest.mark.parametrize(
    ("extra", "must"),
    [
        (["--tile-size", "7"], ["--tile-size 7", "at least 64 px"]),
        (["--tile-size", "256", "--overlap", "200"], ["--overlap 200", "--tile-size 256"]),
        (["--min-area", "-1"], ["--min-area -1", "0 m² or more"]),
        (["--min-area", "30000"], ["--min-area 30000", "--max-area"]),
        (["--tta", "3"], ["--tta 3", "1 (off), 2, 4, 8 or 12"]),
    ],
    ids=["tile-size", "overlap", "negative-min-area", "min-area-above-max", "tta"],
)
def test_calibrate_refuses_bad_tiling_and_areas_before_working(
    work: Path, labels: dict[str, Path], extra: list[str], must: list[str]
) -> None:
    """calibrate takes extract's tiling and building filter (the best threshold depends on them),
    checked as extract checks them: one line, nothing written, the model untouched."""
    shutil.copy(WEIGHTS, work / "m.pt")
    before = sha(work / "m.pt")
    args = ["calibrate", work / "m.pt", work / "r.tif", "--labels", labels["good"], "--write", *extra]
    assert_refused(args, work, *must)
    assert sha(work / "m.pt") == before


@pytest.mark.skipif(IS_ROOT, reason="root writes read-only files")
def test_calibrate_write_refuses_a_read_only_model_before_working(work: Path, labels: dict[str, Path]) -> None:
    shutil.copy(WEIGHTS, work / "ro.pt")
    (work / "ro.pt").chmod(0o444)
    args = ["calibrate", work / "ro.pt", work / "r.tif", "--labels", labels["good"], "--write"]
    assert_refused(args, work, "read-only")


def test_sample_guards_the_raster_and_its_truth(work: Path) -> None:
    (work / "s_buildings.gpkg").write_bytes(b"an earlier truth")
    assert_refused(["sample", work / "s.tif", "--size", "64"], work, "s_buildings.gpkg", "--overwrite")
    assert_refused(["sample", work / "r.tif", "--size", "64"], work, "r.tif", "--overwrite")
    r = run_cli("sample", work / "s.tif", "--size", "64", "--overwrite")
    assert r.returncode == 0, r.stderr


# ================================================================== an ONNX model with a fixed input size
@pytest.fixture(scope="module")
def onnx128(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The town model exported (for real) with a fixed 128 px input."""
    pytest.importorskip("onnx")
    from fastsam_geo.export import export_onnx

    out = tmp_path_factory.mktemp("onnx") / "town128.onnx"
    meta = export_onnx(WEIGHTS, out, imgsz=128)
    assert meta["imgsz"] == [128, 128]
    return out


def test_fixed_size_onnx_refuses_larger_tiles(work: Path, onnx128: Path) -> None:
    out = work / "b.gpkg"
    args = ["extract", work / "r.tif", out, "-w", onnx128, "--tile-size", "256", "--no-cache"]
    line = assert_refused(args, work, "128", "--tile-size 128", output=out)
    assert "256" in line
    from fastsam_geo.errors import TilingError
    from fastsam_geo.pipeline import extract_buildings

    with pytest.raises(TilingError, match="--tile-size 128"):
        extract_buildings(work / "r.tif", work / "api.gpkg", weights=onnx128, tile_size=256, overlap=32)
    assert not (work / "api.gpkg").exists()
    r = run_cli(
        "-q", "extract", work / "r.tif", out, "-w", onnx128, "--tile-size", "128", "--overlap", "16", "--no-cache"
    )
    assert r.returncode == 0, r.stderr


def test_train_is_one_writer_per_output(work: Path, labels: dict[str, Path]) -> None:
    from fastsam_geo.locks import output_lock

    out = work / "m.pt"
    with output_lock(out):  # another run holds the output
        args = ["train", work / "r.tif", "--labels", labels["good"], "-o", out, "--epochs", "1"]
        r = run_cli(*map(str, args))
    assert r.returncode == 1 and "another fastsam-geo run is writing" in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and not out.exists()
    assert not (work / "train_work").exists()
