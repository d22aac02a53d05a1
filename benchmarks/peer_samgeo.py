"""Runs inside the peer's virtual environment (.venv-peer): segment-geospatial's FastSAM.

Two commands, each printing one JSON line on stdout:

``convert EXPORT.pt OUT.pt``
    Rebuild a YOLOv8-seg network exported by bench_peer.py (yaml + state dict + names) with this
    environment's ultralytics 8.0.x classes, load the same tensors (strict), and save it as an
    8.0-style checkpoint that ``fastsam.FastSAM`` can load.

``run RASTER OUTPUT CONF [--retina]``
    segment-geospatial's documented FastSAM workflow: ``SamGeo(model="FastSAM-s.pt")``,
    ``set_image``, ``everything_prompt(output=mask.tif)``, ``raster_to_vector``. Run it in a
    folder holding ``FastSAM-s.pt`` with ``TORCH_HOME`` pointing there (SamGeo looks the name up
    under ``$TORCH_HOME`` and ultralytics loads it from the working folder).
"""

from __future__ import annotations

import json
import sys
import time


def convert(export: str, out: str) -> None:
    import torch
    from ultralytics.nn.tasks import SegmentationModel

    data = torch.load(export, map_location="cpu", weights_only=True)
    cfg = dict(data["yaml"])
    model = SegmentationModel(cfg, ch=3, nc=int(cfg.get("nc", 1)), verbose=False)
    model.load_state_dict(data["state_dict"], strict=True)  # the same tensors, or an error
    names = {int(k): v for k, v in data["names"].items()}
    model.names = names
    model.args = {"task": "segment", "imgsz": int(data.get("imgsz", 1024))}
    torch.save(
        {
            "model": model.half(),
            "train_args": {"task": "segment", "imgsz": int(data.get("imgsz", 1024))},
            "epoch": -1,
            "date": None,
            "version": "8.0",
        },
        out,
    )
    print(json.dumps({"converted": out, "tensors": len(data["state_dict"])}))


def run(raster: str, output: str, conf: float, retina: bool) -> None:
    t0 = time.perf_counter()
    from fastsam.predict import FastSAMPredictor
    from samgeo.fast_sam import SamGeo

    # FastSAM.predict catches every exception and returns None; note them (behaviour unchanged)
    swallowed: list[str] = []
    call = FastSAMPredictor.__call__

    def noting(self: object, *a: object, **k: object) -> object:
        try:
            return call(self, *a, **k)
        except Exception as e:
            swallowed.append(f"{type(e).__name__}: {' '.join(str(e).split())[:200]}")
            raise

    FastSAMPredictor.__call__ = noting
    sam = SamGeo(model="FastSAM-s.pt")
    t1 = time.perf_counter()
    sam.set_image(raster, device="cpu", retina_masks=retina, imgsz=1024, conf=conf, iou=0.7)
    t2 = time.perf_counter()
    if swallowed:
        sys.exit(f"samgeo's FastSAM.predict returned None after {swallowed[-1]}")
    results = sam.prompt_process.results
    if not results or results[0].masks is None:
        sys.exit("no object found: samgeo's everything_prompt then fails (IndexError in save_masks)")
    sam.everything_prompt(output="mask.tif")
    t3 = time.perf_counter()
    sam.raster_to_vector("mask.tif", output)
    t4 = time.perf_counter()
    print(
        json.dumps(
            {
                "load_s": round(t1 - t0, 3),
                "set_image_s": round(t2 - t1, 3),
                "everything_prompt_s": round(t3 - t2, 3),
                "raster_to_vector_s": round(t4 - t3, 3),
                "masks": int(len(sam.annotations)) if sam.annotations is not None else 0,
            }
        )
    )


def main() -> None:
    args = sys.argv[1:]
    if args[:1] == ["convert"] and len(args) == 3:
        convert(args[1], args[2])
    elif args[:1] == ["run"] and len(args) in (4, 5):
        run(args[1], args[2], float(args[3]), retina="--retina" in args[4:])
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
