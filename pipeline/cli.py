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
        from serving.server import ServeError
        from serving.settings import SettingsError
        from serving.storage import StorageError

        try:
            return command(*args, **kwargs)
        except (UserError, BundleError, StorageError, ServeError, SettingsError) as exc:
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


@main.command()
@click.option("--artifacts", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Bundle directory [env INSPYRENET_ARTIFACTS, default artifacts/fast].")
@click.option("--backend", type=click.Choice(("auto", "tensorrt", "torchscript", "onnxruntime")), default=None,
              help="auto = fastest usable artifact [env INSPYRENET_BACKEND, default auto].")
@click.option("--port", type=int, default=None, help="[env PORT, default 8080]")
@click.option("--host", default=None, help="0.0.0.0, 127.0.0.1 or :: [env INSPYRENET_HOST, default 0.0.0.0]")
@click.option("--workers", type=int, default=None, help="Inference worker processes [env INSPYRENET_WORKERS, default 1].")
@click.option("--max-batch-size", type=int, default=None, help="[env INSPYRENET_MAX_BATCH_SIZE, default 1]")
@user_errors
def serve(artifacts, backend, port, host, workers, max_batch_size) -> None:
    """Serve a bundle over HTTP with LitServe (healthy only once warm)."""
    from serving.server import run
    from serving.settings import Settings

    settings = Settings.from_env(
        artifacts=artifacts, backend=backend, port=port, host=host, workers=workers, max_batch_size=max_batch_size,
    )
    run(settings)


if __name__ == "__main__":
    main()
