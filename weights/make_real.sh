#!/usr/bin/env bash
# Re-creates weights/fastsam-geo-n.pt, the bundled default model (0.25 m working resolution), and its
# ONNX twin, from ../shared alone:
# - start: ../shared/weights/yolov8n-seg-coco.pt, Ultralytics' COCO-pretrained YOLOv8n-seg (AGPL-3.0;
#   see its README), fine-tuned to one class `building`;
# - data: every real training raster (Banepa, Kampala, the 8 SpaceNet Rio training chips, the 6 Dhaka
#   training tiles) and one synthetic town as a minor part, each training crop with one copy as
#   another sensor sees it (`--augment`: grey, coarser, radiometry; turned by 90 degrees);
# - the `train` ends by storing the confidence threshold it calibrates with `extract` on its training
#   rasters (see the card and `fastsam-geo calibrate`).
# Fixed validation split (never trained on): see weights/prepare_real.py.
set -euo pipefail
cd "$(dirname "$0")/.."
export YOLO_OFFLINE=1 YOLO_VERBOSE=False
FSG=${FSG:-.venv/bin/fastsam-geo}
PY=${PY:-.venv/bin/python}
SHARED=${SHARED:-../shared}
WORK=${WORK:-/tmp/fsg-default}
REAL=${REAL:-/tmp/fsg-real}
HOURS=${HOURS:-1.45}
OUTPUT=${OUTPUT:-weights/fastsam-geo-n.pt}

"$PY" weights/prepare_real.py "$SHARED/data" "$REAL"
mkdir -p "$WORK/scenes"
rasters=(); labels=()
"$FSG" -q sample "$WORK/scenes/town_100.tif" --size 1024 --seed 100 --density 0.65 --overwrite
rasters+=("$WORK/scenes/town_100.tif"); labels+=(--labels "$WORK/scenes/town_100_buildings.gpkg")
for tif in "$REAL"/banepa_train.tif "$REAL"/kampala_train.tif "$REAL"/rio_train_*.tif "$REAL"/dhaka_train_*.tif; do
  rasters+=("$tif"); labels+=(--labels "${tif%.tif}_buildings.gpkg")
done
cp "$SHARED/weights/yolov8n-seg-coco.pt" "$WORK/base-coco-n.pt"
"$FSG" train "${rasters[@]}" "${labels[@]}" -o "$OUTPUT" --overwrite --gsd 0.25 --augment \
  --base "$WORK/base-coco-n.pt" --imgsz 512 --batch 8 --epochs 300 --hours "$HOURS" --seed 0 --workers 2 \
  --work-dir "$WORK/train"
PYTHON="$PY" weights/export_default.sh "$OUTPUT"
