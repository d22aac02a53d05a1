#!/usr/bin/env bash
# Re-creates weights/fastsam-geo-town-n.pt, the project's offline default model.
# Training scenes: seeds 100-115 (1024 x 1024 px, 0.5 m); held-out evaluation uses seed 9001.
set -euo pipefail
cd "$(dirname "$0")/.."
export YOLO_OFFLINE=1
FSG=${FSG:-.venv/bin/fastsam-geo}
WORK=${WORK:-/tmp/fastsam-geo-default}
mkdir -p "$WORK/scenes"
rasters=(); labels=()
for seed in $(seq 100 115); do
  density=$(python3 -c "print(0.45 + 0.05 * ($seed % 8))")
  "$FSG" -q sample "$WORK/scenes/town_$seed.tif" --size 1024 --seed "$seed" --density "$density" --overwrite
  rasters+=("$WORK/scenes/town_$seed.tif"); labels+=(--labels "$WORK/scenes/town_${seed}_buildings.gpkg")
done
"$FSG" train "${rasters[@]}" "${labels[@]}" -o weights/fastsam-geo-town-n.pt --overwrite \
  --base yolov8n-seg.yaml --imgsz 512 --batch 8 --epochs 100 --hours 1.0 --seed 0 --workers 2 \
  --work-dir "$WORK/train"
PYTHON=.venv/bin/python weights/export_default.sh weights/fastsam-geo-town-n.pt  # the .onnx default of the light install
