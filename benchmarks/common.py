"""Shared helpers of the benchmark suite: scenes, checkpoints, timing, subprocess memory, scores.

Nothing here is a test: these helpers measure. Every benchmark module imports this file
(``benchmarks/`` is put on ``sys.path`` by the modules themselves).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import platform
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastsam_geo import weights as fastsam_geo_weights

os.environ.setdefault("YOLO_OFFLINE", "1")
os.environ.setdefault("YOLO_VERBOSE", "False")

REPO = Path(__file__).resolve().parents[1]
BENCH = REPO / "benchmarks"
DEFAULT_WEIGHTS = REPO / "weights" / fastsam_geo_weights.DEFAULT_WEIGHTS
TILE = 1024
OVERLAP = 128


# ---------------------------------------------------------------------- environment
def bench_env(**extra: str) -> dict[str, str]:
    """The environment for subprocesses: offline ultralytics, quiet, plus ``extra``."""
    env = dict(os.environ)
    env.update({"YOLO_OFFLINE": "1", "YOLO_VERBOSE": "False", "PYTHONUNBUFFERED": "1"})
    env.update(extra)
    return env


def _version(module: str) -> str:
    try:
        from importlib.metadata import version

        return version(module)
    except Exception:
        return "not installed"


def machine_info() -> dict[str, Any]:
    """What ran the benchmarks: CPU, cores, memory, OS, Python, library versions, git commit."""
    import psutil

    cpu = platform.processor() or ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = bool(
            subprocess.run(
                ["git", "status", "--porcelain", "--untracked-files=no"],
                cwd=REPO,
                capture_output=True,
                text=True,
                check=True,
            ).stdout.strip()
        )
    except (OSError, subprocess.CalledProcessError):
        commit, dirty = "unknown", False
    try:
        import rasterio

        gdal = rasterio.__gdal_version__
    except Exception:
        gdal = "unknown"
    return {
        "cpu": cpu,
        "logical_cores": os.cpu_count(),
        "physical_cores": psutil.cpu_count(logical=False),
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "load_average_at_start": [round(v, 2) for v in os.getloadavg()],
        "git_commit": commit + ("+uncommitted changes" if dirty else ""),
        "versions": {
            name: _version(name)
            for name in (
                "fastsam-geo",
                "torch",
                "torchvision",
                "ultralytics",
                "numpy",
                "shapely",
                "rasterio",
                "geopandas",
                "pyogrio",
                "opencv-python-headless",
                "open_clip_torch",
            )
        }
        | {"GDAL": gdal},
    }


def gpu_name() -> str | None:
    """The CUDA device's name, or None when torch sees no NVIDIA GPU."""
    import torch

    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else None


# ---------------------------------------------------------------------- timing
def stats(values: Sequence[float]) -> dict[str, Any]:
    """min / median / max of repeated timings, and every value (seconds, rounded)."""
    v = [float(x) for x in values]
    return {
        "min": round(min(v), 4),
        "median": round(statistics.median(v), 4),
        "max": round(max(v), 4),
        "runs": [round(x, 4) for x in v],
    }


def repeat(fn: Callable[[], Any], n: int, warmup: int = 0) -> tuple[list[float], Any]:
    """Seconds of ``n`` calls of ``fn`` after ``warmup`` untimed calls, and the last result."""
    out = None
    for _ in range(warmup):
        out = fn()
    times = []
    for _ in range(n):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return times, out


def log(msg: str) -> None:
    """Progress to stderr (the suite's stdout stays quiet)."""
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------- scenes
def _synthetic_stamp() -> str:
    import fastsam_geo.synthetic as synthetic

    return hashlib.sha256(Path(synthetic.__file__).read_bytes()).hexdigest()[:16]


@dataclass
class SceneFiles:
    """A synthetic scene on disk."""

    raster: Path
    truth: Path
    size: int
    seed: int
    density: float
    buildings: int
    seconds: float  # time to write it (0 when reused)


def scene(data_dir: Path, size: int, seed: int, density: float = 0.7) -> SceneFiles:
    """A seeded synthetic scene (``size`` px square, 0.5 m), written once per data folder.

    Reused when the folder already holds it for the same ``synthetic.py`` (the pixels are a
    pure function of size, seed, density and that file).
    """
    from fastsam_geo.synthetic import write_scene

    folder = data_dir / "scenes"
    folder.mkdir(parents=True, exist_ok=True)
    stem = f"town_{size}_s{seed}_d{round(density * 100)}"
    raster = folder / f"{stem}.tif"
    truth = folder / f"{stem}_buildings.gpkg"
    stamp = folder / f"{stem}.json"
    want = _synthetic_stamp()
    if raster.exists() and truth.exists() and stamp.exists():
        meta = json.loads(stamp.read_text())
        if meta.get("synthetic") == want:
            return SceneFiles(raster, truth, size, seed, density, int(meta["buildings"]), 0.0)
    t = time.perf_counter()
    sc = write_scene(raster, size, seed=seed, density=density, truth_path=truth)
    dt = time.perf_counter() - t
    stamp.write_text(json.dumps({"synthetic": want, "buildings": len(sc.truth), "seconds": dt}))
    log(f"wrote scene {raster.name} ({size} px, {len(sc.truth)} buildings) in {dt:.1f} s")
    return SceneFiles(raster, truth, size, seed, density, len(sc.truth), dt)


# ---------------------------------------------------------------------- checkpoints
def random_fastsam_s(folder: Path, name: str = "FastSAM-s-random.pt") -> Path:
    """A FastSAM-s-architecture checkpoint (yolov8s-seg, one class) with random weights (seed 0).

    Built once per data folder by ``fastsam_geo.testing.random_fastsam_checkpoint``, the builder
    the tests use, so every run times the same network.
    """
    path = folder / name
    if path.exists():
        return path
    from fastsam_geo.testing import random_fastsam_checkpoint

    return random_fastsam_checkpoint(path, seed=0)


def default_weights(explicit: str | None = None) -> Path | None:
    """The model the default-model figures use: ``explicit``, else the project default.

    None when it is missing (or ``explicit`` is ``"random"``): the benchmarks then fall back on a
    random FastSAM-s and say that their figures mean nothing.
    """
    if explicit == "random":
        return None
    if explicit:
        return Path(explicit).resolve()
    return DEFAULT_WEIGHTS if DEFAULT_WEIGHTS.is_file() else None


def arg_parser(doc: str | None, weights_help: str = "weights of the default-model figures") -> argparse.ArgumentParser:
    """The options every benchmark module takes when run.py starts it: --data, --out, --weights, --quick."""
    ap = argparse.ArgumentParser(description=(doc or "").splitlines()[0])
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--weights", default=None, help=weights_help)
    ap.add_argument("--quick", action="store_true")
    return ap


# ---------------------------------------------------------------------- segmenter wrappers
class Recorder:
    """Wraps a segmenter: records each tile's masks by tile id and times the calls."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.recorded: dict[str, Any] = {}
        self.seconds = 0.0
        self.tiles = 0

    def __getattr__(self, name: str) -> Any:  # metadata, weights_path, weights_sha256...
        if name == "inner":
            raise AttributeError(name)
        return getattr(self.inner, name)

    def segment(self, tiles: Sequence[Any]) -> list[Any]:
        t = time.perf_counter()
        out = self.inner.segment(tiles)
        self.seconds += time.perf_counter() - t
        self.tiles += len(tiles)
        for tile, masks in zip(tiles, out, strict=True):
            self.recorded[tile.id] = masks
        return out


# ---------------------------------------------------------------------- subprocess memory
@dataclass
class ProcResult:
    """A measured subprocess: exit status, wall time, peak memory, output."""

    cmd: list[str]
    returncode: int | None
    wall_s: float
    peak_rss_bytes: int  # the kernel's high-water mark of the process (wait4 ru_maxrss)
    peak_tree_rss_bytes: int  # polled every 50 ms: the process and its children together
    stdout: str
    stderr_tail: str
    killed: str | None = None  # why the benchmark stopped it, if it did
    samples: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and self.killed is None

    def as_dict(self) -> dict[str, Any]:
        return {
            "cmd": " ".join(self.cmd),
            "returncode": self.returncode,
            "wall_s": round(self.wall_s, 3),
            "peak_rss_mib": round(self.peak_rss_bytes / 2**20, 1),
            "peak_tree_rss_mib": round(self.peak_tree_rss_bytes / 2**20, 1),
            "killed": self.killed,
            "stderr_tail": self.stderr_tail,
        }


def run_measured(
    cmd: Sequence[str],
    *,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    timeout_s: float = 600.0,
    mem_cap_bytes: int | None = None,
) -> ProcResult:
    """Run ``cmd``; measure wall time and peak RSS; stop it past ``timeout_s`` or ``mem_cap_bytes``.

    Peak RSS comes from two sources: ``os.wait4``'s ``ru_maxrss`` (the kernel's high-water
    mark of that process) and psutil polling of the process tree every 50 ms (which also sees
    children). The memory cap protects the shared machine: a process over it is killed and the
    result says so (``killed``).
    """
    import psutil

    out_chunks: list[bytes] = []
    err_chunks: list[bytes] = []
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        list(cmd), env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL
    )

    def drain(stream: Any, sink: list[bytes]) -> None:
        for chunk in iter(lambda: stream.read1(65536), b""):
            sink.append(chunk)

    readers = [
        threading.Thread(target=drain, args=(proc.stdout, out_chunks), daemon=True),
        threading.Thread(target=drain, args=(proc.stderr, err_chunks), daemon=True),
    ]
    for r in readers:
        r.start()
    peak_tree = 0
    samples = 0
    killed: str | None = None
    stop = threading.Event()

    def poll() -> None:
        nonlocal peak_tree, samples, killed
        try:
            ps = psutil.Process(proc.pid)
        except psutil.Error:
            return
        while not stop.is_set():
            try:
                procs = [ps, *ps.children(recursive=True)]
                rss = 0
                for p in procs:
                    with contextlib.suppress(psutil.Error):
                        rss += p.memory_info().rss
            except psutil.Error:
                break
            samples += 1
            peak_tree = max(peak_tree, rss)
            elapsed = time.perf_counter() - t0
            reason = None
            if mem_cap_bytes is not None and rss > mem_cap_bytes:
                reason = (
                    f"memory: RSS {rss / 2**30:.1f} GiB passed the benchmark's cap of {mem_cap_bytes / 2**30:.1f} GiB"
                )
            elif elapsed > timeout_s:
                reason = f"time: still running after {timeout_s:.0f} s"
            if reason:
                killed = reason
                for p in reversed(procs):
                    with contextlib.suppress(psutil.Error):
                        p.kill()
                break
            stop.wait(0.05)

    poller = threading.Thread(target=poll, daemon=True)
    poller.start()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    stop.set()
    poller.join()
    proc.returncode = os.waitstatus_to_exitcode(status)
    for r in readers:
        r.join(timeout=5)
    stdout = b"".join(out_chunks).decode("utf-8", "replace")
    stderr = b"".join(err_chunks).decode("utf-8", "replace")
    return ProcResult(
        cmd=list(cmd),
        returncode=proc.returncode,
        wall_s=wall,
        peak_rss_bytes=int(usage.ru_maxrss) * 1024,
        peak_tree_rss_bytes=peak_tree,
        stdout=stdout,
        stderr_tail="\n".join(stderr.strip().splitlines()[-12:]),
        killed=killed,
        samples=samples,
    )


def memory_cap(fraction: float = 0.5, most_gib: float = 10.0) -> int:
    """A cap for one measured process: ``fraction`` of the memory available now, at most ``most_gib``."""
    import psutil

    return int(min(psutil.virtual_memory().available * fraction, most_gib * 2**30))


# ---------------------------------------------------------------------- scores
def scores(pred: Path, truth: Path, raster: Path, tile: int = TILE, overlap: int = OVERLAP) -> dict[str, Any]:
    """F1, precision, recall, mean IoU and seam score of ``pred`` against ``truth``.

    The seams are those of fastsam-geo's tile grid over ``raster`` (``tile``/``overlap``), for
    every tool compared: the share of truth buildings crossing them that come out as one polygon.
    """
    import pyogrio

    from fastsam_geo.evaluate import evaluate, seam_lines
    from fastsam_geo.raster import RasterSource
    from fastsam_geo.tiling import TileGrid

    with RasterSource(raster) as src:
        grid = TileGrid(src.info.width, src.info.height, tile, overlap, src.info.transform)
    layers = [name for name, _ in pyogrio.list_layers(pred)]
    frame = pyogrio.read_dataframe(pred, layer="buildings" if "buildings" in layers else layers[0])
    s = evaluate(frame, truth, seams=seam_lines(grid)).as_dict()
    s["predicted"] = int(len(frame))
    return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in s.items()}


# ---------------------------------------------------------------------- fragments
def write_fragment(path: Path, data: dict[str, Any]) -> None:
    """Write one benchmark's results (JSON) for run.py to collect."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, default=str))


@contextlib.contextmanager
def stage(record: dict[str, Any], name: str) -> Iterator[None]:
    """Time a block into ``record['seconds'][name]``."""
    t = time.perf_counter()
    try:
        yield
    finally:
        record.setdefault("seconds", {})[name] = round(time.perf_counter() - t, 3)


def tiles_of(raster: Path, tile: int = TILE, overlap: int = OVERLAP) -> int:
    """Number of tiles fastsam-geo's grid gives ``raster``."""
    from fastsam_geo.raster import RasterSource
    from fastsam_geo.tiling import TileGrid

    with RasterSource(raster) as src:
        return len(TileGrid(src.info.width, src.info.height, tile, overlap, src.info.transform))
