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

import hashlib
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
from fastsam_geo.refine import RAW

#: Settings added to the resume ledger after it was first written, with the value that every run
#: before them had (a ledger, or a caller, without ``outline`` means the model's raw masks).
BEFORE_KEYS: dict[str, Any] = {"outline": RAW}


def ledger_path(output: str | os.PathLike[str]) -> Path:
    """Where the ledger of a run writing ``output`` lives.

    >>> ledger_path("/data/out/buildings.gpkg").name
    '.buildings.gpkg.resume.sqlite'
    """
    out = Path(output)
    return out.with_name(f".{out.name}.resume.sqlite")


def discard_ledger(output: str | os.PathLike[str]) -> None:
    """Delete the ledger of a run writing ``output`` and its SQLite journal, where they exist."""
    _unlink_db(ledger_path(output))


def _unlink_db(path: Path) -> None:
    """Delete an SQLite file and its journal, where they exist."""
    for p in (path, Path(f"{path}-journal")):
        p.unlink(missing_ok=True)


WHOLE_HASH_BYTES = 64 << 20
"""Files up to this size are hashed whole for the stamp; larger ones in samples."""


def content_hash(path: str | os.PathLike[str], *, whole_below: int = WHOLE_HASH_BYTES, block: int = 1 << 20) -> str:
    """sha256 of a file: whole when small, else of its size and 16 blocks spread over it
    (start and end included: a GeoTIFF's header and directory live there).

    >>> import tempfile
    >>> p = Path(tempfile.mkdtemp()) / "a.bin"; _ = p.write_bytes(b"abc")
    >>> content_hash(p) == hashlib.sha256(b"abc").hexdigest()
    True
    """
    h = hashlib.sha256()
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        if size <= whole_below:
            for chunk in iter(lambda: f.read(block), b""):
                h.update(chunk)
        else:
            h.update(str(size).encode())
            for k in range(16):
                f.seek((size - block) * k // 15)
                h.update(f.read(block))
    return h.hexdigest()


def raster_stamp(files: list[str] | tuple[str, ...]) -> list[dict[str, Any]]:
    """What identifies the pixels a run reads: for each local file (a VRT and its sources)
    its size and :func:`content_hash`, and for a file too large to hash whole its modification
    time (ns); a URL by its text. A small file rewritten with the same bytes (the mosaic VRT
    of a ``--mosaic`` run) keeps its stamp, so the run can be resumed.

    A resumed run compares it with the interrupted run's, so pixels changed in place (same
    path, same size) are noticed.
    """
    out: list[dict[str, Any]] = []
    for f in files:
        f = os.fspath(f)
        if f.startswith("/vsi") or "://" in f or not os.path.isfile(f):
            out.append({"file": f})
            continue
        st = os.stat(f)
        stamp: dict[str, Any] = {"size": st.st_size, "sha256": content_hash(f)}
        if st.st_size > WHOLE_HASH_BYTES:  # hashed in samples: the time tells more changes apart
            stamp["mtime_ns"] = st.st_mtime_ns
        out.append({"file": os.path.abspath(f), **stamp})
    return out


def _stamp_change(old: Any, new: Any) -> str:
    """What differs between two raster stamps, in words."""
    old_by = {d.get("file"): d for d in old or []}
    for d in new or []:
        o = old_by.get(d.get("file"))
        if o is None:
            return f"{d.get('file')} is new"
        what = [k for k in ("size", "sha256", "mtime_ns") if o.get(k) != d.get(k)]
        if what:
            words = {"size": "its size", "sha256": "its pixels", "mtime_ns": "its modification time"}
            return f"{d['file']} changed ({', '.join(words[k] for k in what)})"
    return "the raster's files changed"


def _write_error(exc: BaseException, path: Path) -> OutputError:
    """An OutputError for a ledger that cannot be written (full disk, read-only folder...)."""
    from fastsam_geo.errors import describe_os_error

    return OutputError(describe_os_error(exc, path) or f"{path}: cannot write the resume ledger ({exc}).")


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
        discard_ledger(output)
        try:
            return cls._create(path, params)
        except (sqlite3.Error, OSError) as exc:
            discard_ledger(output)
            raise _write_error(exc, path) from None

    @classmethod
    def _create(cls, path: Path, params: Mapping[str, Any]) -> Ledger:
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
        old = {**BEFORE_KEYS, **json.loads(saved)}
        new = {**BEFORE_KEYS, **json.loads(json.dumps(dict(params), sort_keys=True))}
        diff = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
        if diff == ["raster_stamp"]:  # only the pixels changed: say so
            conn.close()
            raise OutputError(
                f"{output}: cannot resume: {_stamp_change(old.get('raster_stamp'), new.get('raster_stamp'))} since "
                "the interrupted run; its tiles would mix old and new pixels. Drop --resume and pass --overwrite "
                "to start again."
            )
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
        _unlink_db(self.path)

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
        try:
            with self._conn:
                self._conn.execute("BEGIN")
                self._conn.execute(
                    "INSERT INTO tiles (tile_index, tile_id, status, error) VALUES (?, ?, ?, ?)",
                    (int(index), tile_id, status, error),
                )
                self._conn.executemany("INSERT INTO pieces VALUES (?, ?, ?, ?, ?)", rows)
        except (sqlite3.Error, OSError) as exc:
            raise _write_error(exc, self.path) from None

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
