# fastsam-geo: `make demo` and `make test` work on a fresh clone (no network beyond PyPI/Debian).
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
LIGHT ?= .venv-light
PY := $(VENV)/bin/python
FSG := $(VENV)/bin/fastsam-geo
export YOLO_OFFLINE := 1
export YOLO_VERBOSE := False

.PHONY: install demo test test-unit test-light test-qgis lint bench plugin-zip samples clean

$(VENV)/.installed: pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# constraints.txt pins torch with the torchvision built against it (from PyPI; runs on the CPU).
	$(PY) -m pip install -q -c constraints.txt -e ".[torch,dask,dev]"
	touch $@

# the light install (pip install fastsam-geo: ONNX Runtime, no torch), to test it next to the full one
$(LIGHT)/.installed: pyproject.toml constraints.txt weights/fastsam-geo-n.onnx weights/fastsam-geo-n.pt $(wildcard fastsam_geo/*.py fastsam_geo/*/*.py)
	test -x $(LIGHT)/bin/python || $(PYTHON) -m venv $(LIGHT)
	$(LIGHT)/bin/python -m pip install -q -c constraints.txt . pytest
	touch $@

install: $(VENV)/.installed

## demo: extract buildings from the sample tile with the default model; prints count, time and F1
demo: install
	$(FSG) extract sample_tiles/town_s7_1024.tif buildings.gpkg --overwrite
	$(FSG) evaluate buildings.gpkg sample_tiles/town_s7_1024_buildings.gpkg --tile-size 1024 --overlap 128 --raster sample_tiles/town_s7_1024.tif

## test: every test (unit, model, real QGIS when it can be installed)
test: install
	bash .ci/install-qgis.sh
	$(PY) -m pytest -q
	$(MAKE) test-light

## test-light: the light install: no torch importable; extract with the bundled .onnx gives the torch install's F1
test-light: install $(LIGHT)/.installed
	$(LIGHT)/bin/python -c "import importlib.util as u, sys; sys.exit('torch importable in $(LIGHT)' if u.find_spec('torch') else 0)"
	$(FSG) -q extract sample_tiles/town_s7_1024.tif $(LIGHT)/torch_ref.gpkg --overwrite --no-cache --engine torch
	ref=$$($(FSG) evaluate $(LIGHT)/torch_ref.gpkg sample_tiles/town_s7_1024_buildings.gpkg --json \
	  | $(PY) -c "import json, sys; print(json.load(sys.stdin)['f1'])") && \
	FASTSAM_GEO_REFERENCE_F1=$$ref $(LIGHT)/bin/pytest -q -p no:cacheprovider tests/test_light.py

## test-qgis: only the real-QGIS tests (QGIS installed from Debian packages when it can be)
test-qgis: install
	bash .ci/install-qgis.sh
	$(PY) -m pytest -q -m qgis tests/qgis

## test-unit: the fast tests (no network model, no QGIS)
test-unit: install
	$(PY) -m pytest -q -m "not model and not qgis"

lint: install
	$(VENV)/bin/ruff check fastsam_geo tests benchmarks qgis_plugin

bench: install
	$(PY) benchmarks/run.py

## plugin-zip: the installable QGIS plugin, dist/fastsam_geo_plugin.zip (top folder fastsam_geo_plugin/), with the
## engine as a wheel inside (engine/fastsam_geo-*.whl, default ONNX model included) for Settings > Set up engine
plugin-zip:
	$(if $(wildcard $(PY)),$(PY),$(PYTHON)) .ci/plugin_zip.py

## samples: re-create sample_tiles/ (seeded; byte-identical pixels)
samples: install
	$(FSG) sample sample_tiles/town_s7_1024.tif --size 1024 --seed 7 --overwrite
	$(FSG) sample sample_tiles/town_s9001_2048.tif --size 2048 --seed 9001 --overwrite

clean:
	rm -rf $(VENV) $(LIGHT) .pytest_cache .ruff_cache buildings.gpkg
