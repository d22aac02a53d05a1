"""The scripts under scripts/ run inside QGIS's own Python (they import qgis): pytest, running in
the engine's venv, must not import them (``--doctest-modules`` would); test_qgis.py runs them."""

collect_ignore = ["scripts"]
