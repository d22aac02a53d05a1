#!/usr/bin/env bash
# Re-creates weights/fastsam-geo-n.pt, the bundled default model (0.25 m working resolution), and its
# ONNX twin, from ../shared alone, in three stages:
# - stage 1 ($HOURS, seed 0) starts from ../shared/weights/yolov8n-seg-coco.pt, Ultralytics'
#   COCO-pretrained YOLOv8n-seg (AGPL-3.0; see its README), fine-tuned to one class `building`;
# - stage 2 ($HOURS2, seed 1; 0 skips it) continues from stage 1 with a fresh learning-rate schedule
#   (ultralytics' time budget decays it to its end; stage 1's mask mAP50 had flattened at 0.55);
# - stage 3 ($HOURS3, seed 2; 0 skips it) continues from stage 2 with more of the small rasters: crops
#   down to 5 % of pixels with data (`--min-valid 0.05`: the sparse Kampala mosaic gives 8 crops, not 2),
#   at least 8 training images per raster (`--min-crops 8`: more sensor copies of the 256 px Dhaka tiles
#   and the Rio chips), and a smaller synthetic town (768 px, a sixth of the images, not two fifths);
#   stages 1 and 2 ran before --min-valid existed and keep its old value, 0.5; stage 3 keeps its last
#   epoch (`--keep last`: its validation crops were partly stage 2's training crops, and "best" on them
#   was epoch 1);
# - data: every real training raster (Banepa, Kampala, the 8 SpaceNet Rio training chips, the 6 Dhaka
#   training tiles) and one synthetic town as a minor part, each training crop with one copy as
#   another sensor sees it (`--augment`: grey, coarser, radiometry; turned by 90 degrees);
# - each `train` ends by storing the confidence threshold it calibrates with `extract` on its training
#   rasters, here with one view of each tile (`--tta 1`; see the card and `fastsam-geo calibrate`).
# Fixed validation split (never trained on): see weights/prepare_real.py.
# On 2 CPU cores: stage 1 1.3 h (38 epochs, conf 0.18), stage 2 1.4 h (57 epochs, conf 0.30),
# stage 3 2.1 h (76 epochs, last epoch kept, conf 0.25 with the building filter's 8 m² minimum).
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
HOURS3=${HOURS3:-2.1}
OUTPUT=${OUTPUT:-weights/fastsam-geo-n.pt}
DEVICE=${DEVICE:-cpu}  # DEVICE=cuda:0 trains on a GPU: the hours above are budgets, the epochs (300) a cap

"$PY" weights/prepare_real.py "$SHARED/data" "$REAL"
mkdir -p "$WORK/scenes"
rasters=(); labels=()
mkdir -p "$WORK/scenes3"
"$FSG" -q sample "$WORK/scenes/town_100.tif" --size 1024 --seed 100 --density 0.65 --overwrite
"$FSG" -q sample "$WORK/scenes3/town_100.tif" --size 768 --seed 100 --density 0.65 --overwrite
real=(); real_labels=()
for tif in "$REAL"/banepa_train.tif "$REAL"/kampala_train.tif "$REAL"/rio_train_*.tif "$REAL"/dhaka_train_*.tif; do
  real+=("$tif"); real_labels+=(--labels "${tif%.tif}_buildings.gpkg")
done
cp "$SHARED/weights/yolov8n-seg-coco.pt" "$WORK/base-coco-n.pt"
stage() {  # stage BASE OUT HOURS SEED TOWN_DIR TRAIN_FLAGS...
  local town="$5/town_100.tif"
  "$FSG" train "$town" "${real[@]}" --labels "${town%.tif}_buildings.gpkg" "${real_labels[@]}" -o "$2" \
    --overwrite --gsd 0.25 --augment --base "$1" --imgsz 512 --batch 8 --epochs 300 --hours "$3" --seed "$4" \
    --device "$DEVICE" --workers 2 --work-dir "$WORK/train-$(basename "${2%.pt}")" --tta 1 "${@:6}"
}
# --tta 1: the threshold calibrated with one view of each tile, as when this model was made (0.25). Calibrated at
# the default 12 views the same rasters give 0.21, a tie (mean object F1 0.709 against 0.710 at 0.25), and on the
# split 0.21 scores 0.584 / 0.746 against 0.593 / 0.744: the stored 0.25 stays (see the card).
positive() { [ "$(python3 -c "print(float('$1') > 0)")" = True ]; }
old=(--min-valid 0.5)  # stages 1 and 2 ran before --min-valid existed: its old fixed value
if ! positive "$HOURS2"; then
  stage "$WORK/base-coco-n.pt" "$OUTPUT" "$HOURS" 0 "$WORK/scenes" "${old[@]}"
elif ! positive "$HOURS3"; then
  stage "$WORK/base-coco-n.pt" "$WORK/stage1.pt" "$HOURS" 0 "$WORK/scenes" "${old[@]}"
  stage "$WORK/stage1.pt" "$OUTPUT" "$HOURS2" 1 "$WORK/scenes" "${old[@]}"
else
  stage "$WORK/base-coco-n.pt" "$WORK/stage1.pt" "$HOURS" 0 "$WORK/scenes" "${old[@]}"
  stage "$WORK/stage1.pt" "$WORK/stage2.pt" "$HOURS2" 1 "$WORK/scenes" "${old[@]}"
  stage "$WORK/stage2.pt" "$OUTPUT" "$HOURS3" 2 "$WORK/scenes3" --min-valid 0.05 --min-crops 8 --keep last
fi
PYTHON="$PY" weights/export_default.sh "$OUTPUT"
