#!/usr/bin/env bash
# Re-creates weights/fastsam-geo-n.pt, the bundled default model (real + synthetic, 0.25 m),
# and its ONNX twin. Each `train` ends by storing the confidence threshold it calibrates with `extract`
# on its training rasters (see the card and `fastsam-geo calibrate`). Needs ../shared/data (the real sets; see their READMEs) and the .venv.
# Starting point: weights/fastsam-geo-town-n.pt (the synthetic-only model of the first release).
# Fixed validation split (never trained on): see weights/prepare_real.py.
set -euo pipefail
cd "$(dirname "$0")/.."
export YOLO_OFFLINE=1 YOLO_VERBOSE=False
FSG=${FSG:-.venv/bin/fastsam-geo}
PY=${PY:-.venv/bin/python}
SHARED=${SHARED:-../shared/data}
WORK=${WORK:-/tmp/fsg-default}
REAL=${REAL:-/tmp/fsg-real}
HOURS1=${HOURS1:-1.15}
HOURS2=${HOURS2:-0.5}
HOURS3=${HOURS3:-1.75}
HOURS4=${HOURS4:-1.2}

"$PY" weights/prepare_real.py "$SHARED" "$REAL"
mkdir -p "$WORK/scenes"
rasters=(); labels=()
for seed in 100 101 102; do
  density=$(python3 -c "print(0.45 + 0.05 * ($seed % 8))")
  "$FSG" -q sample "$WORK/scenes/town_$seed.tif" --size 1024 --seed "$seed" --density "$density" --overwrite
  rasters+=("$WORK/scenes/town_$seed.tif"); labels+=(--labels "$WORK/scenes/town_${seed}_buildings.gpkg")
done
for r in banepa_train kampala_train rio_train_img50 rio_train_img51 rio_train_img52 rio_train_img53 \
         rio_train_img55 rio_train_img57 rio_train_img58 rio_train_img59; do
  rasters+=("$REAL/$r.tif"); labels+=(--labels "$REAL/${r}_buildings.gpkg")
done
cp weights/fastsam-geo-town-n.pt "$WORK/base-town-n.pt"
# stage 1: from the synthetic model, on real + synthetic crops read at 0.25 m
"$FSG" train "${rasters[@]}" "${labels[@]}" -o "$WORK/fastsam-geo-n.pt" --gsd 0.25 \
  --base "$WORK/base-town-n.pt" --imgsz 512 --batch 8 --epochs 300 --hours "$HOURS1" --seed 0 --workers 2 \
  --work-dir "$WORK/train"
# stage 2: the same data again from stage 1's best weights (a fresh learning-rate schedule)
"$FSG" train "${rasters[@]}" "${labels[@]}" -o "$WORK/stage2.pt" --gsd 0.25 \
  --base "$WORK/fastsam-geo-n.pt" --imgsz 512 --batch 8 --epochs 300 --hours "$HOURS2" --seed 1 --workers 2 \
  --work-dir "$WORK/train2"
# stage 3: once more from stage 2's best weights
"$FSG" train "${rasters[@]}" "${labels[@]}" -o "$WORK/stage3.pt" --gsd 0.25 \
  --base "$WORK/stage2.pt" --imgsz 512 --batch 8 --epochs 300 --hours "$HOURS3" --seed 2 --workers 2 \
  --work-dir "$WORK/train3"
# stage 4: and once more from stage 3's best weights
"$FSG" train "${rasters[@]}" "${labels[@]}" -o weights/fastsam-geo-n.pt --gsd 0.25 \
  --base "$WORK/stage3.pt" --imgsz 512 --batch 8 --epochs 300 --hours "$HOURS4" --seed 3 --workers 2 \
  --work-dir "$WORK/train4"
PYTHON="$PY" weights/export_default.sh weights/fastsam-geo-n.pt
