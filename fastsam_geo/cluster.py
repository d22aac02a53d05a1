"""Tile work on a Dask cluster: a worker plugin keeps the model, workers read their own tiles.

:class:`DaskExecutor` is the executor of :func:`fastsam_geo.run.extract_rasters` for a
``dask.distributed.Client``. At start it checks, on every worker, that ``fastsam_geo``
imports and the weights resolve, and opens the first raster on one worker; then it
registers :class:`ModelPlugin` (the model loaded once per worker and kept), submits the
tiles of every raster together in batches of ``batch_size`` (``retries`` on each, so a
worker that dies only costs its tiles a rerun) and yields results as they complete.
The client ships tile specs (a few hundred bytes), never pixels; results come back as
WKB polygons.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import signal
import threading
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

from fastsam_geo.errors import DependencyError, FastSAMGeoError

try:
    from distributed import WorkerPlugin
except ImportError as exc:  # the light install: Dask is an extra
    raise DependencyError(
        f'Dask is not installed ({exc}); install it with: pip install "fastsam-geo[dask]" (for --workers/--scheduler).'
    ) from None
from fastsam_geo.plan import ExtractOptions, ModelOptions, TilingOptions, open_source
from fastsam_geo.segmenters import (
    CacheOnly,
    ModelLabel,
    ResolvedModel,
    cpu_threads,
    label_of,
    label_of_model,
    make_segmenter,
    with_cache,
)
from fastsam_geo.tilework import TileContext, TileResult, process_tiles, read_tile

if TYPE_CHECKING:
    from fastsam_geo.run import CheckFn, Job
    from fastsam_geo.segment import Segmenter
    from fastsam_geo.tiling import TileSpec

log = logging.getLogger("fastsam_geo")
PLUGIN = "fastsam-geo-model"
CONNECT_TIMEOUT_S = 5
PROBE_TIMEOUT_S = 3.0
SCHEMES = ("tcp", "tls", "ws", "wss", "ucx", "inproc")
DASK_LOGGERS = ("distributed", "tornado", "bokeh")
MAX_TILES_PER_TASK = 8


class ClusterError(FastSAMGeoError, RuntimeError):
    """The Dask cluster cannot run the job: unreachable, a worker without the package or weights..."""


def quiet_dask(verbose: bool) -> int:
    """Dask's, the scheduler's and the dashboard's loggers at ERROR (``verbose``: as Dask sets them);
    returns the level for LocalCluster's ``silence_logs``."""
    level = logging.INFO if verbose else logging.ERROR
    if not verbose:
        for name in DASK_LOGGERS:
            logging.getLogger(name).setLevel(level)
    return level


def check_address(address: str) -> tuple[str, str, int]:
    """``(scheme, host, port)`` of a scheduler address, or one ClusterError saying what is wrong.

    >>> check_address("tcp://10.0.0.5:8786"), check_address("head")
    (('tcp', '10.0.0.5', 8786), ('tcp', 'head', 8786))
    >>> try:
    ...     check_address("tcp://head:notaport")
    ... except ClusterError as e:
    ...     print(str(e)[:80])
    Dask scheduler address 'tcp://head:notaport' is malformed (port 'notaport' is no
    """
    from distributed.comm.addressing import parse_address, parse_host_port

    def bad(why: str) -> ClusterError:
        return ClusterError(
            f"Dask scheduler address {address!r} is malformed ({why}); write it as tcp://HOST:PORT, "
            "e.g. tcp://10.0.0.5:8786."
        )

    try:
        scheme, loc = parse_address(address.strip())
    except (ValueError, TypeError) as exc:
        raise bad(str(exc)) from None
    if scheme not in SCHEMES:
        raise bad(f"unknown protocol {scheme}://, use one of {', '.join(s + '://' for s in SCHEMES[:2])}")
    if scheme in ("ucx", "inproc"):
        return scheme, loc, 0
    port_text = loc.rsplit(":", 1)[1] if ":" in loc and not loc.endswith("]") else "8786"
    try:
        host, port = parse_host_port(loc, 8786)
    except (ValueError, TypeError):
        raise bad(f"port {port_text!r} is not a number") from None
    if not host or any(c.isspace() for c in host) or "/" in host:
        raise bad(f"host {host!r} is not a host name or IP address")
    if not 0 < int(port) < 65536:
        raise bad(f"port {port} is out of range")
    return scheme, host, int(port)


def check_scheme_usable(address: str, scheme: str) -> None:
    """Refuse, before Dask tries (10 s and a traceback), a scheme this process cannot use:
    ``inproc://`` (a scheduler inside this very process), ``tls://`` / ``wss://`` without Dask's
    TLS certificates in its config, ``ucx://`` without ucx-py.

    >>> check_scheme_usable("tcp://head:8786", "tcp")
    >>> try:
    ...     check_scheme_usable("inproc://x", "inproc")
    ... except ClusterError as e:
    ...     print(str(e).split(";")[0])
    Dask scheduler inproc://x: inproc:// names a scheduler inside this same process
    """
    why = ""
    if scheme == "inproc":
        why = "inproc:// names a scheduler inside this same process; give the address a `dask scheduler` prints"
    elif scheme in ("tls", "wss"):
        from distributed.security import Security

        if Security().tls_client_cert is None:
            why = (
                f"{scheme}:// needs Dask's TLS certificates (distributed.comm.tls.ca-file, client.cert and "
                "client.key in the Dask config); set them, or use tcp://"
            )
    elif scheme == "ucx" and importlib.util.find_spec("ucp") is None:
        why = "ucx:// needs ucx-py (pip install ucx-py-cu12), or use tcp://"
    if why:
        raise ClusterError(f"Dask scheduler {address}: {why}.")


def probe_scheduler(address: str, host: str, port: int, timeout_s: float = PROBE_TIMEOUT_S) -> None:
    """A Dask scheduler greets a new connection at once (its handshake); anything else at
    ``host:port`` (an HTTP server, a silent one) is one ClusterError within ``timeout_s`` + 1 s."""
    import socket

    try:
        sock = socket.create_connection((host, port), timeout=CONNECT_TIMEOUT_S)
    except OSError as exc:
        raise ClusterError(
            f"Dask scheduler {address} is unreachable ({type(exc).__name__}: {exc.strerror or exc}, "
            f"waited at most {CONNECT_TIMEOUT_S:g} s); check the address and that `dask scheduler` runs there."
        ) from None
    with sock:
        sock.settimeout(timeout_s)
        try:
            greeting = sock.recv(256)
        except TimeoutError:
            greeting = b""
        except OSError:
            greeting = b""
        if b"compression" in greeting or b"python" in greeting:
            return
        http = False
        if not greeting:
            try:
                sock.settimeout(1.0)
                sock.sendall(b"GET / HTTP/1.0\r\nHost: " + host.encode("ascii", "replace") + b"\r\n\r\n")
                http = sock.recv(16).startswith(b"HTTP/")
            except OSError:
                pass
    if http:
        raise ClusterError(
            f"{address} answers HTTP, not as a Dask scheduler (the dashboard? the scheduler listens on port "
            "8786 by default); give the scheduler's address, as `dask scheduler` prints it."
        )
    what = "said nothing" if not greeting else "answered"
    raise ClusterError(
        f"{address} accepts connections but is not a Dask scheduler ({what} within {timeout_s:g} s); "
        "give the scheduler's address, as `dask scheduler` prints it (tcp://HOST:8786)."
    )


def connect(
    *,
    workers: int | None = None,
    scheduler: str | None = None,
    timeout_s: float = CONNECT_TIMEOUT_S,
    verbose: bool = False,
) -> tuple[Any, Any]:
    """A ``(client, cluster)``: a LocalCluster of ``workers`` processes, or the scheduler at
    ``scheduler`` (``tcp://host:8786``; cluster None). One clear error when unreachable, malformed,
    or not a scheduler. Dask's logs go to ``verbose`` runs only."""
    import distributed

    silence = quiet_dask(verbose)
    if scheduler:
        scheme, host, port = check_address(scheduler)
        check_scheme_usable(scheduler, scheme)
        if scheme == "tcp":
            probe_scheduler(scheduler, host, port)
        try:
            return distributed.Client(scheduler, timeout=f"{timeout_s}s", set_as_default=False), None
        except (OSError, TimeoutError) as exc:
            raise ClusterError(
                f"Dask scheduler {scheduler} is unreachable ({type(exc).__name__} after {timeout_s:g} s); "
                "check the address and that `dask scheduler` runs there."
            ) from None
        except Exception as exc:  # the comm layer refusing the address or its settings
            raise ClusterError(
                f"Dask scheduler {scheduler}: cannot connect ({type(exc).__name__}: {exc}); "
                "check the address and Dask's comm settings, or use tcp://HOST:8786."
            ) from None
    with _workers_ignore_sigint():
        cluster = distributed.LocalCluster(
            n_workers=int(workers or 1),
            threads_per_worker=1,
            processes=True,
            dashboard_address=":0",
            silence_logs=silence,
        )
    try:
        return distributed.Client(cluster, timeout=f"{timeout_s}s", set_as_default=False), cluster
    except BaseException:
        cluster.close()
        raise


@contextlib.contextmanager
def _workers_ignore_sigint() -> Iterator[None]:
    """Worker processes started inside inherit an ignored SIGINT: Ctrl-C in a terminal reaches the
    whole process group, and only the client should handle it (stop, keep the ledger, exit 130)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


# ---------------------------------------------------------------------------------- worker side
def unloaded(scorer: Any) -> Any:
    """What to ship of a text scorer: a :class:`~fastsam_geo.textprompt.ClipScorer` as a fresh one
    with the same settings (no model inside: each worker loads its own), anything else as it is.

    >>> from fastsam_geo.textprompt import ClipScorer
    >>> s = ClipScorer("ViT-S-32-alt", "/models/clip.pt", batch_size=4)
    >>> s._model = object()   # as after load()
    >>> u = unloaded(s)
    >>> u is not s, u.pretrained, u.batch_size, u._model is None, unloaded(None)
    (True, '/models/clip.pt', 4, True, None)
    """
    from fastsam_geo.textprompt import ClipScorer

    if not isinstance(scorer, ClipScorer):
        return scorer
    return ClipScorer(
        scorer.model_name,
        scorer.pretrained,
        device=scorer.device,
        batch_size=scorer.batch_size,
        pad=scorer.pad,
        cache_dir=scorer.cache_dir,
    )


class ModelPlugin(WorkerPlugin):
    """Loads the segmenter (and the CLIP scorer when a text prompt needs it) once per worker.

    ``segmenter``: a segmenter object to ship as is (pickled once per worker), else the
    FastSAM model ``resolved`` (resolved once on the client) is loaded on the worker with
    ``model``'s settings. ``threads``: intra-op threads per worker process, by host (cores of
    the host / worker processes on it), for torch and ONNX Runtime alike; a host not listed
    (a worker that joined later) gets its cores / 1. ``text_scorer``: the client's scorer (its
    settings: model, weights file or tag, batch, padding), else a default
    :class:`~fastsam_geo.textprompt.ClipScorer`; each worker loads its own.
    """

    name = PLUGIN
    idempotent = False

    def __init__(
        self,
        model: ModelOptions,
        resolved: ResolvedModel | None,
        *,
        segmenter: Segmenter | None = None,
        threads: dict[str, int] | None = None,
        cache_dir: str | None = None,
        cache_only: bool = False,
        text: bool = False,
        text_scorer: Any = None,
    ) -> None:
        self.model = model
        self.resolved = resolved
        self.shipped = segmenter
        self.threads = dict(threads or {})
        self.shipped_scorer = unloaded(text_scorer)
        self.cache_dir = cache_dir
        self.cache_only = cache_only
        self.text = text
        self.segmenter: Any = None
        self.text_scorer: Any = None
        self._sources: dict[tuple[str, TilingOptions], Any] = {}
        self._cached: dict[str, Any] = {}

    def setup(self, worker: Any = None) -> None:
        """Ignore Ctrl-C (the client handles it), set this process's share of the cores, load the model."""
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGINT, signal.SIG_IGN)
        host = _host(getattr(worker, "address", "") or "")
        threads = self.threads.get(host) or cpu_threads()
        _set_threads(threads, torch_needed=self.text)
        if self.shipped is not None:
            self.segmenter = self.shipped
        else:
            assert self.resolved is not None
            self.segmenter = make_segmenter(self.model, self.resolved, threads=threads)
        if self.model.batch_size and hasattr(self.segmenter, "batch_size"):
            self.segmenter.batch_size = self.model.batch_size
        if self.text:
            from fastsam_geo.textprompt import ClipScorer

            self.text_scorer = self.shipped_scorer if self.shipped_scorer is not None else ClipScorer()

    def teardown(self, worker: Any = None) -> None:
        """Close the rasters this worker opened."""
        for src in self._sources.values():
            src.close()
        self._sources.clear()

    def source(self, ctx: TileContext) -> Any:
        """The raster of ``ctx``, opened once per worker (global stretch statistics included)."""
        key = (ctx.raster, ctx.tiling)
        if key not in self._sources:
            self._sources[key] = open_source(ctx.raster, ctx.tiling)
        return self._sources[key]

    def segmenter_for(self, ctx: TileContext) -> Any:
        """The segmenter of ``ctx``'s raster (behind the mask cache when there is one)."""
        if self.cache_dir is None:
            return self.segmenter
        if ctx.raster not in self._cached:
            base = self.segmenter
            if self.cache_only:
                assert self.resolved is not None
                base = CacheOnly(
                    ctx.raster, self.resolved, self.model.conf or self.resolved.conf, self.model.iou, self.model.tta
                )
            bands = f"{list(self.source(ctx).info.bands)}|{ctx.tiling.stretch}"
            self._cached[ctx.raster] = with_cache(base, ctx.raster, self.cache_dir, bands)
        return self._cached[ctx.raster]


def _host(address: str) -> str:
    """The host of a worker address.

    >>> _host("tcp://10.0.0.5:40123"), _host("tcp://[::1]:40123"), _host("")
    ('10.0.0.5', '::1', '')
    """
    from distributed.comm.addressing import get_address_host

    try:
        return str(get_address_host(address))
    except (ValueError, TypeError):
        return ""


def _set_threads(n: int, *, torch_needed: bool) -> None:
    """torch's intra-op threads in this process, when torch is loaded or will be (a shipped
    torch segmenter, CLIP); ONNX Runtime gets ``n`` through the segmenter's session options."""
    import importlib.util
    import sys

    if "torch" in sys.modules or (torch_needed and importlib.util.find_spec("torch") is not None):
        import torch

        torch.set_num_threads(max(int(n), 1))


def run_tiles(ctx: TileContext, specs: Sequence[TileSpec]) -> list[TileResult]:
    """The Dask task: read, segment, select and vectorize ``specs`` on this worker."""
    from distributed import get_worker

    plugin: ModelPlugin = get_worker().plugins[PLUGIN]
    src = plugin.source(ctx)
    out: list[TileResult] = []
    tiles = []
    for spec in specs:
        item = read_tile(src, spec, src.info.crs)
        if isinstance(item, TileResult):
            out.append(item)
        else:
            tiles.append(item)
    if tiles:
        out += process_tiles(tiles, plugin.segmenter_for(ctx), ctx, plugin.text_scorer)
    return out


def worker_check(path: str | None, sha256: str | None) -> dict[str, str]:
    """Run on each worker at start: the package imports, the weights the client resolved are there
    (the same file: same sha256); returns the worker's cores (its CPU affinity)."""
    from pathlib import Path

    import fastsam_geo
    from fastsam_geo.errors import WeightsError

    info = {"fastsam_geo": fastsam_geo.__version__, "pid": str(os.getpid()), "cores": str(cpu_threads())}
    if path is not None and sha256 is not None:
        from fastsam_geo.weights import sha256_file

        if not Path(path).is_file():
            raise WeightsError(
                f"model weights {path} not found on this worker; put the same file at the same path on every worker."
            )
        if sha256_file(path) != sha256:
            raise WeightsError(
                f"model weights {path} on this worker differ from the client's (sha256); copy the same file."
            )
    return info


def probe_raster(raster: str, tiling: TilingOptions) -> tuple[int, int]:
    """Open ``raster`` on a worker: its size, or the RasterError a worker would meet."""
    with open_source(raster, tiling) as src:
        return src.info.width, src.info.height


def threads_per_host(workers: dict[str, int]) -> dict[str, int]:
    """Intra-op threads per worker process on each host: its cores // its worker processes.

    ``workers``: worker address -> cores of its host (as :func:`worker_check` reports them).

    >>> threads_per_host({"tcp://10.0.0.5:1": 16, "tcp://10.0.0.5:2": 16, "tcp://10.0.0.6:1": 8})
    {'10.0.0.5': 8, '10.0.0.6': 8}
    >>> threads_per_host({"tcp://127.0.0.1:1": 2, "tcp://127.0.0.1:2": 2, "tcp://127.0.0.1:3": 2})
    {'127.0.0.1': 1}
    """
    hosts: dict[str, list[int]] = {}
    for addr, cores in workers.items():
        hosts.setdefault(_host(addr), []).append(int(cores))
    return {h: max(1, max(c) // len(c)) for h, c in hosts.items()}


def tiles_per_task(n_tiles: int, n_workers: int) -> int:
    """Tiles per Dask task: enough that a task's overhead (scheduling, a round trip, milliseconds)
    is small next to its model time, while every worker still gets at least 16 tasks, so that
    the last task, which one worker finishes while the others wait, is short (with 4 tasks per
    worker, 100 tiles on 2 one-thread CPU workers ended on 8-tile tasks: seconds of one idle core).

    >>> tiles_per_task(9, 2), tiles_per_task(100, 2), tiles_per_task(256, 2), tiles_per_task(10_000, 8)
    (1, 3, 8, 8)
    """
    return max(1, min(MAX_TILES_PER_TASK, n_tiles // max(16 * n_workers, 1)))


# ---------------------------------------------------------------------------------- client side
class DaskExecutor:
    """Runs tile work on the cluster of ``client``; see the module docstring.

    Args:
        client: a ``dask.distributed.Client`` (need not be the default one).
        options: the run's options (model settings, cache).
        segmenter: a segmenter to ship to the workers instead of loading ``model``.
        model: the FastSAM model of the run, resolved once on the client (see
            :func:`fastsam_geo.segmenters.resolve_model`); each worker checks it has the same file.
        text_scorer: the scorer of a text prompt (its settings are shipped; see :func:`unloaded`).
        rasters: checked readable on a worker before anything is submitted.
        retries: reruns of a task whose worker died or failed.
        resources: worker resources each task needs, e.g. ``{"GPU": 1}``.
        check_timeout_s: how long the start-up checks may take.
        tiles: tiles per task (None: :func:`tiles_per_task`).
    """

    timeout_s: float | None = None  # longest wait for the next result (None: no limit; tests set one)

    def __init__(
        self,
        client: Any,
        options: ExtractOptions,
        *,
        segmenter: Segmenter | None = None,
        model: ResolvedModel | None = None,
        text_scorer: Any = None,
        rasters: Sequence[str] = (),
        retries: int = 3,
        resources: dict[str, float] | None = None,
        check_timeout_s: float = 120.0,
        tiles: int | None = None,
    ) -> None:
        if segmenter is None and model is None:
            from fastsam_geo.segmenters import resolve_model

            model = resolve_model(options.model.weights, options.model.engine, options.tiling.tile_size)
        self.client = client
        self.options = options
        self.retries = retries
        self.resources = resources
        self.tiles = tiles
        self.seconds: dict[str, float] = {}
        self._futures: list[Any] = []
        cores = self._check_workers(model if segmenter is None else None, check_timeout_s)
        self.n_workers = len(cores)
        if rasters:
            self._probe(rasters[0], check_timeout_s)
        text = options.select.prompts is not None and bool(options.select.prompts.text)
        out = options.output
        plugin = ModelPlugin(
            options.model,
            model,
            segmenter=segmenter,
            threads=threads_per_host(cores),
            cache_dir=out.cache_dir,
            cache_only=out.cache_only,
            text=text,
            text_scorer=text_scorer,
        )
        client.register_plugin(plugin, name=PLUGIN)
        self.label: ModelLabel = label_of(segmenter) if segmenter is not None else label_of_model(model)  # type: ignore[arg-type]
        log.debug("Dask dashboard: %s", getattr(client, "dashboard_link", "?"))

    def _check_workers(self, model: ResolvedModel | None, timeout_s: float) -> dict[str, int]:
        """Every worker imports fastsam_geo and has the weights, or one error naming the worker;
        returns each worker's cores."""
        workers = self.client.scheduler_info().get("workers", {})
        if not workers:
            raise ClusterError(f"the Dask cluster at {self.client.scheduler.address} has no workers; start some.")
        path, sha = (model.path, model.sha256) if model is not None else (None, None)
        cores: dict[str, int] = {}
        for addr in workers:
            try:
                info = self.client.run(worker_check, path, sha, workers=[addr])[addr]
            except FastSAMGeoError as exc:
                raise ClusterError(f"Dask worker {addr}: {exc}") from None
            except Exception as exc:  # unpickling fastsam_geo's function fails where it is not installed
                raise ClusterError(
                    f"Dask worker {addr} cannot run fastsam_geo ({type(exc).__name__}: {exc}); "
                    "install the package (same version) on every worker."
                ) from None
            cores[addr] = int(info.get("cores", 1))
        return cores

    def _probe(self, raster: str, timeout_s: float) -> None:
        fut = self.client.submit(probe_raster, raster, self.options.tiling, pure=False)
        try:
            fut.result(timeout=timeout_s)
        except FastSAMGeoError as exc:
            raise ClusterError(
                f"the Dask workers cannot read {raster}: {exc} (workers open rasters themselves: "
                "give a path or URL every worker can reach)"
            ) from None

    def submit_all(self, jobs: Sequence[Job]) -> dict[Any, int]:
        """Submit the tiles of every job, interleaved, so all rasters spread over the cluster."""
        size = self.tiles or tiles_per_task(sum(len(j.specs) for j in jobs), self.n_workers)
        per_job = [[job.specs[i : i + size] for i in range(0, len(job.specs), size)] for job in jobs]
        contexts = [job.context for job in jobs]  # a few hundred bytes: travels with each task
        owner: dict[Any, int] = {}
        for k in range(max((len(b) for b in per_job), default=0)):
            for n, batches in enumerate(per_job):
                if k < len(batches):
                    fut = self.client.submit(
                        run_tiles, contexts[n], batches[k], retries=self.retries, resources=self.resources, pure=False
                    )
                    owner[fut] = n
        self._futures = list(owner)
        return owner

    def run(self, jobs: Sequence[Job], check: CheckFn) -> Iterator[tuple[int, TileResult]]:
        """Results as tasks complete; the unfinished futures are cancelled when the run stops early
        (the finished ones are only released)."""
        from distributed import as_completed

        owner = self.submit_all(jobs)
        try:
            # the client's own loop: a client made with set_as_default=False is no default client
            for fut in as_completed(list(owner), loop=self.client.loop, timeout=self.timeout_s):
                check()
                try:
                    results = fut.result()
                except FastSAMGeoError:
                    raise
                except Exception as exc:
                    raise ClusterError(f"a Dask task failed: {type(exc).__name__}: {exc}") from None
                fut.release()
                for r in results:
                    yield owner[fut], r
        finally:
            pending = [f for f in self._futures if not f.done()]
            if pending:
                self.client.cancel(pending, force=True)
            self._futures = []


__all__ = ["ClusterError", "DaskExecutor", "ModelPlugin", "check_address", "connect", "run_tiles"]
