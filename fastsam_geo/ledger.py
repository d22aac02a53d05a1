"""The resume ledger: which tiles are finished, and the pieces they gave, on disk.

A run keeps a small SQLite file beside its output (``.<output name>.resume.sqlite``).
Each finished tile is recorded in ONE transaction with the polygons it gave before
seam merging, so after a crash or a kill the file holds whole tiles only. A resumed run
replays those pieces through the merger (no inference) in the order they were made,
then carries on with the remaining tiles: the result equals an uninterrupted run. The
ledger is removed when the output is committed; the final GeoPackage keeps a copy of
the tile table (``fastsam_geo_tiles``).
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import shapely

from fastsam_geo.errors import OutputError


def ledger_path(output: str | os.PathLike[str]) -> Path:
    """Where the ledger of a run writing ``output`` lives.

    >>> ledger_path("/data/out/buildings.gpkg").name
    '.buildings.gpkg.resume.sqlite'
    """
    out = Path(output)
    return out.with_name(f".{out.name}.resume.sqlite")


@dataclass
class TileRecord:
    """One finished tile, as recorded."""

    seq: int
    index: int
    tile_id: str
    status: str
    error: str
    geoms: np.ndarray
    scores: np.ndarray
    labels: list[str]


class NoLedger:
    """Stands in for a :class:`Ledger` where resuming is pointless (a run of one tile)."""

    def record(self, *args: object, **kwargs: object) -> None:
        """Nothing to record."""

    def records(self) -> Iterator[TileRecord]:
        """Nothing recorded."""
        return iter(())

    def close(self) -> None:
        """Nothing to close."""

    def remove(self) -> None:
        """Nothing to remove."""


class Ledger:
    """The on-disk record of a run's finished tiles.

    >>> import tempfile
    >>> path = Path(tempfile.mkdtemp()) / "b.gpkg"
    >>> with Ledger.create(path, {"tile_size": 256}) as led:
    ...     led.record(3, "r0000_c0003", "done", np.array([shapely.box(0, 0, 1, 1)]), np.array([0.9]), ["everything"])
    >>> with Ledger.open(path, {"tile_size": 256}) as led:
    ...     [(r.index, r.status, len(r.geoms)) for r in led.records()]
    [(3, 'done', 1)]
    """

    def __init__(self, path: Path, conn: sqlite3.Connection) -> None:
        self.path = path
        self._conn = conn

    # ------------------------------------------------------------------ lifecycle
    @classmethod
    def create(cls, output: str | os.PathLike[str], params: Mapping[str, Any]) -> Ledger:
        """Start a new ledger for ``output`` (replacing an old one)."""
        path = ledger_path(output)
        for p in (path, Path(f"{path}-journal")):
            if p.exists():
                p.unlink()
        conn = sqlite3.connect(path, isolation_level=None)
        conn.executescript(
            """
            PRAGMA journal_mode=DELETE;
            PRAGMA synchronous=NORMAL;
            CREATE TABLE params (key TEXT PRIMARY KEY, value TEXT);
            CREATE TABLE tiles (seq INTEGER PRIMARY KEY, tile_index INTEGER UNIQUE, tile_id TEXT,
                                status TEXT, error TEXT);
            CREATE TABLE pieces (tile_index INTEGER, n INTEGER, wkb BLOB, score REAL, label TEXT);
            CREATE INDEX pieces_tile ON pieces (tile_index);
            """
        )
        conn.execute("INSERT INTO params VALUES ('params', ?)", (json.dumps(dict(params), sort_keys=True),))
        return cls(path, conn)

    @classmethod
    def open(cls, output: str | os.PathLike[str], params: Mapping[str, Any]) -> Ledger:
        """Open the ledger of an interrupted run, checking it ran with the same parameters."""
        path = ledger_path(output)
        if not path.exists():
            raise OutputError(f"{output}: no interrupted run to resume (no {path.name}); run without --resume.")
        conn = sqlite3.connect(path, isolation_level=None)
        try:
            (saved,) = conn.execute("SELECT value FROM params WHERE key = 'params'").fetchone()
        except (sqlite3.DatabaseError, TypeError):
            conn.close()
            raise OutputError(f"{path}: resume ledger is unreadable; run again with --overwrite.") from None
        old, new = json.loads(saved), json.loads(json.dumps(dict(params), sort_keys=True))
        diff = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
        if diff:
            conn.close()
            raise OutputError(
                f"{output}: the interrupted run used other settings ({', '.join(diff)}); "
                "resume with the same options, or start again with --overwrite."
            )
        return cls(path, conn)

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the file (it stays on disk)."""
        self._conn.close()

    def remove(self) -> None:
        """Close and delete the ledger (the run is committed)."""
        self.close()
        for p in (self.path, Path(f"{self.path}-journal")):
            if p.exists():
                p.unlink()

    # ------------------------------------------------------------------ records
    def record(
        self,
        index: int,
        tile_id: str,
        status: str,
        geoms: np.ndarray,
        scores: np.ndarray,
        labels: list[str],
        error: str = "",
    ) -> None:
        """Record one finished tile and its pieces, atomically."""
        wkbs = shapely.to_wkb(np.asarray(geoms, dtype=object)) if len(geoms) else []
        rows = [
            (int(index), n, bytes(w), float(s), str(lab))
            for n, (w, s, lab) in enumerate(zip(wkbs, scores, labels, strict=True))
        ]
        with self._conn:
            self._conn.execute("BEGIN")
            self._conn.execute(
                "INSERT INTO tiles (tile_index, tile_id, status, error) VALUES (?, ?, ?, ?)",
                (int(index), tile_id, status, error),
            )
            self._conn.executemany("INSERT INTO pieces VALUES (?, ?, ?, ?, ?)", rows)

    def done_indices(self) -> set[int]:
        """Indices of the tiles already finished."""
        return {int(i) for (i,) in self._conn.execute("SELECT tile_index FROM tiles")}

    def records(self) -> Iterator[TileRecord]:
        """Finished tiles in the order they were finished, one at a time (flat memory)."""
        tiles = self._conn.execute("SELECT seq, tile_index, tile_id, status, error FROM tiles ORDER BY seq").fetchall()
        for seq, index, tile_id, status, error in tiles:
            rows = self._conn.execute(
                "SELECT wkb, score, label FROM pieces WHERE tile_index = ? ORDER BY n", (index,)
            ).fetchall()
            geoms = shapely.from_wkb([r[0] for r in rows]) if rows else np.empty(0, object)
            yield TileRecord(
                seq,
                index,
                tile_id,
                status,
                error,
                np.asarray(geoms, dtype=object),
                np.asarray([r[1] for r in rows], np.float32),
                [r[2] for r in rows],
            )
