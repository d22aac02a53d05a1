"""The plugin zip (``make plugin-zip``) installs into a clean QGIS profile and loads there.

The zip is unpacked into ``<profile>/python/plugins`` of a new, empty profile folder; QGIS is
started on that profile and the plugin is loaded with qgis.utils.loadPlugin/startPlugin. An
installed plugin is not inside the project checkout, so it finds the engine through
``$FASTSAM_GEO_HOME`` (or its settings) -- and says clearly when nothing is found.

Run: QT_QPA_PLATFORM=offscreen /usr/bin/python3 tests/qgis/scripts/check_zip.py dist/fastsam_geo_plugin.zip
"""

from __future__ import annotations

import os
import sys
import tempfile
import zipfile
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from common import PLUGIN_NAME, REPO, RESULT, check, make_iface, run_main
from qgis.core import QgsApplication, QgsSettings
from qgis.PyQt.QtCore import QCoreApplication, QSettings


def main() -> None:
    import qgis.utils

    archive = Path(sys.argv[1] if len(sys.argv) > 1 else REPO / "dist" / "fastsam_geo_plugin.zip")
    with zipfile.ZipFile(archive) as z:
        names = z.namelist()
        tops = {n.split("/")[0] for n in names}
        check("zip has one top folder, the plugin's name", tops == {PLUGIN_NAME}, tops)
        for required in ("__init__.py", "metadata.txt", "icon.png", "plugin.py", "provider.py"):
            check(f"zip holds {required}", f"{PLUGIN_NAME}/{required}" in names)
        check("zip holds no caches", not any("__pycache__" in n or n.endswith(".pyc") for n in names))
        wheels = [n for n in names if n.startswith(f"{PLUGIN_NAME}/engine/fastsam_geo-") and n.endswith(".whl")]
        check("zip holds the engine wheel", len(wheels) == 1, wheels)
        if wheels:
            with zipfile.ZipFile(z.open(wheels[0])) as wheel:
                model = [n for n in wheel.namelist() if n.endswith("share/fastsam-geo/weights/fastsam-geo-n.onnx")]
            check("the engine wheel holds the default ONNX model", len(model) == 1, model)
        check("zip within the plugin repository's 25,000,000 bytes", archive.stat().st_size <= 25_000_000)
        RESULT["zip_bytes"] = archive.stat().st_size
        profile = Path(tempfile.mkdtemp(prefix="fsg-clean-profile-")) / "profiles" / "default"
        plugins = profile / "python" / "plugins"
        plugins.mkdir(parents=True)
        z.extractall(plugins)
    RESULT["zip_files"] = len(names)

    # what QGIS's main() does for a profile: settings in <profile>/QGIS/QGIS3.ini
    QCoreApplication.setOrganizationName("QGIS")
    QCoreApplication.setApplicationName("QGIS3")
    QSettings.setDefaultFormat(QSettings.Format.IniFormat)
    QSettings.setPath(QSettings.Format.IniFormat, QSettings.Scope.UserScope, str(profile))
    app = QgsApplication([], True, str(profile))
    app.initQgis()
    settings_dir = Path(QgsApplication.qgisSettingsDirPath())
    check("QGIS runs on the clean profile", settings_dir.resolve() == profile.resolve(), settings_dir)
    iface = make_iface()
    home_plugins = str(settings_dir / "python" / "plugins")
    qgis.utils.iface = iface
    qgis.utils.plugin_paths = [home_plugins]
    sys.path.insert(0, home_plugins)
    qgis.utils.updateAvailablePlugins()
    check("plugin found in the profile", PLUGIN_NAME in qgis.utils.available_plugins, qgis.utils.available_plugins)
    check("loadPlugin", qgis.utils.loadPlugin(PLUGIN_NAME))
    check("startPlugin", qgis.utils.startPlugin(PLUGIN_NAME))
    module = sys.modules[PLUGIN_NAME]
    check(
        "loaded from the profile, not the checkout",
        Path(module.__file__).resolve().is_relative_to(profile.resolve()),
        module.__file__,
    )
    reg = QgsApplication.processingRegistry()
    check("provider and algorithm registered", reg.algorithmById("fastsam_geo:extract_buildings") is not None)

    from fastsam_geo_plugin import connection, engine
    from fastsam_geo_plugin.utils import KEY_PYTHON, set_setting

    old_path, old_home = os.environ.get("PATH", ""), os.environ.pop("FASTSAM_GEO_HOME", None)
    os.environ["PATH"] = "/usr/bin:/bin"
    try:
        python, report = connection.discover(refresh=True)
        check("installed, nothing configured -> nothing found", python is None, engine.describe_candidates(report))
        try:
            connection.client()
            check("client() without a Python -> WorkerNotFound", False)
        except engine.WorkerNotFound as exc:
            check(
                "client() without a Python -> WorkerNotFound with help", "No Python with fastsam-geo" in str(exc), exc
            )
        os.environ["FASTSAM_GEO_HOME"] = str(REPO)
        python, report = connection.discover(refresh=True)
        check(
            "found through $FASTSAM_GEO_HOME",
            python == str(REPO / ".venv" / "bin" / "python"),
            engine.describe_candidates(report),
        )
        hello = connection.client().start()
        check("the worker answers hello", hello.get("protocol") == 1 and hello.get("version"), hello)
        RESULT["hello"] = {k: hello.get(k) for k in ("version", "python", "default_weights")}
        set_setting(KEY_PYTHON, str(REPO / ".venv" / "bin" / "python"))
        QgsSettings().sync()
        ini = list(profile.rglob("*.ini"))
        check(
            "settings are stored in the profile",
            any("fastsam_geo" in p.read_text(errors="replace") for p in ini),
            [str(p) for p in ini],
        )
    finally:
        os.environ["PATH"] = old_path
        if old_home is not None:
            os.environ["FASTSAM_GEO_HOME"] = old_home

    pid = connection.current().pid if connection.current() else None
    check("unloadPlugin", qgis.utils.unloadPlugin(PLUGIN_NAME))
    check("provider removed", reg.providerById("fastsam_geo") is None)
    gone = True
    if pid:
        try:
            os.kill(pid, 0)
            gone = Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"
        except OSError:
            gone = True
    check("worker stopped on unload", gone, pid)


if __name__ == "__main__":
    run_main(main)
