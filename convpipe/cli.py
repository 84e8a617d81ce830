"""The ``convpipe`` command line: a thin Typer layer over the library.

User mistakes and storage refusals (:class:`~convpipe.errors.ConvpipeError`)
become one line on stderr and the error's exit code (2, or 1 when the
storage refused); anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated

import typer

from convpipe.errors import ConvpipeError

app = typer.Typer(
    name="convpipe",
    help="Exact strided valid cross-correlation of kernel banks over image stacks, Zarr to Zarr.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
)

INTERRUPTED = 130


@contextlib.contextmanager
def user_errors() -> Iterator[None]:
    """One line on stderr for a ConvpipeError, and its exit code; anything else keeps its traceback."""
    try:
        yield
    except ConvpipeError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(exc.exit_code) from None


def _version(value: bool) -> None:
    if value:
        from convpipe import __version__

        typer.echo(f"convpipe {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: Annotated[
        bool | None,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit."),
    ] = None,
) -> None:
    """convpipe: kernel banks over image stacks larger than memory."""


ConfigArg = Annotated[Path, typer.Argument(help="YAML config file.", show_default=False)]


@app.command()
def run(
    config: ConfigArg,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing output.")] = False,
    scheduler: Annotated[
        str | None,
        typer.Option(
            "--scheduler",
            help="Override compute.scheduler: threads, processes, synchronous, local or tcp://HOST:PORT.",
        ),
    ] = None,
    resume: Annotated[
        bool, typer.Option("--resume", help="Finish an interrupted run: compute only the missing blocks.")
    ] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar and no summary.")] = False,
) -> None:
    """Run the config: read the input, correlate every block, write the output Zarr."""
    from convpipe.planner import plan as make_plan
    from convpipe.runner import resume_command
    from convpipe.runner import run as run_plan

    with user_errors():
        plan = make_plan(config)
        try:
            summary = run_plan(
                plan, overwrite=overwrite, resume=resume, scheduler=scheduler, progress=not quiet
            )
        except KeyboardInterrupt:
            command = resume_command(plan, scheduler)
            typer.echo(f"interrupted; finished blocks are kept. Resume with: {command}", err=True)
            raise typer.Exit(INTERRUPTED) from None
    if not quiet:
        typer.echo(summary.line(), err=True)


@app.command()
def validate(config: ConfigArg) -> None:
    """Check the config and the input without computing; print the resolved plan."""
    from convpipe.planner import plan as make_plan

    with user_errors():
        plan = make_plan(config)
    typer.echo(str(plan))
    for warning in plan.warnings:
        typer.echo(f"warning: {warning}", err=True)
    typer.echo("ok: the config is valid")


@app.command()
def kernels() -> None:
    """List the built-in kernel banks with their weights and orientation."""
    from convpipe.kernels import BANK_ORIENTATION, BUILTIN_BANKS

    for name, bank in BUILTIN_BANKS.items():
        kh, kw = bank.kernel_shape
        typer.echo(f"{name}  ({len(bank.names)} x {kh}x{kw})  {BANK_ORIENTATION[name]}")
        for kernel_name, weights in zip(bank.names, bank.weights[:, 0]):
            rows = ["[" + ", ".join(f"{v:g}" for v in row) + "]" for row in weights]
            typer.echo(f"  {kernel_name:<12} [{', '.join(rows)}]")


@app.command()
def inspect(
    path: Annotated[str, typer.Argument(help="Zarr array or group (a convpipe output or any Zarr).")],
    array: Annotated[str | None, typer.Option("--array", help="Array inside a group.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
    storage_option: Annotated[
        list[str] | None,
        typer.Option(
            "--storage-option",
            help="fsspec option of a URL PATH, KEY=VALUE (repeatable): "
            "endpoint_url=http://host:9000, anon=true...",
        ),
    ] = None,
) -> None:
    """Shape, dims, dtype, chunks, codec, size, completeness and provenance of a Zarr array."""
    from convpipe.inspection import format_report, inspect_report, report_json
    from convpipe.paths import local_path, storage_options_from_assignments

    try:
        options = storage_options_from_assignments(storage_option or [])
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--storage-option") from None
    if options and local_path(path) is not None:
        message = f"applies to URLs only (s3://...), but {path} is a local path"
        raise typer.BadParameter(message, param_hint="--storage-option")
    with user_errors():
        report = inspect_report(path, array, options)
    typer.echo(report_json(report) if as_json else format_report(report))


@app.command()
def ingest(
    source: Annotated[str, typer.Argument(help="Image folder, glob ('frames/*.png') or multi-page TIFF.")],
    dest: Annotated[str, typer.Argument(help="Zarr store to create (a group with the stack at '0').")],
    chunks: Annotated[
        str | None, typer.Option("--chunks", help="Chunk shape, e.g. 1,1024,1024 (default: one frame).")
    ] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing DEST.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
) -> None:
    """Convert image files into a chunked Zarr stack, so that runs read Zarr."""
    from convpipe.ingest import ingest as ingest_images
    from convpipe.ingest import parse_chunks_text

    with user_errors():
        shape = parse_chunks_text(chunks)
        array = ingest_images(source, dest, chunks=shape, overwrite=overwrite, progress=not quiet)
    if not quiet:
        typer.echo(f"wrote {array.shape} {array.dtype} chunks {array.chunks} -> {dest}", err=True)


@app.command()
def preview(
    path: Annotated[str, typer.Argument(help="Zarr array/group or image source to render.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="PNG file to write.")],
    index: Annotated[
        int | None, typer.Option("--index", "-i", help="Frame along the first axis (default: middle).")
    ] = None,
    channel: Annotated[int | None, typer.Option("--channel", "-c", help="Channel / kernel to show.")] = None,
    compare: Annotated[
        str | None, typer.Option("--compare", help="Second source shown side by side (e.g. the input).")
    ] = None,
    array: Annotated[str | None, typer.Option("--array", help="Array inside a group (default '0').")] = None,
) -> None:
    """Render one frame to an 8-bit PNG with robust (percentile) contrast."""
    from convpipe.preview import write_preview

    with user_errors():
        written = write_preview(path, output, index=index, channel=channel, compare_with=compare, array=array)
    typer.echo(f"wrote {written}", err=True)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())
