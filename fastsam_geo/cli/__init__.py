"""The ``fastsam-geo`` command line: the only package that prints or shows progress bars.

This module defines the group (-v/-q, logging, one-line errors) and registers the commands;
each command is a module of its own (``fastsam-geo extract`` in extract.py), what several
share is in common.py (errors, input paths), options.py (shared options and their values),
runner.py (a run of extract or prompt) and assemble.py (several rasters, one GeoPackage)."""

from __future__ import annotations

import logging
import sys

import click

from fastsam_geo import __version__
from fastsam_geo.worker import worker_command

from . import calibrate, evaluate, export, extract, info, prompt, sample, train
from .common import _Group


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", prog_name="fastsam-geo")
@click.option("-v", "--verbose", count=True, help="More logging (-vv for debug); tracebacks on errors.")
@click.option("-q", "--quiet", is_flag=True, help="Only errors; no progress bar.")
@click.pass_context
def main(ctx: click.Context, verbose: int, quiet: bool) -> None:
    """Building footprints from georeferenced imagery with FastSAM.

    \b
    Examples:
      fastsam-geo sample scene.tif --size 2048 --seed 7
      fastsam-geo train a.tif b.tif --labels footprints.gpkg -o weights/my.pt
    """
    ctx.ensure_object(dict)
    ctx.obj["verbose"] = verbose
    ctx.obj["quiet"] = quiet
    level = logging.WARNING if quiet else (logging.DEBUG if verbose > 1 else logging.INFO)
    root = logging.DEBUG if verbose > 1 else logging.WARNING  # other libraries' INFO stays quiet
    logging.basicConfig(level=root, format="%(message)s", stream=sys.stderr)
    logging.getLogger("fastsam_geo").setLevel(level)


main.add_command(sample.sample)
main.add_command(train.train)
main.add_command(export.export)
main.add_command(extract.extract)
main.add_command(prompt.prompt)
main.add_command(evaluate.evaluate)
main.add_command(calibrate.calibrate)
main.add_command(info.info)

main.add_command(worker_command, name="worker")
