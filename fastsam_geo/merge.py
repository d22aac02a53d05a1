"""Merge per-tile polygons across tile seams, streaming, in O(N log N).

The rule, in one sentence: two pieces from different tiles are the same object when
they agree *inside the region both tiles saw* (the intersection of their windows): IoU
of the two pieces clipped to that region >= ``match_iou``, or one lies inside the other
there (intersection over the smaller >= ``match_ios``: two buildings cannot overlap, so
a piece inside another is a part of it, e.g. one roof half segmented in a tile that
cut the building). Inside that region both tiles looked at the same pixels, so

- an object cut by a seam gives two truncated pieces that agree there: they are joined
  (union) into one polygon (``seam_merged``);
- an object seen whole by two tiles (in their overlap) gives two complete copies that
  agree there: one is kept, the copy from the tile whose core owns the object (then the
  higher score). Measured on the held-out scene (tile 512), this ownership rule gave
  F1 0.955 against 0.951 for "highest score first".

Memory stays flat in the raster's size: a piece that lies inside one tile's window only
(the vast majority) is final at once; the others wait in a small pending pool until
every tile that could hold more of them has been processed, then leave as final.
Candidate pairs come from bulk ``shapely.STRtree`` queries; the per-pair work is
vectorised shapely array functions.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import shapely

from fastsam_geo.tiling import TileGrid


@dataclass
class MergedObjects:
    """Final objects leaving the merger, as aligned arrays."""

    geoms: np.ndarray
    scores: np.ndarray
    tile_ids: list[str]
    seam_merged: np.ndarray
    pieces: np.ndarray
    attrs: dict[str, list[object]] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.geoms)

    @classmethod
    def empty(cls) -> MergedObjects:
        """No objects."""
        return cls(np.empty(0, object), np.zeros(0, np.float32), [], np.zeros(0, bool), np.zeros(0, np.int64))

    @classmethod
    def concatenate(cls, parts: list[MergedObjects]) -> MergedObjects:
        """Join several batches (attributes present in every batch are kept)."""
        parts = [p for p in parts if len(p)]
        if not parts:
            return cls.empty()
        keys = set.intersection(*(set(p.attrs) for p in parts))
        return cls(
            np.concatenate([p.geoms for p in parts]),
            np.concatenate([p.scores for p in parts]),
            [t for p in parts for t in p.tile_ids],
            np.concatenate([p.seam_merged for p in parts]),
            np.concatenate([p.pieces for p in parts]),
            {k: [v for p in parts for v in p.attrs[k]] for k in sorted(keys)},
        )


class TileMerger:
    """Streaming seam merge over the tiles of a :class:`~fastsam_geo.tiling.TileGrid`.

    Call :meth:`add` once per processed tile (any order) and :meth:`skip` for tiles with
    nothing to process; each call returns the objects that became final. :meth:`flush`
    returns whatever is still pending (at the end of a run).

    Args:
        grid: the tile grid (with the raster's transform: geometries are in map units).
        match_iou: IoU, inside the common region of two tile windows, from which two
            pieces are the same object.
        match_ios: intersection over the smaller piece, in that region, from which two
            pieces are the same object (a part inside the whole). On the held-out scene
            at tile 512 it raised the seam score from 0.935 to 0.968 and F1 from 0.955 to 0.960.
        edge_tolerance: distance in pixels from a window edge under which a piece counts
            as cut by that edge.

    >>> from affine import Affine
    >>> grid = TileGrid(200, 100, tile_size=128, overlap=56, transform=Affine(1, 0, 0, 0, -1, 0))
    >>> m = TileMerger(grid)
    >>> out0 = m.add(0, np.array([shapely.box(100, -60, 128, -40)]), np.array([0.9]))
    >>> out1 = m.add(1, np.array([shapely.box(72, -60, 140, -40)]), np.array([0.8]))
    >>> len(out0), len(out1), out1.geoms[0].bounds, bool(out1.seam_merged[0])
    (0, 1, (72.0, -60.0, 140.0, -40.0), True)
    """

    def __init__(
        self, grid: TileGrid, *, match_iou: float = 0.5, match_ios: float = 0.8, edge_tolerance: float = 0.5
    ) -> None:
        self.grid = grid
        self.match_iou = float(match_iou)
        self.match_ios = float(match_ios)
        t = grid.transform
        self._tol = edge_tolerance
        self._a, self._c, self._e, self._f = t.a, t.c, t.e, t.f
        self.done = np.zeros(len(grid), dtype=bool)
        # Pending pool, keyed by fragment id.
        self._geom: dict[int, object] = {}
        self._score: dict[int, float] = {}
        self._tile: dict[int, int] = {}
        self._complete: dict[int, bool] = {}
        self._needs: dict[int, np.ndarray] = {}
        self._attrs: dict[int, dict[str, object]] = {}
        # (tile index, position in the tile): the order-free identity of a piece. Fragment
        # ids follow arrival order, so every choice and every union goes by this key instead.
        self._key: dict[int, tuple[int, int]] = {}
        self._parent: dict[int, int] = {}
        self._members: dict[int, list[int]] = {}
        self._by_tile: dict[int, set[int]] = defaultdict(set)
        self._next_id = 0
        self._window_box: dict[int, object] = {}
        self._core_box: dict[int, object] = {}
        self._common: dict[tuple[int, int], object] = {}
        self._ids: dict[int, str] = {}
        self.pairs_tested = 0

    # ------------------------------------------------------------------ geometry helpers
    @property
    def pending(self) -> int:
        """Number of pieces waiting for a neighbouring tile."""
        return len(self._geom)

    def _common_box(self, a: int, b: int) -> object:
        """The region both tiles saw: the intersection of their windows (cached per pair)."""
        key = (a, b) if a < b else (b, a)
        box = self._common.get(key)
        if box is None:
            box = shapely.intersection(self._win_box(a), self._win_box(b))
            self._common[key] = box
        return box

    def _tile_id(self, index: int) -> str:
        tid = self._ids.get(index)
        if tid is None:
            tid = self._ids[index] = self.grid[index].id
        return tid

    def _win_box(self, index: int) -> object:
        box = self._window_box.get(index)
        if box is None:
            box = shapely.box(*self.grid.window_bounds(index))
            self._window_box[index] = box
        return box

    def _pixel_bounds(self, geoms: np.ndarray) -> np.ndarray:
        """``N x 4`` (col0, row0, col1, row1) pixel bounds of geometries."""
        b = shapely.bounds(geoms)
        cols = (b[:, [0, 2]] - self._c) / self._a
        rows = (b[:, [3, 1]] - self._f) / self._e
        return np.column_stack([cols.min(1), rows.min(1), cols.max(1), rows.max(1)])

    # ------------------------------------------------------------------ union-find
    def _find(self, i: int) -> int:
        root = i
        while self._parent[root] != root:
            root = self._parent[root]
        while self._parent[i] != root:
            self._parent[i], i = root, self._parent[i]
        return root

    def _union(self, i: int, j: int) -> None:
        ri, rj = self._find(i), self._find(j)
        if ri == rj:
            return
        if len(self._members[ri]) < len(self._members[rj]):
            ri, rj = rj, ri
        self._parent[rj] = ri
        self._members[ri].extend(self._members.pop(rj))

    # ------------------------------------------------------------------ public API
    def skip(self, index: int) -> MergedObjects:
        """Mark a tile as processed with no objects (e.g. all nodata)."""
        return self.add(index, np.empty(0, object), np.zeros(0))

    def add(
        self,
        index: int,
        geoms: np.ndarray,
        scores: np.ndarray,
        attrs: Mapping[str, np.ndarray | list[object]] | None = None,
    ) -> MergedObjects:
        """Add the polygons found on tile ``index``; return the objects now final."""
        geoms = np.asarray(geoms, dtype=object)
        scores = np.asarray(scores, dtype=np.float32)
        attrs = dict(attrs or {})
        if self.done[index]:
            raise ValueError(f"tile {index} was already added to the merger")
        n = len(geoms)
        grid = self.grid
        spec = grid[index]
        finals: list[MergedObjects] = []
        new_ids: list[int] = []
        if n:
            pb = self._pixel_bounds(geoms)
            cs, rs = grid.col_starts, grid.row_starts
            ci_lo = np.searchsorted(cs + grid.tile_w, pb[:, 0] + 1e-6, side="right")
            ci_hi = np.searchsorted(cs, pb[:, 2] - 1e-6, side="left") - 1
            ri_lo = np.searchsorted(rs + grid.tile_h, pb[:, 1] + 1e-6, side="right")
            ri_hi = np.searchsorted(rs, pb[:, 3] - 1e-6, side="left") - 1
            local = (ci_lo == spec.col) & (ci_hi == spec.col) & (ri_lo == spec.row) & (ri_hi == spec.row)
            # Cut by an interior edge of its own window?
            w = spec.window
            tol = self._tol
            cut = np.zeros(n, bool)
            if w.col_off > 0:
                cut |= pb[:, 0] <= w.col_off + tol
            if w.row_off > 0:
                cut |= pb[:, 1] <= w.row_off + tol
            if w.col_off + w.width < grid.width:
                cut |= pb[:, 2] >= w.col_off + w.width - tol
            if w.row_off + w.height < grid.height:
                cut |= pb[:, 3] >= w.row_off + w.height - tol
            loc = np.flatnonzero(local)
            if loc.size:
                finals.append(
                    MergedObjects(
                        geoms[loc],
                        scores[loc],
                        [spec.id] * loc.size,
                        np.zeros(loc.size, bool),
                        np.ones(loc.size, np.int64),
                        {k: [v[i] for i in loc] for k, v in attrs.items()},
                    )
                )
            n_cols = len(cs)
            for i in np.flatnonzero(~local):
                fid = self._next_id
                self._next_id += 1
                self._geom[fid] = geoms[i]
                self._score[fid] = float(scores[i])
                self._tile[fid] = index
                self._complete[fid] = not bool(cut[i])
                needs = (
                    np.arange(ri_lo[i], ri_hi[i] + 1)[:, None] * n_cols + np.arange(ci_lo[i], ci_hi[i] + 1)[None, :]
                ).ravel()
                self._needs[fid] = needs
                self._attrs[fid] = {k: v[i] for k, v in attrs.items()}
                self._key[fid] = (int(index), int(i))
                self._parent[fid] = fid
                self._members[fid] = [fid]
                for t in needs:
                    self._by_tile[int(t)].add(fid)
                new_ids.append(fid)

        # Link new pieces with pending pieces of earlier tiles that reach into this window.
        earlier = [f for f in self._by_tile.get(index, ()) if self._tile[f] != index]
        if new_ids and earlier:
            self._link(index, new_ids, earlier)

        self.done[index] = True
        touched = set(self._by_tile.pop(index, set()))
        touched.update(new_ids)
        finals.append(self._finalize_settled(touched))
        return MergedObjects.concatenate(finals)

    def flush(self) -> MergedObjects:
        """Everything still pending, as final objects (call at the end of a run)."""
        return self._finalize_roots({self._find(f) for f in list(self._geom)})

    # ------------------------------------------------------------------ internals
    def _link(self, index: int, new_ids: list[int], earlier: list[int]) -> None:
        new_geoms = np.array([self._geom[f] for f in new_ids], dtype=object)
        old_geoms = np.array([self._geom[f] for f in earlier], dtype=object)
        tree = shapely.STRtree(new_geoms)
        old_i, new_i = tree.query(old_geoms, predicate="intersects")
        if old_i.size == 0:
            return
        self.pairs_tested += int(old_i.size)
        regions = np.array([self._common_box(self._tile[earlier[k]], index) for k in old_i], dtype=object)
        a = shapely.intersection(old_geoms[old_i], regions)
        b = shapely.intersection(new_geoms[new_i], regions)
        inter = shapely.area(shapely.intersection(a, b))
        area_a, area_b = shapely.area(a), shapely.area(b)
        union = area_a + area_b - inter
        smaller = np.minimum(area_a, area_b)
        with np.errstate(invalid="ignore", divide="ignore"):
            iou = np.where(union > 0, inter / union, 0.0)
            ios = np.where(smaller > 0, inter / smaller, 0.0)
        same = (iou >= self.match_iou) | (ios >= self.match_ios)
        for k in np.flatnonzero(same):
            self._union(earlier[old_i[k]], new_ids[new_i[k]])

    def _settled(self, fid: int) -> bool:
        return bool(self.done[self._needs[fid]].all())

    def _finalize_settled(self, touched: set[int]) -> MergedObjects:
        roots = {self._find(f) for f in touched if f in self._geom}
        ready = {r for r in roots if all(self._settled(m) for m in self._members[r])}
        return self._finalize_roots(ready)

    def _finalize_roots(self, roots: set[int]) -> MergedObjects:
        if not roots:
            return MergedObjects.empty()
        geoms, scores, tile_ids, seam, pieces = [], [], [], [], []
        attrs: dict[str, list[object]] = defaultdict(list)
        for root in sorted(roots):
            members = sorted(self._members[root], key=self._key.__getitem__)
            complete = [m for m in members if self._complete[m]]
            best = max(members, key=lambda m: (self._score[m], self._neg_key(m)))
            if len(members) == 1:
                geom = self._geom[members[0]]
                merged = False
            elif complete:
                best = max(complete, key=lambda m: (self._owns(m), self._score[m], self._neg_key(m)))
                geom = self._geom[best]
                merged = False
            else:
                geom = shapely.simplify(shapely.union_all([self._geom[m] for m in members]), 0.0)
                merged = True
            geoms.append(geom)
            scores.append(max(self._score[m] for m in members))
            tile_ids.append(";".join(self._tile_id(t) for t in sorted({self._tile[m] for m in members})))
            seam.append(merged)
            pieces.append(len(members))
            for k, v in self._attrs[best].items():
                attrs[k].append(v)
            for m in members:
                for t in self._needs[m]:
                    s = self._by_tile.get(int(t))
                    if s is not None:
                        s.discard(m)
                for store in (
                    self._geom,
                    self._score,
                    self._tile,
                    self._complete,
                    self._needs,
                    self._attrs,
                    self._parent,
                    self._key,
                ):
                    store.pop(m, None)
            self._members.pop(root, None)
        return MergedObjects(
            np.array([*geoms, None], dtype=object)[:-1],
            np.asarray(scores, np.float32),
            tile_ids,
            np.asarray(seam, bool),
            np.asarray(pieces, np.int64),
            dict(attrs),
        )

    def _neg_key(self, fid: int) -> tuple[int, int]:
        """Ties go to the earliest tile, then the first piece in it (whatever the arrival order)."""
        t, i = self._key[fid]
        return (-t, -i)

    def _owns(self, fid: int) -> bool:
        """Does the piece's own tile core hold its representative point?"""
        t = self._tile[fid]
        core = self._core_box.get(t)
        if core is None:
            core = self._core_box[t] = shapely.box(*self.grid.core_bounds(t))
        return bool(shapely.contains(core, shapely.point_on_surface(self._geom[fid])))
