"""Real QGIS (3.22+, ``/usr/bin/python3`` with python3-qgis): the plugin end to end.

Each test runs a script of ``tests/qgis/scripts`` with QGIS's Python in a subprocess (offscreen, or
under Xvfb for the screenshot) and asserts on its exit code and its ``RESULT`` line. They skip,
saying why, only when ``/usr/bin/python3 -c "import qgis.core"`` fails; the engine tests also need
the project's default model (``weights/fastsam-geo-town-n.pt``) and the project's ``.venv``.

Run: ``.venv/bin/pytest -m qgis tests/qgis -v`` (about a minute).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPTS = Path(__file__).resolve().parent / "scripts"
QGIS_PYTHON = os.environ.get("FSG_QGIS_PYTHON", "/usr/bin/python3")
# What QGIS's own Python and Qt must not inherit from this venv's process: its Python paths,
# and the Qt plugin paths that opencv-python (pulled in by ultralytics) sets when cv2 is
# imported (QGIS's Qt would load cv2's xcb plugin and abort).
VENV_ONLY_VARIABLES = ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "QT_QPA_PLATFORM_PLUGIN_PATH", "QT_PLUGIN_PATH")
DEFAULT_WEIGHTS = REPO / "weights" / "fastsam-geo-n.pt"
ENGINE_PYTHON = REPO / ".venv" / "bin" / "python"
SAMPLE = REPO / "sample_tiles" / "town_s7_1024.tif"
WEIGHTS = os.environ.get("FSG_WEIGHTS", "").strip() or None
"""Other weights for the engine tests (default: the engine's default model, which they need)."""

pytestmark = pytest.mark.qgis


def _qgis_missing() -> str | None:
    """Why real QGIS cannot be used here (None when it can)."""
    try:
        r = subprocess.run(
            [QGIS_PYTHON, "-c", "import qgis.core"],
            capture_output=True,
            text=True,
            timeout=120,
            env={
                **{k: v for k, v in os.environ.items() if k not in VENV_ONLY_VARIABLES},
                "QT_QPA_PLATFORM": "offscreen",
            },
        )
    except (OSError, subprocess.SubprocessError) as exc:
        return f"{QGIS_PYTHON} cannot run ({exc}); install QGIS (bash .ci/install-qgis.sh)"
    if r.returncode != 0:
        last = (r.stderr.strip().splitlines() or ["?"])[-1]
        return f'{QGIS_PYTHON} -c "import qgis.core" failed ({last}); install QGIS (bash .ci/install-qgis.sh)'
    return None


@pytest.fixture(scope="session")
def qgis_python() -> str:
    reason = _qgis_missing()
    if reason:
        pytest.skip(reason)
    return QGIS_PYTHON


@pytest.fixture(scope="session")
def engine_ready() -> None:
    """The engine side: the project's venv (found by the plugin next to it) and the default model."""
    if not ENGINE_PYTHON.exists():
        pytest.skip(
            f"{ENGINE_PYTHON} is missing: run 'make install' (the plugin finds the engine in the project .venv)"
        )
    if WEIGHTS:
        if not Path(WEIGHTS).is_file():
            pytest.skip(f"FSG_WEIGHTS={WEIGHTS} does not exist")
    elif not DEFAULT_WEIGHTS.is_file():
        pytest.skip(f"the default model {DEFAULT_WEIGHTS} is missing: run weights/make_real.sh")


@pytest.fixture
def mask_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A mask cache of the test's own: a cache warmed by another test would make the cancel and
    killed-worker runs finish before they can be cancelled or killed."""
    return tmp_path_factory.mktemp("mask-cache")


def run_script(
    script: str, *args: str, env: dict[str, str] | None = None, timeout: float = 300, xvfb: bool = False
) -> dict:
    """Run a QGIS-side script; returns its RESULT dict after asserting it passed."""
    full_env = {
        **os.environ,
        "QT_QPA_PLATFORM": "xcb" if xvfb else "offscreen",
        "YOLO_OFFLINE": "1",
        "PYTHONDONTWRITEBYTECODE": "1",
        **(env or {}),
    }
    for key in VENV_ONLY_VARIABLES:  # QGIS's Python must not see the venv
        full_env.pop(key, None)
    full_env["PATH"] = os.pathsep.join(
        p for p in full_env.get("PATH", "").split(os.pathsep) if not p.startswith(str(REPO / ".venv"))
    )
    cmd = [QGIS_PYTHON, str(SCRIPTS / script), *args]
    if xvfb:
        cmd = ["xvfb-run", "-a", "-s", "-screen 0 1600x1000x24", *cmd]
    with tempfile.TemporaryDirectory(prefix="fsg-qgis-") as tmp:  # what QGIS, Qt and the engine leave there
        full_env["TMPDIR"] = tmp
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=full_env, cwd=REPO)
    out = r.stdout + "\n" + r.stderr
    lines = [line for line in r.stdout.splitlines() if line.startswith("RESULT ")]
    result = json.loads(lines[-1][len("RESULT ") :]) if lines else {}
    failed = [line for line in r.stdout.splitlines() if line.startswith("FAIL ")]
    assert r.returncode == 0 and lines and not result.get("failed"), (
        f"{script} exited {r.returncode}; failed checks: {failed or result.get('failed')}\n--- output tail ---\n"
        + out[-6000:]
    )
    return result


def test_plugin_loads_unloads_registers_and_maps_clicks(qgis_python: str) -> None:
    """classFactory/initGui/unload twice with a QgisInterface mock and a real canvas; provider and
    algorithm registered and removed; discovery of the engine's Python; map-tool clicks on a
    EPSG:32633 canvas and on a EPSG:3857 canvas become prompts in the raster's CRS."""
    result = run_script("check_plugin.py", timeout=180)
    assert result["round_trips"] == 2
    assert result["click_3857_error_m"] < 1.0


def test_plugin_zip_installs_into_a_clean_profile(qgis_python: str, tmp_path: Path) -> None:
    """``make plugin-zip`` builds dist/fastsam_geo_plugin.zip; unpacked into an empty profile it
    loads with qgis.utils.loadPlugin/startPlugin and finds the engine through $FASTSAM_GEO_HOME."""
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    subprocess.run(["make", "-s", "plugin-zip"], cwd=REPO, check=True, capture_output=True, timeout=120)
    archive = REPO / "dist" / "fastsam_geo_plugin.zip"
    with zipfile.ZipFile(archive) as z:
        assert {n.split("/")[0] for n in z.namelist()} == {"fastsam_geo_plugin"}
    result = run_script("check_zip.py", str(archive), timeout=180)
    assert result["zip_files"] >= 10


@pytest.mark.model
def test_processing_and_panel_with_the_model(qgis_python: str, engine_ready: None, mask_cache: Path) -> None:
    """processing.run on the sample tile gives the truth buildings; a Graphical Modeler model runs;
    a point clicked through the map tool (EPSG:32633 and EPSG:3857 canvases) and a drawn box give
    the building under them (IoU > 0.5, answered from the mask cache); cancel stops a 25-tile run;
    a killed worker is reported and restarted."""
    result = run_script("check_engine.py", env={"FASTSAM_GEO_CACHE": str(mask_cache)}, timeout=300)
    assert result["processing_everything"]["f1"] >= 0.8
    for key in ("processing_point_iou", "panel_click_utm_iou", "panel_click_3857_iou", "panel_box_iou"):
        assert result[key] > 0.5, key
    assert result["cancel_s"] < 15
    assert result["processing_tta"]["tta"] == "2" and result["processing_tta"]["f1"] >= 0.8  # TTA: 2 views
    # neither Processing (no CONF) nor the panel ("model's") sets a threshold: the model's stored one applies
    from fastsam_geo.modelmeta import weights_conf

    stored = weights_conf(WEIGHTS or DEFAULT_WEIGHTS)
    assert result["processing_conf"] == pytest.approx(stored) and result["panel_conf"] == pytest.approx(stored)


@pytest.mark.model
def test_qgis_process_runs_the_algorithm(qgis_process_env: dict[str, str], tmp_path: Path) -> None:
    """``qgis_process run fastsam_geo:extract_buildings`` with the plugin installed from its folder."""
    exe, env = "/usr/bin/qgis_process.bin", qgis_process_env
    out = tmp_path / "qp.gpkg"
    r = subprocess.run(
        [exe, "--json", "run", "fastsam_geo:extract_buildings", "--", f"INPUT={SAMPLE}", f"OUTPUT={out}", "DEVICE=cpu"]
        + ([f"WEIGHTS={WEIGHTS}"] if WEIGHTS else []),
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    payload = json.loads(r.stdout[r.stdout.index("{") :])
    assert payload["results"]["BUILDINGS"] > 100, payload["results"]
    assert out.is_file()


@pytest.mark.model
def test_screenshot_under_xvfb(qgis_python: str, engine_ready: None, mask_cache: Path, tmp_path: Path) -> None:
    """The documented screenshot command works (QGIS under Xvfb, panel open, buildings extracted)."""
    if shutil.which("xvfb-run") is None:
        pytest.skip("xvfb-run is not installed")
    png = tmp_path / "qgis_panel.png"
    result = run_script("screenshot.py", str(png), env={"FASTSAM_GEO_CACHE": str(mask_cache)}, xvfb=True, timeout=300)
    assert png.stat().st_size > 50_000
    assert result["size"] == [1600, 1000]
    assert result["buildings"] > 100


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__, "-v"]))


def test_plugin_sets_up_its_own_engine(qgis_python: str) -> None:
    """No engine anywhere: the plugin's SetupEngineTask creates a venv under the QGIS profile from
    this checkout (light: no torch), with progress and cancel, and clear messages without a
    suitable Python or a network; the engine is then found and extracts the sample tile."""
    result = run_script("check_setup.py", timeout=1500)
    assert result["buildings"] > 100 and result["cancel_s"] < 10


def test_qgis_opens_what_vectorio_writes(qgis_python: str, tmp_path: Path) -> None:
    """GeoPackages and GeoJSON written by fastsam_geo.vectorio (no GDAL): QGIS 3.22's GDAL opens
    them without a warning, with their features, fields, CRS (EPSG and custom WKT) and extent."""
    import numpy as np
    import shapely
    from pyproj import CRS

    from fastsam_geo.output import VectorWriter
    from fastsam_geo.vectorio import write_geojson, write_gpkg

    laea = CRS.from_proj4("+proj=laea +lat_0=45.1 +lon_0=15.2 +datum=WGS84 +units=m +no_defs")
    geoms = np.array([shapely.box(500000 + 20 * i, 4649900, 500010 + 20 * i, 4649910 + i) for i in range(4)])
    cols = {"score": np.linspace(0.1, 0.4, 4), "flag": np.arange(4) % 2 == 0, "name": ["a", None, "c", "ü"]}
    extent = [500000.0, 4649900.0, 500070.0, 4649913.0]
    files = []
    with VectorWriter(tmp_path / "w.gpkg", "EPSG:32633") as w:
        w.write(geoms, cols)
        w.commit({"fastsam_geo_metadata": {"tile_size": "256"}, "fastsam_geo_tiles": []})
    fields = ["id", "score", "flag", "name", "area_m2"]
    files.append({"path": str(tmp_path / "w.gpkg"), "authid": "EPSG:32633", "fields": fields})
    for crs, authid in ((laea, ""), (CRS.from_epsg(32633), "EPSG:32633")):
        stem = "custom" if authid == "" else "utm"
        write_gpkg(tmp_path / f"{stem}.gpkg", "buildings", geoms, cols, crs)
        write_geojson(tmp_path / f"{stem}.geojson", "buildings", geoms, cols, crs)
        for suffix in (".gpkg", ".geojson"):
            files.append({"path": str(tmp_path / f"{stem}{suffix}"), "authid": authid, "fields": list(cols)})
    for spec in files:
        spec.update(layer="buildings", count=4, extent=extent, layers=1)
    (tmp_path / "files.json").write_text(json.dumps(files))
    result = run_script("check_vectorio.py", str(tmp_path / "files.json"))
    assert result["gdal_errors"] == [] and result["qgis_warnings"] == [], result


@pytest.mark.model
def test_zip_only_user_sets_up_the_engine_and_runs_qgis_process(qgis_python: str, tmp_path: Path) -> None:
    """The plugin zip alone (copied away from the checkout, a clean profile, no engine on PATH,
    nothing of the checkout importable): Set up engine with the source left empty installs the
    wheel the zip carries (dependencies from the package index; a few minutes the first time,
    pip's cache makes it faster), then ``qgis_process run fastsam_geo:extract_buildings`` on the
    sample tile gives the polygons of the installed engine's CLI."""
    if shutil.which("make") is None or not Path("/usr/bin/qgis_process.bin").exists():
        pytest.skip("make or /usr/bin/qgis_process.bin is missing")
    subprocess.run(["make", "-s", "plugin-zip"], cwd=REPO, check=True, capture_output=True, timeout=600)
    archive = tmp_path / "fastsam_geo_plugin.zip"
    shutil.copyfile(REPO / "dist" / "fastsam_geo_plugin.zip", archive)
    result = run_script("check_zip_engine.py", str(archive), timeout=1800)
    assert result["zip_bytes"] <= 25_000_000  # the QGIS plugin repository's limit
    assert result["buildings"]["qgis_process"] == result["buildings"]["cli"] > 100


@pytest.mark.model
def test_panel_reports_misses_replaces_layers_and_takes_the_layer_crs(
    qgis_python: str, engine_ready: None, mask_cache: Path, tmp_path: Path
) -> None:
    """Through the real dock and map tool: a click that selects nothing is named (where, which
    CRS); a GeoPackage written twice leaves one layer showing the new features; a cancelled run
    leaves no resume ledger; a raster without a CRS is refused with a fitting hint, and runs in
    the CRS set with Layer > Set CRS."""
    import rasterio

    with rasterio.open(SAMPLE) as ds:
        profile, data = ds.profile, ds.read()
    profile.pop("crs", None)
    nocrs = tmp_path / "nocrs.tif"
    with rasterio.open(nocrs, "w", **profile) as out:
        out.write(data)
    result = run_script("check_dock.py", str(nocrs), env={"FASTSAM_GEO_CACHE": str(mask_cache)}, timeout=900)
    assert "selected nothing" in result["nothing_message"]
    assert result["left_after_cancel"] == []


@pytest.fixture
def qgis_process_env(qgis_python: str, engine_ready: None, mask_cache: Path, tmp_path: Path) -> dict[str, str]:
    """An environment for ``/usr/bin/qgis_process.bin`` with the plugin enabled from its folder in a
    clean profile, and TMPDIR a folder of its own (``tmp_path / "tmp"``)."""
    exe = "/usr/bin/qgis_process.bin"
    if not Path(exe).exists():
        pytest.skip(f"{exe} is not installed")
    plugins, home, tmp = tmp_path / "plugins", tmp_path / "home", tmp_path / "tmp"
    for folder in (plugins, home, tmp):
        folder.mkdir()
    (plugins / "fastsam_geo_plugin").symlink_to(REPO / "qgis_plugin", target_is_directory=True)
    home.chmod(0o700)
    env = {
        **os.environ,
        "HOME": str(home),
        "XDG_RUNTIME_DIR": str(home),
        "QGIS_PLUGINPATH": str(plugins),
        "QT_QPA_PLATFORM": "offscreen",
        "YOLO_OFFLINE": "1",
        "FASTSAM_GEO_CACHE": str(mask_cache),
        "TMPDIR": str(tmp),
    }
    for key in VENV_ONLY_VARIABLES:
        env.pop(key, None)
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep) if not p.startswith(str(REPO)))
    r = subprocess.run([exe, "plugins", "enable", "fastsam_geo_plugin"], capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    return env


def _qgis_process(env: dict[str, str], *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """``qgis_process.bin run fastsam_geo:extract_buildings -- ARGS`` (one view, the CPU, the default
    model unless FSG_WEIGHTS)."""
    extra = ["TTA=0"] + ([f"WEIGHTS={WEIGHTS}"] if WEIGHTS and not any(a.startswith("WEIGHTS=") for a in args) else [])
    if not any(a.startswith("DEVICE=") for a in args):
        extra.append("DEVICE=cpu")
    cmd = ["/usr/bin/qgis_process.bin", "run", "fastsam_geo:extract_buildings", "--", *args, *extra]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=cwd, timeout=300)


@pytest.mark.model
def test_qgis_process_refuses_prompt_layers_without_a_usable_prompt(
    qgis_process_env: dict[str, str], tmp_path: Path
) -> None:
    """An empty point layer, points without a geometry, a box of zero height and a point that cannot
    be transformed (latitude 91.5) fail naming the layer, instead of falling back to everything mode."""
    utm = {"type": "name", "properties": {"name": "urn:ogc:def:crs:EPSG::32633"}}
    flat = [[[500100, 4649800], [500150, 4649800], [500100, 4649800]]]
    layers = {
        "p_empty.geojson": ("POINTS", {"crs": utm, "features": []}, "no features with a geometry"),
        "p_null.geojson": (
            "POINTS",
            {"features": [{"type": "Feature", "properties": {"label": 1}, "geometry": None}]},
            "no features with a geometry",
        ),
        "b_flat.geojson": (
            "BOXES",
            {
                "crs": utm,
                "features": [
                    {"type": "Feature", "properties": {}, "geometry": {"type": "Polygon", "coordinates": flat}}
                ],
            },
            "is empty",
        ),
        "p_lat91.geojson": (
            "POINTS",
            {
                "features": [
                    {
                        "type": "Feature",
                        "properties": {"label": 1},
                        "geometry": {"type": "Point", "coordinates": [15.001, 91.5]},
                    }
                ]
            },
            "cannot be transformed",
        ),
    }
    for name, (param, collection, message) in layers.items():
        path = tmp_path / name
        path.write_text(json.dumps({"type": "FeatureCollection", **collection}))
        out = tmp_path / f"out_{name}.gpkg"
        r = _qgis_process(qgis_process_env, f"INPUT={SAMPLE}", f"{param}={path}", f"OUTPUT={out}")
        log = r.stdout + r.stderr
        assert r.returncode != 0 and message in log and str(path) in log, (name, log[-3000:])
        assert "Traceback" not in log and not out.exists(), (name, log[-3000:])


@pytest.mark.model
def test_qgis_process_resolves_relative_paths_and_refuses_overwriting_inputs(
    qgis_process_env: dict[str, str], tmp_path: Path
) -> None:
    """Relative INPUT, OUTPUT and WEIGHTS are read and written in the caller's folder, not the
    worker's (TMPDIR: a planted weights file there is not loaded); an OUTPUT that is also the
    point layer's file is refused and the prompt file is left as it was."""
    work = tmp_path / "wd"
    work.mkdir()
    shutil.copyfile(SAMPLE, work / "s.tif")
    r = _qgis_process(qgis_process_env, "INPUT=s.tif", "OUTPUT=rel.gpkg", cwd=work)
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    assert (work / "rel.gpkg").is_file() and not (tmp_path / "tmp" / "rel.gpkg").exists()
    (tmp_path / "tmp" / "planted.onnx").write_bytes(b"not a model")
    r = _qgis_process(qgis_process_env, "INPUT=s.tif", "OUTPUT=w.gpkg", "WEIGHTS=planted.onnx", cwd=work)
    assert r.returncode != 0 and str(work / "planted.onnx") in r.stdout + r.stderr, (r.stdout + r.stderr)[-3000:]
    points = work / "pc.geojson"
    points.write_text(
        json.dumps(
            {
                "type": "FeatureCollection",
                "crs": {"type": "name", "properties": {"name": "urn:ogc:def:crs:EPSG::32633"}},
                "features": [
                    {
                        "type": "Feature",
                        "properties": {"label": 1},
                        "geometry": {"type": "Point", "coordinates": [500200, 4649700]},
                    }
                ],
            }
        )
    )
    before = points.read_bytes()
    r = _qgis_process(qgis_process_env, "INPUT=s.tif", "POINTS=pc.geojson", f"OUTPUT={points}", cwd=work)
    assert r.returncode != 0 and "is also an input" in r.stdout + r.stderr, (r.stdout + r.stderr)[-3000:]
    assert points.read_bytes() == before


@pytest.mark.model
def test_qgis_process_checks_device_and_output_folder_and_removes_its_temp_folders(
    qgis_process_env: dict[str, str], tmp_path: Path
) -> None:
    """DEVICE is checked as the CLI checks --device; a .shp into a missing folder fails before the
    extraction; a worker error on the way to a .shp leaves no fastsam-geo-processing-* folder."""
    r = _qgis_process(qgis_process_env, f"INPUT={SAMPLE}", f"OUTPUT={tmp_path / 'd.gpkg'}", "DEVICE=;rm")
    assert r.returncode != 0 and "DEVICE ';rm'" in r.stdout + r.stderr, (r.stdout + r.stderr)[-3000:]
    r = _qgis_process(qgis_process_env, f"INPUT={SAMPLE}", f"OUTPUT={tmp_path / 'missing' / 'x.shp'}")
    assert r.returncode != 0 and "does not exist" in r.stdout + r.stderr, (r.stdout + r.stderr)[-3000:]
    assert "Extracting buildings" not in r.stdout + r.stderr
    r = _qgis_process(qgis_process_env, f"INPUT={SAMPLE}", f"OUTPUT={tmp_path / 'x.shp'}", "WEIGHTS=/nonexistent.onnx")
    assert r.returncode != 0, (r.stdout + r.stderr)[-3000:]
    assert list((tmp_path / "tmp").glob("fastsam-geo-processing-*")) == []


@pytest.mark.model
def test_processing_takes_the_layer_crs_and_vsizip_rasters(
    qgis_python: str, engine_ready: None, mask_cache: Path
) -> None:
    """A raster layer whose CRS was set in QGIS over the file's is read in the layer's CRS (the
    output too); a ``/vsizip/`` raster keeps its prefix."""
    run_script("check_provider_layers.py", env={"FASTSAM_GEO_CACHE": str(mask_cache)}, timeout=300)
