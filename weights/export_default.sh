#!/usr/bin/env bash
# Export the default model to ONNX next to it (the default of the light install, no torch):
#   weights/export_default.sh [MODEL.pt]     (default: weights/fastsam-geo-n.pt, the bundled default)
# writes MODEL.onnx beside MODEL.pt (1024 px, batch 1, float32, onnxslim), replacing an older one.
# Re-run it after retraining the .pt, and commit both files.
set -euo pipefail
cd "$(dirname "$0")/.."
PT="${1:-weights/fastsam-geo-n.pt}"
PY="${PYTHON:-.venv/bin/python}"
export YOLO_OFFLINE=1 YOLO_VERBOSE=False
"$PY" -m fastsam_geo export "$PT" "${PT%.pt}.onnx" --imgsz 1024 --batch 1 --overwrite
