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

import logging
import os
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
from fastsam_geo.tilework import TileContext, TileResult, process_tiles, read_tile

if TYPE_CHECKING:
    from fastsam_geo.run import CheckFn, Job
    from fastsam_geo.segment import Segmenter
    from fastsam_geo.tiling import TileSpec

log = logging.getLogger("fastsam_geo")
PLUGIN = "fastsam-geo-model"
CONNECT_TIMEOUT_S = 5


class ClusterError(FastSAMGeoError, RuntimeError):
    """The Dask cluster cannot run the job: unreachable, a worker without the package or weights..."""


def connect(
    *, workers: int | None = None, scheduler: str | None = None, timeout_s: float = CONNECT_TIMEOUT_S
) -> tuple[Any, Any]:
    """A ``(client, cluster)``: a LocalCluster of ``workers`` processes, or the scheduler at
    ``scheduler`` (``tcp://host:8786``; cluster None). One clear error when unreachable."""
    import distributed

    if scheduler:
        try:
            return distributed.Client(scheduler, timeout=f"{timeout_s}s", set_as_default=False), None
        except (OSError, TimeoutError) as exc:
            raise ClusterError(
                f"Dask scheduler {scheduler} is unreachable ({type(exc).__name__} after {timeout_s:g} s); "
                "check the address and that `dask scheduler` runs there."
            ) from None
    cluster = distributed.LocalCluster(
        n_workers=int(workers or 1), threads_per_worker=1, processes=True, dashboard_address=":0"
    )
    try:
        return distributed.Client(cluster, timeout=f"{timeout_s}s", set_as_default=False), cluster
    except BaseException:
        cluster.close()
        raise


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
    FastSAM model of ``model`` is loaded on the worker from its weights path. ``text_scorer``:
    the client's scorer (its settings: model, weights file or tag, batch, padding), else a
    default :class:`~fastsam_geo.textprompt.ClipScorer`; each worker loads its own.
    """

    name = PLUGIN
    idempotent = False

    def __init__(
        self,
        model: ModelOptions,
        *,
        segmenter: Segmenter | None = None,
        cache_dir: str | None = None,
        cache_only: bool = False,
        text: bool = False,
        text_scorer: Any = None,
    ) -> None:
        self.model = model
        self.shipped = segmenter
        self.shipped_scorer = unloaded(text_scorer)
        self.cache_dir = cache_dir
        self.cache_only = cache_only
        self.text = text
        self.segmenter: Any = None
        self.text_scorer: Any = None
        self._sources: dict[tuple[str, TilingOptions], Any] = {}
        self._cached: dict[str, Any] = {}

    def setup(self, worker: Any = None) -> None:
        """Load the model (once; the worker keeps it)."""
        from fastsam_geo.run import make_segmenter

        self.segmenter = self.shipped if self.shipped is not None else make_segmenter(self.model)
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
            from fastsam_geo.run import CacheOnly, with_cache

            base = self.segmenter
            if self.cache_only:
                base = CacheOnly(ctx.raster, self.model.weights, self.model.conf, self.model.iou)
            bands = f"{list(self.source(ctx).info.bands)}|{ctx.tiling.stretch}"
            self._cached[ctx.raster] = with_cache(base, ctx.raster, self.cache_dir, bands)
        return self._cached[ctx.raster]


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


def worker_check(weights: str | None, shipped: bool) -> dict[str, str]:
    """Run on each worker at start: the package imports, the weights resolve."""
    import fastsam_geo

    info = {"fastsam_geo": fastsam_geo.__version__, "pid": str(os.getpid())}
    if not shipped:
        from fastsam_geo.weights import resolve_weights

        info["weights"] = str(resolve_weights(weights))
    return info


def probe_raster(raster: str, tiling: TilingOptions) -> tuple[int, int]:
    """Open ``raster`` on a worker: its size, or the RasterError a worker would meet."""
    with open_source(raster, tiling) as src:
        return src.info.width, src.info.height


# ---------------------------------------------------------------------------------- client side
class DaskExecutor:
    """Runs tile work on the cluster of ``client``; see the module docstring.

    Args:
        client: a ``dask.distributed.Client``.
        options: the run's options (model, batch size, cache).
        segmenter: a segmenter to ship to the workers instead of loading ``options.model``.
        text_scorer: the scorer of a text prompt (its settings are shipped; see :func:`unloaded`).
        rasters: checked readable on a worker before anything is submitted.
        retries: reruns of a batch whose worker died or failed.
        resources: worker resources each task needs, e.g. ``{"GPU": 1}``.
        check_timeout_s: how long the start-up checks may take.
    """

    timeout_s: float | None = None  # longest wait for the next result (None: no limit; tests set one)

    def __init__(
        self,
        client: Any,
        options: ExtractOptions,
        *,
        segmenter: Segmenter | None = None,
        text_scorer: Any = None,
        rasters: Sequence[str] = (),
        retries: int = 3,
        resources: dict[str, float] | None = None,
        check_timeout_s: float = 120.0,
    ) -> None:
        self.client = client
        self.options = options
        self.retries = retries
        self.resources = resources
        self.seconds: dict[str, float] = {}
        self.batch_size = max(int(options.model.batch_size or 1), 1)
        self._futures: list[Any] = []
        self._check_workers(segmenter is not None, check_timeout_s)
        if rasters:
            self._probe(rasters[0], check_timeout_s)
        text = options.select.prompts is not None and bool(options.select.prompts.text)
        out = options.output
        plugin = ModelPlugin(
            options.model,
            segmenter=segmenter,
            cache_dir=out.cache_dir,
            cache_only=out.cache_only,
            text=text,
            text_scorer=text_scorer,
        )
        client.register_plugin(plugin, name=PLUGIN)
        self.describe = self._describe(segmenter)
        log.info("Dask dashboard: %s", getattr(client, "dashboard_link", "?"))

    def _check_workers(self, shipped: bool, timeout_s: float) -> None:
        """Every worker imports fastsam_geo and finds the weights, or one error naming the worker."""
        workers = self.client.scheduler_info().get("workers", {})
        if not workers:
            raise ClusterError(f"the Dask cluster at {self.client.scheduler.address} has no workers; start some.")
        for addr in workers:
            try:
                self.client.run(worker_check, self.options.model.weights, shipped, workers=[addr])
            except FastSAMGeoError as exc:
                raise ClusterError(f"Dask worker {addr}: {exc}") from None
            except Exception as exc:  # unpickling fastsam_geo's function fails where it is not installed
                raise ClusterError(
                    f"Dask worker {addr} cannot run fastsam_geo ({type(exc).__name__}: {exc}); "
                    "install the package (same version) on every worker."
                ) from None

    def _probe(self, raster: str, timeout_s: float) -> None:
        fut = self.client.submit(probe_raster, raster, self.options.tiling, pure=False)
        try:
            fut.result(timeout=timeout_s)
        except FastSAMGeoError as exc:
            raise ClusterError(
                f"the Dask workers cannot read {raster}: {exc} (workers open rasters themselves: "
                "give a path or URL every worker can reach)"
            ) from None

    def _describe(self, segmenter: Segmenter | None) -> tuple[str | None, str | None, str]:
        from fastsam_geo.run import _weights_of

        if segmenter is not None:
            return _weights_of(segmenter)
        if self.options.output.cache_only:
            return _weights_of_weights(self.options.model.weights, "CacheOnly")
        return _weights_of_weights(self.options.model.weights, "FastSAMSegmenter")

    def submit_all(self, jobs: Sequence[Job]) -> dict[Any, int]:
        """Submit the tiles of every job, interleaved, so all rasters spread over the cluster."""
        per_job = [
            [job.specs[i : i + self.batch_size] for i in range(0, len(job.specs), self.batch_size)] for job in jobs
        ]
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
        """Results as batches complete; futures are cancelled when the run stops early."""
        from distributed import as_completed

        owner = self.submit_all(jobs)
        try:
            for fut in as_completed(list(owner), timeout=self.timeout_s):
                check()
                try:
                    results = fut.result()
                except FastSAMGeoError:
                    raise
                except Exception as exc:
                    raise ClusterError(f"a Dask task failed: {type(exc).__name__}: {exc}") from None
                for r in results:
                    yield owner[fut], r
        finally:
            self.client.cancel(self._futures, force=True)
            self._futures = []


def _weights_of_weights(weights: str | None, name: str) -> tuple[str | None, str | None, str]:
    """(path, sha256, segmenter name) of the weights the workers load (resolved here)."""
    from fastsam_geo.weights import resolve_weights, sha256_file

    try:
        path = resolve_weights(weights)
    except FastSAMGeoError:
        return (weights, None, name)
    return str(path), sha256_file(path), name


__all__ = ["ClusterError", "DaskExecutor", "ModelPlugin", "connect", "run_tiles"]
