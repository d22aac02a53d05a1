"""What every command shares: one-line errors with exit code 1 (the group's class), input paths."""

from __future__ import annotations

import glob
import logging
import sqlite3
import sys
from pathlib import Path
from typing import Any

import click

from fastsam_geo.errors import FastSAMGeoError

log = logging.getLogger("fastsam_geo")


def _one_line(text: str) -> str:
    """A message as one line (GDAL and click messages can hold newlines).

    >>> _one_line("a\\n  b")
    'a b'
    """
    return " ".join(str(text).split())


class _Group(click.Group):
    """Every user error is one line on stderr and exit code 1 (a traceback only with -v):
    fastsam-geo errors, click's usage errors and a full disk alike."""

    def invoke(self, ctx: click.Context) -> object:
        from fastsam_geo.errors import describe_os_error

        try:
            return super().invoke(ctx)
        except FastSAMGeoError as exc:
            if ctx.obj and ctx.obj.get("verbose", 0) > 0:
                raise
            click.echo(f"Error: {_one_line(str(exc))}", err=True)
            sys.exit(1)
        except (OSError, sqlite3.Error) as exc:  # e.g. the disk filled up under a library call
            message = describe_os_error(exc)
            if message is None or (ctx.obj and ctx.obj.get("verbose", 0) > 0):
                raise
            click.echo(f"Error: {message}", err=True)
            sys.exit(1)

    def main(self, *args: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        """Click's usage errors (bad values, missing arguments) as one line with exit code 1,
        like every other user error, instead of click's three lines and exit code 2."""
        kwargs["standalone_mode"] = False
        try:
            rv = super().main(*args, **kwargs)
        except click.exceptions.Exit as exc:
            sys.exit(exc.exit_code)
        except click.ClickException as exc:
            hint = ""
            if isinstance(exc, click.UsageError) and exc.ctx is not None and not isinstance(exc, click.BadParameter):
                hint = f" (see `{exc.ctx.command_path} --help`)"
            click.echo(f"Error: {_one_line(exc.format_message())}{hint}", err=True)
            sys.exit(1)
        except click.Abort as exc:
            click.echo("Aborted.", err=True)
            sys.exit(130 if isinstance(exc.__cause__, KeyboardInterrupt) else 1)
        sys.exit(rv if isinstance(rv, int) else 0)


RASTER_SUFFIXES = (".tif", ".tiff", ".vrt", ".jp2", ".img")


def _is_url(item: str) -> bool:
    """True for an http(s) or ftp URL, or a GDAL /vsicurl/ path.

    >>> _is_url("https://example.org/a.tif"), _is_url("/vsicurl/https://e.org/a.tif"), _is_url("a.tif")
    (True, True, False)
    """
    return item.lower().startswith(("http://", "https://", "ftp://", "/vsicurl/"))


def _name(raster: str) -> str:
    """The file name of a path or URL, for messages and layer names.

    >>> _name("https://example.org/data/ortho.tif?x=1"), _name("tiles/a.tif")
    ('ortho.tif', 'a.tif')
    """
    from urllib.parse import urlsplit

    if _is_url(raster):
        return Path(urlsplit(raster.removeprefix("/vsicurl/")).path).name or "raster"
    return Path(raster).name


def _expand_inputs(inputs: list[str]) -> list[str]:
    """Files, URLs, folders (their rasters) and quoted glob patterns, in a stable order.

    A name that exists is taken literally, even with glob characters (``ortho[2023].tif``).
    """
    out: list[str] = []
    for item in inputs:
        if "\x00" in item:
            raise click.BadParameter(f"{item!r}: a path cannot hold a NUL character.", param_hint="INPUTS")
        if _is_url(item):
            out.append(item)  # kept as text: Path() would turn https:// into https:/
            continue
        p = Path(item)
        if not p.exists() and any(ch in item for ch in "*?["):
            matches = sorted(glob.glob(item, recursive=True))
            if not matches:
                raise click.BadParameter(
                    f"{item}: no such file, and as a pattern it matches no file.", param_hint="INPUTS"
                )
            out.extend(matches)
        elif p.is_dir():
            found = sorted(str(f) for f in p.iterdir() if f.suffix.lower() in RASTER_SUFFIXES)
            if not found:
                raise click.BadParameter(
                    f"{item}: the folder holds no raster ({', '.join(RASTER_SUFFIXES)}); give files or a pattern.",
                    param_hint="INPUTS",
                )
            out.extend(found)
        else:
            out.append(item)
    from .inputset import read_once

    return read_once(out)


def _default_overlap(tile_size: object) -> object:
    """An eighth of the tile (128 px for 1024 px tiles), for any tile size.

    >>> _default_overlap(1024), _default_overlap(256)
    (128, 32)
    """
    return tile_size // 8 if isinstance(tile_size, int) else 0


def _checked_overlap(tile_size: object, overlap: object | None) -> object:
    """``--overlap`` as given, or an eighth of ``--tile-size``; both checked (one-line
    :class:`~fastsam_geo.errors.OptionError` when out of range).

    >>> _checked_overlap(1024, None), _checked_overlap(256, 64)
    (128, 64)
    """
    from fastsam_geo.validate import check_tiling

    overlap = _default_overlap(tile_size) if overlap is None else overlap
    check_tiling(tile_size, overlap)
    return overlap
