#!/usr/bin/env bash
# Re-creates weights/fastsam-geo-n.pt, the bundled default model (0.25 m working resolution), and its
# ONNX twin, from ../shared alone, in two stages of the same recipe:
# - stage 1 ($HOURS, seed 0) starts from ../shared/weights/yolov8n-seg-coco.pt, Ultralytics'
#   COCO-pretrained YOLOv8n-seg (AGPL-3.0; see its README), fine-tuned to one class `building`;
# - stage 2 ($HOURS2, seed 1; 0 skips it) continues from stage 1 with a fresh learning-rate schedule
#   (ultralytics' time budget decays it to its end; stage 1's mask mAP50 had flattened at 0.55);
# - data: every real training raster (Banepa, Kampala, the 8 SpaceNet Rio training chips, the 6 Dhaka
#   training tiles) and one synthetic town as a minor part, each training crop with one copy as
#   another sensor sees it (`--augment`: grey, coarser, radiometry; turned by 90 degrees);
# - each `train` ends by storing the confidence threshold it calibrates with `extract` on its training
#   rasters (see the card and `fastsam-geo calibrate`).
# Fixed validation split (never trained on): see weights/prepare_real.py.
# On 2 CPU cores: stage 1 1.3 h (38 epochs, conf 0.18), stage 2 1.4 h (57 epochs, conf 0.30).
set -euo pipefail
cd "$(dirname "$0")/.."
export YOLO_OFFLINE=1 YOLO_VERBOSE=False
FSG=${FSG:-.venv/bin/fastsam-geo}
PY=${PY:-.venv/bin/python}
SHARED=${SHARED:-../shared}
WORK=${WORK:-/tmp/fsg-default}
REAL=${REAL:-/tmp/fsg-real}
HOURS=${HOURS:-1.3}
HOURS2=${HOURS2:-1.4}
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
stage() {  # stage BASE OUT HOURS SEED
  "$FSG" train "${rasters[@]}" "${labels[@]}" -o "$2" --overwrite --gsd 0.25 --augment \
    --base "$1" --imgsz 512 --batch 8 --epochs 300 --hours "$3" --seed "$4" --workers 2 \
    --work-dir "$WORK/train-$(basename "${2%.pt}")"
}
if [ "$(python3 -c "print(float('$HOURS2') > 0)")" = True ]; then
  stage "$WORK/base-coco-n.pt" "$WORK/stage1.pt" "$HOURS" 0
  stage "$WORK/stage1.pt" "$OUTPUT" "$HOURS2" 1
else
  stage "$WORK/base-coco-n.pt" "$OUTPUT" "$HOURS" 0
fi
PYTHON="$PY" weights/export_default.sh "$OUTPUT"
