"""Instance masks of one tile, stored cropped to their boxes.

A whole-tile boolean mask costs 1 MB at 1024 px, and a dense city tile holds hundreds
of objects. ``InstanceMasks`` therefore keeps each mask as a crop plus its offset in the
tile; the dense ``N x H x W`` array of the public contract is still there as
:attr:`InstanceMasks.masks`, assembled only when someone asks for it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass
class InstanceMasks:
    """Masks, scores and boxes of the objects found on one tile.

    Attributes:
        crops: one bool array per object, the mask inside ``crop_boxes[i]``.
        offsets: ``N x 2`` int, ``(row, col)`` of each crop's top-left pixel in the tile.
        scores: ``N`` float32 confidences.
        boxes: ``N x 4`` float32 detection boxes, ``xyxy`` in tile pixels.
        shape: ``(H, W)`` of the tile.

    >>> dense = np.zeros((2, 4, 5), bool); dense[0, 1:3, 1:4] = True; dense[1, 0, 0] = True
    >>> im = InstanceMasks.from_dense(dense, scores=[0.9, 0.5])
    >>> len(im), im.areas.tolist(), im.offsets.tolist()
    (2, [6, 1], [[1, 1], [0, 0]])
    >>> bool((im.masks == dense).all())
    True
    """

    crops: list[np.ndarray]
    offsets: np.ndarray
    scores: np.ndarray
    boxes: np.ndarray
    shape: tuple[int, int]

    def __post_init__(self) -> None:
        n = len(self.crops)
        self.offsets = np.asarray(self.offsets, dtype=np.int64).reshape(n, 2)
        self.scores = np.asarray(self.scores, dtype=np.float32).reshape(n)
        self.boxes = np.asarray(self.boxes, dtype=np.float32).reshape(n, 4)
        self.shape = (int(self.shape[0]), int(self.shape[1]))

    # ------------------------------------------------------------------ construction
    @classmethod
    def empty(cls, shape: tuple[int, int]) -> InstanceMasks:
        """No objects on a tile of ``shape``."""
        return cls([], np.zeros((0, 2)), np.zeros(0), np.zeros((0, 4)), shape)

    @classmethod
    def from_dense(
        cls,
        masks: np.ndarray,
        scores: Sequence[float] | np.ndarray | None = None,
        boxes: np.ndarray | None = None,
    ) -> InstanceMasks:
        """Build from an ``N x H x W`` bool array; empty masks are dropped."""
        masks = np.asarray(masks, dtype=bool)
        if masks.ndim != 3:
            raise ValueError(f"masks must be N x H x W, got shape {masks.shape}")
        n, h, w = masks.shape
        sc = np.ones(n, np.float32) if scores is None else np.asarray(scores, np.float32)
        crops, offsets, keep = [], [], []
        rows_any = masks.any(axis=2)
        cols_any = masks.any(axis=1)
        for i in range(n):
            rs = np.flatnonzero(rows_any[i])
            if rs.size == 0:
                continue
            cs = np.flatnonzero(cols_any[i])
            r0, r1, c0, c1 = rs[0], rs[-1] + 1, cs[0], cs[-1] + 1
            crops.append(masks[i, r0:r1, c0:c1].copy())
            offsets.append((r0, c0))
            keep.append(i)
        keep_idx = np.asarray(keep, dtype=np.int64)
        off = np.asarray(offsets, np.int64).reshape(-1, 2)
        if boxes is None:
            hw = np.asarray([c.shape for c in crops], np.int64).reshape(-1, 2)
            bx = np.concatenate([off[:, ::-1], off[:, ::-1] + hw[:, ::-1]], axis=1)
        else:
            bx = np.asarray(boxes, np.float32).reshape(n, 4)[keep_idx]
        return cls(crops, off, sc[keep_idx], bx, (h, w))

    @classmethod
    def concatenate(cls, parts: Sequence[InstanceMasks]) -> InstanceMasks:
        """Join the objects of several ``InstanceMasks`` of the same tile shape."""
        if not parts:
            raise ValueError("nothing to concatenate")
        crops = [c for p in parts for c in p.crops]
        return cls(
            crops,
            np.concatenate([p.offsets for p in parts]),
            np.concatenate([p.scores for p in parts]),
            np.concatenate([p.boxes for p in parts]),
            parts[0].shape,
        )

    # ------------------------------------------------------------------ views
    def __len__(self) -> int:
        return len(self.crops)

    @property
    def masks(self) -> np.ndarray:
        """The dense ``N x H x W`` bool masks (assembled on demand: costs N x H x W bytes)."""
        out = np.zeros((len(self), *self.shape), dtype=bool)
        for i in range(len(self)):
            out[i] = self.mask(i)
        return out

    def mask(self, i: int) -> np.ndarray:
        """The dense ``H x W`` mask of object ``i``."""
        out = np.zeros(self.shape, dtype=bool)
        r0, c0 = self.offsets[i]
        crop = self.crops[i]
        out[r0 : r0 + crop.shape[0], c0 : c0 + crop.shape[1]] = crop
        return out

    @property
    def crop_boxes(self) -> np.ndarray:
        """``N x 4`` int ``(row0, col0, row1, col1)`` of each crop in the tile."""
        hw = np.asarray([c.shape for c in self.crops], np.int64).reshape(-1, 2)
        return np.concatenate([self.offsets, self.offsets + hw], axis=1)

    @property
    def areas(self) -> np.ndarray:
        """Pixel count of each mask."""
        return np.asarray([int(c.sum()) for c in self.crops], dtype=np.int64)

    def subset(self, index: Sequence[int] | np.ndarray) -> InstanceMasks:
        """The objects at ``index`` (ints or a bool array), in that order."""
        idx = np.asarray(index)
        if idx.dtype == bool:
            idx = np.flatnonzero(idx)
        idx = idx.astype(np.int64)
        return InstanceMasks(
            [self.crops[i] for i in idx],
            self.offsets[idx],
            self.scores[idx],
            self.boxes[idx],
            self.shape,
        )

    # ------------------------------------------------------------------ queries
    def contains(self, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """``N x P`` bool: does mask ``i`` cover pixel ``(rows[p], cols[p])``?

        >>> dense = np.zeros((1, 4, 4), bool); dense[0, 1:3, 1:3] = True
        >>> InstanceMasks.from_dense(dense).contains(np.array([1, 0]), np.array([2, 0])).tolist()
        [[True, False]]
        """
        rows = np.asarray(rows, np.int64).ravel()
        cols = np.asarray(cols, np.int64).ravel()
        out = np.zeros((len(self), rows.size), dtype=bool)
        if rows.size == 0 or len(self) == 0:
            return out
        cb = self.crop_boxes
        inside = (
            (rows[None, :] >= cb[:, 0:1])
            & (rows[None, :] < cb[:, 2:3])
            & (cols[None, :] >= cb[:, 1:2])
            & (cols[None, :] < cb[:, 3:4])
        )
        for i, p in zip(*np.nonzero(inside), strict=True):
            out[i, p] = self.crops[i][rows[p] - cb[i, 0], cols[p] - cb[i, 1]]
        return out

    def box_iou(self, box: Sequence[float]) -> np.ndarray:
        """IoU of each mask with the pixel box ``(col0, row0, col1, row1)`` (pixel counts).

        >>> dense = np.zeros((2, 8, 8), bool); dense[0, 2:6, 2:6] = True; dense[1, 0:8, 0:8] = True
        >>> InstanceMasks.from_dense(dense).box_iou((2, 2, 6, 6)).round(3).tolist()
        [1.0, 0.25]
        """
        c0, r0, c1, r1 = (int(round(v)) for v in box)
        c0, r0 = max(c0, 0), max(r0, 0)
        c1, r1 = min(c1, self.shape[1]), min(r1, self.shape[0])
        box_area = max(c1 - c0, 0) * max(r1 - r0, 0)
        out = np.zeros(len(self), dtype=np.float64)
        cb = self.crop_boxes
        areas = self.areas
        for i, crop in enumerate(self.crops):
            ir0, ic0 = max(r0, cb[i, 0]), max(c0, cb[i, 1])
            ir1, ic1 = min(r1, cb[i, 2]), min(c1, cb[i, 3])
            inter = 0
            if ir1 > ir0 and ic1 > ic0:
                inter = int(crop[ir0 - cb[i, 0] : ir1 - cb[i, 0], ic0 - cb[i, 1] : ic1 - cb[i, 1]].sum())
            union = box_area + areas[i] - inter
            out[i] = inter / union if union else 0.0
        return out

    # ------------------------------------------------------------------ compact storage
    def pack(self) -> dict[str, np.ndarray]:
        """Compact arrays (bit-packed crops) for the everything-mask cache (``np.savez``)."""
        shapes = np.asarray([c.shape for c in self.crops], np.int64).reshape(-1, 2)
        bits = [np.packbits(c.ravel()) for c in self.crops]
        lengths = np.asarray([b.size for b in bits], np.int64)
        return {
            "shapes": shapes,
            "bits": np.concatenate(bits) if bits else np.zeros(0, np.uint8),
            "lengths": lengths,
            "offsets": self.offsets,
            "scores": self.scores,
            "boxes": self.boxes,
            "tile_shape": np.asarray(self.shape, np.int64),
        }

    @classmethod
    def unpack(cls, data: dict[str, np.ndarray]) -> InstanceMasks:
        """Inverse of :meth:`pack`."""
        shapes = np.asarray(data["shapes"]).reshape(-1, 2)
        ends = np.cumsum(data["lengths"])
        starts = ends - data["lengths"]
        bits = data["bits"]
        crops = [
            np.unpackbits(bits[s:e], count=int(h * w)).reshape(h, w).astype(bool)
            for (h, w), s, e in zip(shapes, starts, ends, strict=True)
        ]
        return cls(crops, data["offsets"], data["scores"], data["boxes"], tuple(data["tile_shape"]))
