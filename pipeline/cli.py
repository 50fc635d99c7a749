"""The ``inspyrenet`` command line.

Heavy libraries (torch, onnx) are imported inside the commands that need
them, so the commands that serve run on an install without torch.
"""

from __future__ import annotations

import functools
import sys
import warnings
from pathlib import Path

import click

from pipeline import __version__

MODES = ("fast", "base")


def user_errors(command):
    """Report errors a user can cause as one line on stderr and exit 1, never a traceback."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        from pipeline.errors import UserError
        from serving.bundle import BundleError
        from serving.storage import StorageError

        try:
            return command(*args, **kwargs)
        except (UserError, BundleError, StorageError) as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(1)
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            sys.exit(130)

    return wrapper


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="inspyrenet")
def main() -> None:
    """InSPyReNet engines: build verified model bundles and serve them."""


@main.command()
@click.option("--mode", type=click.Choice(MODES), default="fast", show_default=True,
              help="fast = 384x384 input, base = 1024x1024 (transparent-background's modes).")
@click.option("--checkpoint", "source", default="official", show_default=True, metavar="SOURCE",
              help="official | PATH | gs://BUCKET/OBJECT | synthetic[:SEED] (offline, not for production).")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Bundle directory to write (replaced atomically).")
@click.option("--export-tolerance", type=float, default=1e-4, show_default=True,
              help="Largest max-abs mask difference an fp32 export may show against the eager model.")
@user_errors
def build(mode: str, source: str, out: Path, export_tolerance: float) -> None:
    """Turn a checkpoint into a verified artifact bundle (TorchScript + ONNX)."""
    warnings.filterwarnings("ignore", message="Failed to import flet")  # transparent-background's GUI
    from rich.console import Console

    from pipeline.build import BuildOptions
    from pipeline.build import build as run_build
    from pipeline.progress import Stages
    from pipeline.report import build_summary

    stages = Stages()
    options = BuildOptions(mode=mode, checkpoint=source, out=out, export_tolerance=export_tolerance)
    bundle_dir, manifest = run_build(options, stages)
    Console().print(build_summary(bundle_dir, manifest, stages))


@main.command()
@click.argument("bundle_dir", type=click.Path(file_okay=False, path_type=Path))
@user_errors
def verify(bundle_dir: Path) -> None:
    """Check a bundle's manifest and every file's sha256."""
    from serving.bundle import load_bundle

    bundle = load_bundle(bundle_dir, verify=True)
    for artifact in bundle.artifacts:
        click.echo(f"ok  {artifact.backend:<12} {artifact.precision:<5} {artifact.file}")
    if not bundle.production_ready:
        click.echo("note: synthetic checkpoint; this bundle is not for production")


if __name__ == "__main__":
    main()
