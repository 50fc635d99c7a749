"""``inspyrenet-serve``: the serving image's own command. It never imports ``pipeline``.

    inspyrenet-serve serve [OPTIONS]          serve a bundle (also ``run``; ``inspyrenet serve`` is the same command)
    inspyrenet-serve verify [DIR] [--prune]   check a bundle as this install will serve it
    inspyrenet-serve pull gs://... DIR        download a published bundle and verify it (``inspyrenet pull``)
    inspyrenet-serve batch SRC DST            cut out a folder or bucket of images (``inspyrenet batch``)

``verify`` is what the image build runs on the baked bundle: every artifact
this install can serve must be present with its manifest's sha256; with
``--prune`` the files of artifacts it can never serve here (TorchScript
without torch, the fp16 graph TensorRT is compiled from, an engine without a
TensorRT runtime) are deleted. The image then starts with
``INSPYRENET_VERIFY=0``: its files were hashed when it was built.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from serving.backends.selection import prepare_for_install
from serving.bundle import load_bundle
from serving.errors import UserError
from serving.params import FORMAT_ALIASES, FORMATS, OUTPUTS
from serving.settings import BACKEND_CHOICES, Settings
from serving.store.bundles import DEFAULT_PULL_TIMEOUT  # imports no client library


class OneLineError(click.ClickException):
    """A user error as click reports it: ``error: MESSAGE`` on stderr, exit 1."""

    def show(self, file=None) -> None:
        click.echo(f"error: {self.message}", err=True)


class SignalInterruptError(click.ClickException):
    """Ctrl-C: ``interrupted`` on stderr, exit 130 (the shell's code for SIGINT)."""

    exit_code = 130

    def show(self, file=None) -> None:
        click.echo(self.message, err=True)


class OneLineErrors(click.Group):
    """A command group that reports every ``UserError`` of its commands as one line, never a traceback."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except UserError as exc:
            raise OneLineError(str(exc)) from None
        except KeyboardInterrupt:
            raise SignalInterruptError("interrupted") from None


def bundle_options(command):
    """--artifacts and --backend: which bundle, which of its artifacts (serve and batch)."""
    command = click.option(
        "--backend",
        type=click.Choice(BACKEND_CHOICES),
        default=None,
        help="auto = fastest usable artifact [env INSPYRENET_BACKEND, default auto].",
    )(command)
    return click.option(
        "--artifacts",
        type=click.Path(file_okay=False, path_type=Path),
        default=None,
        help="Bundle directory [env INSPYRENET_ARTIFACTS, default artifacts/fast].",
    )(command)


@click.group(cls=OneLineErrors, context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """Serve InSPyReNet bundles (the serving image's entrypoint; no torch, no build tools)."""


@main.command("run")
@bundle_options
@click.option("--port", type=int, default=None, help="[env PORT, default 8080]")
@click.option("--host", default=None, help="0.0.0.0, 127.0.0.1 or :: [env INSPYRENET_HOST, default 0.0.0.0]")
@click.option(
    "--workers", type=int, default=None, help="Inference worker processes [env INSPYRENET_WORKERS, default 1]."
)
@click.option("--max-batch-size", type=int, default=None, help="[env INSPYRENET_MAX_BATCH_SIZE, default 1]")
def serve(artifacts, backend, port, host, workers, max_batch_size) -> None:
    """Serve a bundle over HTTP with LitServe (healthy only once warm)."""
    from serving.http.server import run

    settings = Settings.from_env(
        artifacts=artifacts,
        backend=backend,
        port=port,
        host=host,
        workers=workers,
        max_batch_size=max_batch_size,
    )
    run(settings)


main.add_command(serve, name="serve")


@main.command("verify")
@click.argument("bundle_dir", required=False, type=click.Path(file_okay=False, path_type=Path))
@click.option(
    "--prune", is_flag=True, help="Delete the files of artifacts this install can never serve (the image build does)."
)
@click.option(
    "--prune-fallbacks",
    is_flag=True,
    help="With --prune, keep only the artifact `auto` serves first here (the CPU image: int8 when it passed).",
)
def verify_servable(bundle_dir: Path | None, prune: bool, prune_fallbacks: bool) -> None:
    """Check BUNDLE_DIR [env INSPYRENET_ARTIFACTS] as this install will serve it."""
    if prune_fallbacks and not prune:
        raise UserError("--prune-fallbacks goes with --prune")
    settings = Settings.from_env()
    bundle = load_bundle(bundle_dir or settings.artifacts, verify=False)
    validation = bundle.manifest.validation
    click.echo(
        f"validation: {validation.status if validation else 'none'}"
        + (f" ({validation.reason})" if validation and validation.reason else "")
    )
    served, left_out = prepare_for_install(
        bundle, prune=prune, fallbacks=not prune_fallbacks, allow_unvalidated=settings.allow_unvalidated
    )
    for artifact in served:
        click.echo(f"ok    {artifact.name:<16} {artifact.precision:<5} {artifact.file}")
    for artifact, reason in left_out:
        click.echo(f"skip  {artifact.name:<16} {artifact.precision:<5} {artifact.file}: {reason}")


@main.command()
@click.argument("source", metavar="SRC")
@click.argument("destination", metavar="DST")
@bundle_options
@click.option(
    "--output",
    type=click.Choice(OUTPUTS),
    default="rgba",
    show_default=True,
    help="rgba = cutout, mask = the alpha alone, rgb = on --bg-color.",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice((*FORMATS, *FORMAT_ALIASES), case_sensitive=False),
    default="png",
    show_default=True,
    help="Output format (and extension).",
)
@click.option("--bg-color", default=None, help="Background of output=rgb, e.g. #ffffff.")
@click.option("--threshold", default=None, help="Hard mask: alpha = mask > THRESHOLD (0..1).")
@click.option("--reverse", is_flag=True, help="Keep the background instead of the subject.")
@click.option("--max-size", default=None, help="Scale outputs down so the long side fits.")
@click.option("--refine", is_flag=True, help="Estimate the subject's colours at soft edges.")
@click.option("--quality", default=None, help="WebP (lossy) or JPEG quality 1..100.")
@click.option(
    "--shard",
    default=None,
    metavar="I/N",
    help="This task's share [default: CLOUD_RUN_TASK_INDEX/CLOUD_RUN_TASK_COUNT, else 0/1].",
)
@click.option(
    "--workers",
    type=click.IntRange(1, 64),
    default=None,
    help="Threads reading/decoding and encoding/writing [default: CPU count, at most 8].",
)
@click.option(
    "--batch-size",
    type=click.IntRange(1, 64),
    default=None,
    help="Images per inference, at most the artifact's [default: its max on a GPU, 1 on the CPU].",
)
@click.option(
    "--cpu-lanes",
    type=click.IntRange(1, 64),
    default=1,
    show_default=True,
    help="On the CPU: images in inference at once, each on its share of the cores. Faster than 1, but "
    "masks then differ from the API's by up to 4e-5 (one alpha level at a few pixels).",
)
def batch(
    source,
    destination,
    artifacts,
    backend,
    output,
    fmt,
    bg_color,
    threshold,
    reverse,
    max_size,
    refine,
    quality,
    shard,
    workers,
    batch_size,
    cpu_lanes,
) -> None:
    """Cut out every image under SRC into DST (local folders or gs://BUCKET/PREFIX); resumable, sharded.

    Outputs keep their relative paths with the format's extension; a rerun skips
    what is done. A summary goes to DST/.inspyrenet-batch/ and stdout.
    """
    import contextlib
    import json

    from serving import logs
    from serving.batch.listing import parse_shard, shard_from_env
    from serving.batch.run import BatchOptions, run_batch
    from serving.params import parse_params

    raw = {
        "output": output,
        "format": fmt,
        "bg_color": bg_color,
        "threshold": threshold,
        "reverse": reverse,
        "max_size": max_size,
        "refine": refine,
        "quality": quality,
    }
    params = parse_params(raw)
    task = parse_shard(shard) if shard is not None else shard_from_env()
    settings = Settings.from_env(artifacts=artifacts, backend=backend)
    options = BatchOptions(source, destination, params, task, workers or 0, batch_size or 0, cpu_lanes)
    # stdout carries the summary alone: our log lines, and what libraries print (onnxruntime-gpu prints
    # its CUDA provider's failure on a machine without a GPU), go to stderr.
    logs.send_to(sys.stderr)
    with contextlib.redirect_stdout(sys.stderr):
        summary, where = run_batch(settings, options)
    click.echo(json.dumps(summary, indent=2))
    click.echo(f"summary: {where}", err=True)


class PullLines:
    """Pull progress on a terminal: one bar over the whole bundle (bytes, rate, time left); elsewhere a line a file."""

    def __init__(self):
        from rich.console import Console

        self.console = Console(stderr=True)
        self.bar = None

    def __enter__(self):
        if self.console.is_terminal:
            from rich.progress import (
                BarColumn,
                DownloadColumn,
                Progress,
                TextColumn,
                TimeRemainingColumn,
                TransferSpeedColumn,
            )

            self.bar = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                DownloadColumn(),
                TransferSpeedColumn(),
                TimeRemainingColumn(),
                console=self.console,
            )
            self.bar.start()
            self.task = self.bar.add_task("pulling", total=None)
        return self

    def __exit__(self, *exc):
        if self.bar is not None:
            self.bar.stop()

    def begin(self, total_bytes: int, files: int) -> None:
        if self.bar is not None:
            self.bar.update(self.task, total=total_bytes)
        else:
            self.console.print(f"pulling {files} files, {total_bytes / 1e6:.0f} MB", highlight=False)

    def file(self, name: str, size: int) -> None:
        if self.bar is not None:
            self.bar.update(self.task, description=name)
        else:
            self.console.print(f"downloading {name} ({size / 1e6:.1f} MB)", highlight=False)

    def advance(self, nbytes: int) -> None:
        if self.bar is not None:
            self.bar.advance(self.task, nbytes)


@main.command()
@click.argument("source", metavar="gs://BUCKET/PREFIX[/VERSION|/latest]")
@click.argument("target", type=click.Path(file_okay=False, path_type=Path))
@click.option(
    "--timeout",
    type=click.FloatRange(min=1),
    default=DEFAULT_PULL_TIMEOUT,
    show_default=True,
    help="Seconds the whole pull may take; past them it fails in one line (a stalled request: within 30 s more).",
)
def pull(source: str, target: Path, timeout: float) -> None:
    """Download a published bundle, verify every sha256, then move it into TARGET."""
    from serving.store.bundles import pull as pull_bundle

    with PullLines() as progress:
        pull_bundle(source, target, progress=progress, timeout=timeout)
    click.echo(f"pulled and verified: {target}")


if __name__ == "__main__":
    main()
