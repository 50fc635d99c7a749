"""The ``inspyrenet`` command line.

Heavy libraries (torch, onnx) are imported inside the commands that need
them, so the commands that serve run on an install without torch.
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import click

from pipeline import __version__
from serving import cli as serving_cli
from serving.backends import ARTIFACT_NAMES, BACKEND_NAMES
from serving.cli import SignalInterruptError
from serving.errors import UserError

MODES = ("fast", "base")
# pipeline.export.fp16_emulation.FP16_EXECUTION_CHOICES, kept here so the CLI starts without importing torch.
FP16_EXECUTION_CHOICES = ("auto", "native", "emulated")


@click.group(cls=serving_cli.OneLineErrors, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="inspyrenet")
def main() -> None:
    """InSPyReNet engines: build verified model bundles and serve them."""


def fp16_check_options(command):
    """The fp16-islands check's options, shared by ``build`` (its validation) and ``validate``."""
    command = click.option(
        "--fp16-execution",
        type=click.Choice(FP16_EXECUTION_CHOICES),
        default="auto",
        show_default=True,
        help="How that check runs fp16 on the CPU: native kernels, or emulated (fp32 arithmetic, fp16 "
        "storage; as fast as fp32); auto probes whether native fp16 is fast here.",
    )(command)
    return click.option(
        "--fp16-islands/--no-fp16-islands",
        default=True,
        show_default=True,
        help="In validation, also run the fp16 export graph in PyTorch (the overflow check; informative).",
    )(command)


def tensorrt_options(command):
    """The engine builder's options, shared by ``build`` and ``build-engine``."""
    options = [
        click.option(
            "--hardware-compatible",
            is_flag=True,
            help="Build the engine for any Ampere-or-newer GPU (slower than one built for the GPU it runs on).",
        ),
        click.option(
            "--trt-optimization-level",
            type=click.IntRange(0, 5),
            default=3,
            show_default=True,
            help="TensorRT builder optimisation level (higher: longer build, maybe faster engine).",
        ),
        click.option(
            "--trt-workspace-gib",
            type=click.FloatRange(min=0.25),
            default=4.0,
            show_default=True,
            help="TensorRT builder workspace limit in GiB.",
        ),
        click.option(
            "--trt-max-batch",
            type=click.IntRange(1, 16),
            default=4,
            show_default=True,
            help="Largest batch the TensorRT engine accepts.",
        ),
        click.option(
            "--trt-timing-cache",
            type=click.Path(dir_okay=False, path_type=Path),
            default=None,
            help="Persisted TensorRT timing cache [default: in the cache dir, per GPU and TensorRT version].",
        ),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def engine_options(
    hardware_compatible: bool,
    trt_optimization_level: int,
    trt_workspace_gib: float,
    trt_max_batch: int,
    trt_timing_cache: Path | None,
):
    from pipeline.export.tensorrt_engine import TensorRTOptions

    return TensorRTOptions(
        hardware_compatible=hardware_compatible,
        optimization_level=trt_optimization_level,
        workspace_gib=trt_workspace_gib,
        max_batch=trt_max_batch,
        timing_cache=trt_timing_cache,
    )


@main.command()
@click.option(
    "--mode",
    type=click.Choice(MODES),
    default="fast",
    show_default=True,
    help="fast = 384x384 input, base = 1024x1024 (transparent-background's modes).",
)
@click.option(
    "--checkpoint",
    "source",
    default="official",
    show_default=True,
    metavar="SOURCE",
    help="official | PATH | gs://BUCKET/OBJECT | synthetic[:SEED] (offline, not for production).",
)
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    required=True,
    help="Bundle directory to write (replaced atomically).",
)
@click.option(
    "--export-tolerance",
    type=float,
    default=1e-4,
    show_default=True,
    help="Largest max-abs mask difference an fp32 export may show against the eager model.",
)
@click.option(
    "--validate/--no-validate",
    "run_parity",
    default=True,
    show_default=True,
    help="Run the mask-parity validation on the finished bundle.",
)
@click.option(
    "--tensorrt/--no-tensorrt",
    default=None,
    help="Build the TensorRT fp16 engine [default: when the TensorRT builder and a CUDA GPU are present].",
)
@click.option(
    "--require-tensorrt",
    is_flag=True,
    help="Fail, instead of skipping, when the TensorRT engine cannot be built here (CI build job).",
)
@click.option(
    "--int8",
    "int8",
    type=click.Choice(["static", "dynamic", "off"]),
    default="static",
    show_default=True,
    help="The optional int8 ONNX artifact for the CPU: static QDQ (calibrated), dynamic (MatMul only), or none. "
    "Served only when it passes its parity row.",
)
@click.option(
    "--int8-reduce-range",
    type=click.Choice(["auto", "on", "off"]),
    default="auto",
    show_default=True,
    help="7-bit int8 weights; auto: on where this CPU has no VNNI (its int8 multiply would saturate).",
)
@tensorrt_options
@fp16_check_options
def build(
    mode: str,
    source: str,
    out: Path,
    export_tolerance: float,
    run_parity: bool,
    tensorrt: bool | None,
    require_tensorrt: bool,
    hardware_compatible: bool,
    trt_optimization_level: int,
    trt_workspace_gib: float,
    trt_max_batch: int,
    trt_timing_cache: Path | None,
    fp16_islands: bool,
    fp16_execution: str,
    int8: str,
    int8_reduce_range: str,
) -> None:
    """Turn a checkpoint into a verified artifact bundle (TorchScript, ONNX fp32 and int8, TensorRT fp16 when
    possible)."""
    warnings.filterwarnings("ignore", message="Failed to import flet")  # transparent-background's GUI
    from rich.console import Console

    from pipeline.build import BuildOptions
    from pipeline.build import build as run_build
    from pipeline.build_summary import build_summary
    from pipeline.progress import Stages

    if tensorrt is False and require_tensorrt:
        raise UserError("--no-tensorrt and --require-tensorrt contradict each other")
    stages = Stages()
    trt_options = engine_options(
        hardware_compatible, trt_optimization_level, trt_workspace_gib, trt_max_batch, trt_timing_cache
    )
    options = BuildOptions(
        mode=mode,
        checkpoint=source,
        out=out,
        export_tolerance=export_tolerance,
        validate=run_parity,
        tensorrt=tensorrt,
        require_tensorrt=require_tensorrt,
        tensorrt_options=trt_options,
        int8=int8,
        int8_reduce_range=int8_reduce_range,
    )
    try:
        bundle_dir, manifest = run_build(options, stages)
    except KeyboardInterrupt:
        raise SignalInterruptError(
            f"interrupted: nothing was written to {out} (the bundle appears whole or not at all)"
        ) from None
    failure = None
    if run_parity:
        from pipeline.parity.validate import validate_and_record

        try:
            failure = validate_and_record(bundle_dir, stages, fp16_islands=fp16_islands, fp16_mode=fp16_execution)
        except KeyboardInterrupt:
            raise SignalInterruptError(
                f"interrupted during the parity validation: {bundle_dir} holds every artifact but is not validated, "
                f"so it is not served; finish it with `inspyrenet validate {bundle_dir}`"
            ) from None
    Console().print(build_summary(bundle_dir, manifest, stages))
    if failure:
        click.echo(f"error: {failure}; see {bundle_dir / 'parity' / 'report.html'}", err=True)
        sys.exit(1)


@main.command()
@click.argument("bundle_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option(
    "--images",
    "images_dir",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    default=None,
    help="Directory of images to use instead of the built-in parity set.",
)
@click.option(
    "--report",
    "report_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Where report.json, report.html and images/ go [default BUNDLE_DIR/parity].",
)
@click.option(
    "--threshold",
    "thresholds",
    multiple=True,
    metavar="CLASS.REF.FIELD=VALUE",
    help="Override a limit, e.g. fp32.model.max_abs=0.001 (repeatable).",
)
@fp16_check_options
def validate(
    bundle_dir: Path,
    images_dir: Path | None,
    report_dir: Path | None,
    thresholds: tuple[str, ...],
    fp16_islands: bool,
    fp16_execution: str,
) -> None:
    """Mask parity of every artifact against the PyTorch model and transparent-background's Remover."""
    warnings.filterwarnings("ignore", message="Failed to import flet")
    from pipeline.parity.validate import validate_and_record
    from pipeline.progress import Stages

    failure = validate_and_record(
        bundle_dir, Stages(), images_dir, report_dir, thresholds, fp16_islands, fp16_execution
    )
    if failure:
        click.echo(f"error: {failure}", err=True)
        sys.exit(1)


@main.command("build-engine")
@click.argument("bundle_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option(
    "--require-tensorrt",
    is_flag=True,
    help="Fail, instead of skipping, when no engine can be built here (the GPU build job).",
)
@tensorrt_options
@click.option(
    "--validate/--no-validate",
    "run_parity",
    default=True,
    show_default=True,
    help="Validate the bundle against its stored parity references afterwards.",
)
def build_engine(
    bundle_dir: Path,
    require_tensorrt: bool,
    hardware_compatible: bool,
    trt_optimization_level: int,
    trt_workspace_gib: float,
    trt_max_batch: int,
    trt_timing_cache: Path | None,
    run_parity: bool,
) -> None:
    """Add the TensorRT fp16 engine to a built bundle (GPU step; needs tensorrt-cu12, not torch)."""
    from pipeline.export.engine_step import add_engine
    from pipeline.progress import Stages

    stages = Stages()
    options = engine_options(
        hardware_compatible, trt_optimization_level, trt_workspace_gib, trt_max_batch, trt_timing_cache
    )
    manifest = add_engine(bundle_dir, options, stages, require=require_tensorrt)
    if manifest is None or not run_parity:
        return
    from pipeline.parity.validate import validate_and_record

    failure = validate_and_record(bundle_dir, stages, fp16_islands=False)
    if failure:
        click.echo(f"error: {failure}; see {bundle_dir / 'parity' / 'report.html'}", err=True)
        sys.exit(1)


@main.command("verify")
@click.argument("bundle_dir", type=click.Path(file_okay=False, path_type=Path))
def verify_bundle_files(bundle_dir: Path) -> None:
    """Check a bundle's manifest and every file's sha256 (artifacts and stored parity references)."""
    from pipeline.parity import references as parity_references
    from serving.backends.selection import validation_problem
    from serving.bundle import load_bundle

    bundle = load_bundle(bundle_dir, verify=True)
    references = parity_references.verify_hashes(bundle)
    for artifact in bundle.artifacts:
        role = "" if artifact.servable else f"  ({artifact.role}, not served)"
        parity = f"  parity {artifact.parity.status}" if artifact.parity else ""
        click.echo(f"ok  {artifact.name:<16} {artifact.precision:<5} {artifact.file}{role}{parity}")
    if references:
        click.echo(f"ok  parity references: {references} files")
    validation = bundle.manifest.validation
    reason = f" ({validation.reason})" if validation and validation.reason else ""
    click.echo(f"validation: {validation.status if validation else 'none'}{reason}")
    if not bundle.production_ready:
        click.echo("note: synthetic checkpoint; this bundle is not for production")
    problem = validation_problem(bundle)
    if problem:
        raise UserError(f"the files are intact, but {problem}")


@main.command("gpu-check")
@click.argument("bundle", metavar="BUNDLE_DIR|gs://BUCKET/PREFIX[/VERSION|/latest]")
@click.option(
    "--out",
    default=None,
    metavar="PATH|gs://BUCKET/PREFIX",
    help="Also write the JSON here after every stage: a file, a folder (gpu-check.json) or a gs:// prefix.",
)
@click.option(
    "--budget",
    type=click.FloatRange(min=60),
    default=420,
    show_default=True,
    help="Seconds for the whole check; the engine build gets what the other stages leave.",
)
@click.option("--repeats", type=click.IntRange(1, 1000), default=20, show_default=True, help="Timed runs per latency.")
@click.option(
    "--max-batch",
    type=click.IntRange(2, 16),
    default=4,
    show_default=True,
    help="The engine's largest batch (the build job's default); both backends are timed at it.",
)
@click.option(
    "--engine-flag",
    "engine_flags",
    multiple=True,
    metavar="FLAG",
    help="Passed on to `inspyrenet build-engine` (e.g. --engine-flag=--trt-max-batch=2).",
)
def gpu_check(
    bundle: str, out: str | None, budget: float, repeats: int, max_batch: int, engine_flags: tuple[str, ...]
) -> None:
    """Check the engine route on this GPU, without torch: one JSON (exit 0 passed, 1 failed, 3 no GPU)."""
    import json

    from pipeline.engine_check import check, summary_writer

    if not bundle.startswith("gs://") and not (Path(bundle) / "manifest.json").is_file():
        raise click.UsageError(f"{bundle}: no bundle there (no manifest.json) and not a gs:// URI")
    summary, status = check(bundle, budget, repeats, max_batch, engine_flags, summary_writer(out))
    click.echo(json.dumps(summary, indent=2, default=str))
    sys.exit(status)


main.add_command(serving_cli.serve, name="serve")
main.add_command(serving_cli.batch, name="batch")
main.add_command(serving_cli.pull, name="pull")


@main.command()
@click.option(
    "--artifacts",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("artifacts/fast"),
    show_default=True,
    help="Bundle to serve.",
)
@click.option(
    "--checkpoint",
    "source",
    default=None,
    metavar="SOURCE",
    help="Checkpoint for the baseline; default: the one the bundle was built from.",
)
@click.option(
    "--backend",
    "backends",
    type=click.Choice(ARTIFACT_NAMES),
    multiple=True,
    default=("onnxruntime",),
    show_default=True,
    help="Our backends to measure (repeatable).",
)
@click.option("--runs", type=click.IntRange(1, 50), default=5, show_default=True, help="Runs per measure.")
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("bench-results"),
    show_default=True,
    help="Where bench.json, bench.md and bench.png go.",
)
@click.option(
    "--baseline/--no-baseline",
    "with_baseline",
    default=True,
    show_default=True,
    help="Also measure transparent-background's Remover (slow: a minute per cold start).",
)
def bench(
    artifacts: Path, source: str | None, backends: tuple[str, ...], runs: int, out: Path, with_baseline: bool
) -> None:
    """Cold start, latency and throughput: our server against transparent-background's Remover."""
    warnings.filterwarnings("ignore", message="Failed to import flet")
    from rich.console import Console

    from pipeline import checkpoint
    from pipeline.bench.report import markdown
    from pipeline.bench.serve_bench import run_bench
    from serving.bundle import load_bundle

    manifest = load_bundle(artifacts, verify=False).manifest
    resolved = checkpoint.resolve(source or manifest.checkpoint.source, manifest.mode)
    console = Console(stderr=True)
    with console.status("starting") as status:
        report = run_bench(artifacts, resolved.path, list(backends), runs, out, status.update, with_baseline)
    click.echo(markdown(report))
    chart = f", {out / 'bench.png'}" if with_baseline else ""
    click.echo(f"written: {out / 'bench.json'}, {out / 'bench.md'}{chart}")


@main.command("load-test")
@click.option(
    "--artifacts",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("artifacts/fast"),
    show_default=True,
    help="Bundle to serve.",
)
@click.option("--backend", type=click.Choice(BACKEND_NAMES), default="onnxruntime", show_default=True)
@click.option(
    "--concurrency", type=click.IntRange(2, 500), default=50, show_default=True, help="Requests released at once."
)
@click.option("--bodies", type=click.IntRange(1, 100), default=10, show_default=True, help="Concurrent large bodies.")
@click.option("--body-mb", type=click.IntRange(1, 64), default=29, show_default=True, help="Size of each large body.")
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("bench-results"),
    show_default=True,
    help="Where load.json goes.",
)
def load_test(artifacts: Path, backend: str, concurrency: int, bodies: int, body_mb: int, out: Path) -> None:
    """Back-pressure and memory under load: a burst of requests, then a burst of large bodies."""
    from rich.console import Console

    from pipeline.bench.load_test import markdown, run_load_test
    from serving.bundle import load_bundle

    load_bundle(artifacts, verify=False)  # a missing or broken bundle is one line, before any server starts
    with Console(stderr=True).status("starting") as status:
        report = run_load_test(artifacts, backend, concurrency, bodies, body_mb, out, status.update)
    click.echo(markdown(report))
    click.echo(f"written: {out / 'load.json'}")


@main.command("bench-mobile")
@click.option(
    "--artifacts",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("artifacts/fast"),
    show_default=True,
    help="Bundle to serve.",
)
@click.option("--backend", type=click.Choice(ARTIFACT_NAMES), default="onnxruntime", show_default=True)
@click.option(
    "--link",
    "links",
    type=click.Choice(["loopback", "4g", "slow-4g"]),
    multiple=True,
    default=("loopback", "4g", "slow-4g"),
    show_default=True,
    help="Links to shape (repeatable): 4G is 9 / 1.5 Mbit/s and 170 ms, slow 4G 1.6 / 0.75 Mbit/s and 150 ms.",
)
@click.option(
    "--size",
    "sizes",
    type=click.Choice(["1", "12", "24"]),
    multiple=True,
    default=("1", "12", "24"),
    show_default=True,
    help="Photo sizes in megapixels (repeatable).",
)
@click.option("--runs", type=click.IntRange(1, 20), default=3, show_default=True, help="Mobile-path cutouts per cell.")
@click.option(
    "--baseline-runs", type=click.IntRange(1, 20), default=1, show_default=True, help="Today's path, per cell."
)
@click.option(
    "--baseline-budget",
    type=click.FloatRange(0),
    default=200.0,
    show_default=True,
    help="Skip today's path where its transfer alone would take longer (seconds).",
)
@click.option("--sweep/--no-sweep", default=False, show_default=True, help="Also measure every upload setting.")
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("bench-results"),
    show_default=True,
    help="Where mobile.json goes.",
)
def bench_mobile(artifacts, backend, links, sizes, runs, baseline_runs, baseline_budget, sweep, out) -> None:
    """A phone's cutout through a shaped link: the browser client's mobile path against today's, in Chromium."""
    from rich.console import Console

    from pipeline.bench.browser import BrowserUnavailableError
    from pipeline.bench.mobile import MOBILE_FILE, markdown, run_mobile_bench
    from serving.bundle import load_bundle

    load_bundle(artifacts, verify=False)  # a missing or broken bundle is one line, before any server starts
    try:
        with Console(stderr=True).status("starting") as status:
            report = run_mobile_bench(
                artifacts,
                backend,
                list(links),
                sorted(int(size) for size in sizes),
                runs,
                baseline_runs,
                baseline_budget,
                sweep,
                out,
                status.update,
            )
    except BrowserUnavailableError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(markdown(report))
    click.echo(f"written: {out / MOBILE_FILE}")


PRICES = Path(__file__).resolve().parent.parent / "deploy" / "prices.json"


@main.command("bench-cpu-service")
@click.option(
    "--artifacts",
    "bundles",
    type=click.Path(file_okay=False, path_type=Path),
    multiple=True,
    default=[Path("artifacts/fast")],
    show_default=True,
    help="Bundle to serve, one per mode (repeatable).",
)
@click.option("--threads", type=click.IntRange(1, 64), default=None, help="INSPYRENET_THREADS [default: every core].")
@click.option("--runs", type=click.IntRange(1, 50), default=5, show_default=True, help="Requests per size.")
@click.option("--prices", type=click.Path(dir_okay=False, path_type=Path), default=PRICES, help="Price list (JSON).")
@click.option("--vcpus", type=click.IntRange(1, 8), default=4, show_default=True, help="The service's vCPUs.")
@click.option("--memory-gib", type=click.FloatRange(0.5, 32), default=8.0, show_default=True)
@click.option(
    "--out", type=click.Path(file_okay=False, path_type=Path), default=Path("bench-results"), show_default=True
)
def bench_cpu_service(bundles, threads, runs, prices, vcpus, memory_gib, out) -> None:
    """The CPU backup service per mode: warm 12 MP and 1 MP latency, and what an image costs."""
    import os

    from rich.console import Console

    from pipeline.bench.cpu_service import markdown, run_cpu_service_bench
    from pipeline.costs import Prices
    from serving.bundle import load_bundle

    price_list = Prices.load(prices)
    for bundle in bundles:
        load_bundle(bundle, verify=False)  # a missing or broken bundle is one line, before any server starts
    with Console(stderr=True).status("starting") as status:
        report = run_cpu_service_bench(
            list(bundles), threads or os.cpu_count() or 1, runs, price_list, vcpus, memory_gib, out, status.update
        )
    click.echo(markdown(report))
    click.echo(f"written: {out / 'cpu-service.json'}")


@main.command()
@click.option("--prices", type=click.Path(dir_okay=False, path_type=Path), default=PRICES, help="Price list (JSON).")
@click.option("--images-per-day", type=click.IntRange(0), default=1000, show_default=True)
@click.option(
    "--business-hours", type=click.FloatRange(0, 24), default=11, show_default=True, help="Hours a day kept warm."
)
@click.option(
    "--cold-starts", type=click.FloatRange(0), default=5, show_default=True, help="Scale to zero: starts a day."
)
@click.option(
    "--idle-tail-s", type=click.FloatRange(0), default=900, show_default=True, help="Billed idle after a burst."
)
@click.option(
    "--cpu-report",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="bench-cpu-service's cpu-service.json: the CPU backup's seconds per image.",
)
@click.option("--mode", type=click.Choice(["fast", "base"]), default="fast", show_default=True)
@click.option("--size", type=click.Choice(["12mp", "1mp"]), default="12mp", show_default=True)
@click.option(
    "--l4-seconds-per-image",
    type=click.FloatRange(0, min_open=True),
    default=None,
    help="The L4's seconds per image (gpu-check's latency) [default: unknown].",
)
def costs(
    prices, images_per_day, business_hours, cold_starts, idle_tail_s, cpu_report, mode, size, l4_seconds_per_image
):
    """Dollars a day and per 1,000 images: always on, business hours, scale to zero, the CPU backup."""
    import json

    from pipeline.bench.cpu_service import median_seconds
    from pipeline.costs import Prices, Traffic, cost_rows, markdown

    cpu_seconds = None
    if cpu_report is not None:
        try:
            cpu_seconds = median_seconds(json.loads(cpu_report.read_text()), mode, size)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise UserError(f"cannot read {mode} {size} seconds from {cpu_report}: {exc}") from None
    traffic = Traffic(images_per_day, business_hours, cold_starts, idle_tail_s)
    rows = cost_rows(Prices.load(prices), traffic, cpu_seconds, l4_seconds_per_image)
    click.echo(markdown(rows, traffic))


@main.command("batch-bench")
@click.option(
    "--artifacts",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("artifacts/fast"),
    show_default=True,
    help="Bundle to run.",
)
@click.option("--backend", type=click.Choice(BACKEND_NAMES), default="onnxruntime", show_default=True)
@click.option("--images", "count", type=click.IntRange(1, 1000), default=24, show_default=True, help="Images per size.")
@click.option(
    "--size",
    "sizes",
    type=click.Choice(("1mp", "12mp")),
    multiple=True,
    default=("1mp",),
    show_default=True,
    help="Image size (repeatable).",
)
@click.option(
    "--cpu-lanes",
    "lanes",
    type=click.IntRange(1, 16),
    multiple=True,
    default=(1, 2),
    show_default=True,
    help="Batch runs to make, by --cpu-lanes (repeatable).",
)
@click.option(
    "--runs", type=click.IntRange(1, 9), default=3, show_default=True, help="Interleaved rounds; medians are compared."
)
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("bench-results"),
    show_default=True,
    help="Where batch.json goes.",
)
def batch_bench(
    artifacts: Path, backend: str, count: int, sizes: tuple[str, ...], lanes: tuple[int, ...], runs: int, out: Path
) -> None:
    """Throughput of `batch` against the same images sent one by one to `serve`, in one run."""
    from rich.console import Console

    from pipeline.bench.batch_bench import BATCH_BENCH_FILE, markdown, run_batch_bench
    from serving.bundle import load_bundle

    load_bundle(artifacts, verify=False)
    with Console(stderr=True).status("starting") as status:
        report = run_batch_bench(artifacts, backend, count, list(sizes), list(lanes), runs, out, status.update)
    click.echo(markdown(report))
    click.echo(f"written: {out / BATCH_BENCH_FILE}")


@main.command()
@click.argument("bundle_dir", type=click.Path(file_okay=False, path_type=Path))
@click.argument("destination", metavar="gs://BUCKET/PREFIX")
def publish(bundle_dir: Path, destination: str) -> None:
    """Upload a bundle to Cloud Storage under a version key; move PREFIX/latest to it."""
    from serving.store.bundles import publish as publish_bundle

    version, uploaded = publish_bundle(bundle_dir, destination, progress=lambda m: click.echo(m, err=True))
    click.echo(f"{'published' if uploaded else 'already published'}: {version}")


NOT_PUBLISHED = 3


@main.command()
@click.argument("bundle_dir", type=click.Path(file_okay=False, path_type=Path))
@click.argument("destination", metavar="gs://BUCKET/PREFIX")
def published(bundle_dir: Path, destination: str) -> None:
    """Exit 0 if DESTINATION already holds BUNDLE_DIR's version (any content), 3 if not, 1 on an error."""
    from serving.store.bundles import published_version

    version = published_version(bundle_dir, destination)
    if version is None:
        click.echo(f"not published under {destination}")
        sys.exit(NOT_PUBLISHED)
    click.echo(f"published: {version}")


if __name__ == "__main__":
    main()
