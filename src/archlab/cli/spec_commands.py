"""``arch validate``, ``arch compile``, ``arch graph``, ``arch schema``."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from archlab.cli.formatting import si
from archlab.cli.options import device_option
from archlab.specs import SpecError, json_schema, load_spec, spec_hash
from archlab.textsafe import printable

if TYPE_CHECKING:
    from rich.console import Console
    from rich.table import Table

    from archlab.compiler.summary import Summary

spec_argument = click.argument("spec", type=click.Path(dir_okay=False, path_type=Path))


@click.command()
@click.argument("specs", nargs=-1, required=True, type=click.Path(dir_okay=False, path_type=Path))
@click.option("-q", "--quiet", is_flag=True, help="Print only the problems.")
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="Print one JSON list on stdout: per SPEC its path, valid, spec_hash, nodes and errors "
    "(each with its JSON path and message).",
)
def validate(specs: tuple[Path, ...], quiet: bool, as_json: bool) -> None:
    """Check SPEC files: exit 0 when all are valid, else 2 with every problem and its JSON path.

    A valid spec whose float32 weights would not fit the memory available here is still valid
    (exit 0), with a warning that `arch compile` will refuse it unless given --max-params.
    Loads no torch: safe and fast in editors, pre-commit hooks and CI.
    """
    from archlab.compiler.memory import describe_need, host_memory
    from archlab.specs.analysis import analyze

    failed = 0
    results: list[dict[str, Any]] = []
    for path in specs:
        try:
            spec = load_spec(path)
        except SpecError as exc:
            failed += 1
            errors = [{"path": where, "message": message} for where, message in exc.errors]
            results.append({"path": str(path), "valid": False, "errors": errors})
            if not as_json:
                click.echo(exc.render(), err=True)
            continue
        digest = spec_hash(spec)
        results.append(
            {
                "path": str(path),
                "valid": True,
                "name": spec.name,
                "spec_hash": digest,
                "nodes": len(spec.nodes),
                "errors": [],
            }
        )
        too_large = describe_need(analyze(spec), 4, *host_memory())
        if too_large is not None:
            click.echo(
                f"warning: {printable(str(path))}: {too_large}; "
                "arch compile will refuse it (see --max-params)",
                err=True,
            )
        if not quiet and not as_json:
            click.echo(
                f"ok  {printable(str(path))}  ({len(spec.nodes)} nodes, spec_hash {digest[:12]})"
            )
    if as_json:
        click.echo(json.dumps(results, indent=2))
    if failed:
        if not as_json:
            click.echo(f"{failed} of {len(specs)} spec(s) invalid", err=True)
        sys.exit(2)


@click.command()
@click.option(
    "-o", "--output", type=click.Path(dir_okay=False, path_type=Path), help="Write to FILE."
)
def schema(output: Path | None) -> None:
    """Print the JSON Schema of the spec language (point a spec's "$schema" at it)."""
    text = json.dumps(json_schema(), indent=2) + "\n"
    if output is None:
        click.echo(text, nl=False)
    else:
        output.write_text(text)
        click.echo(f"wrote {printable(str(output))}")


@click.command()
@spec_argument
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    help="FILE.dot, .mmd, .svg or .png",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["dot", "mermaid", "svg", "png"]),
    help="Override the format.",
)
def graph(spec: Path, output: Path | None, fmt: str | None) -> None:
    """Draw SPEC's expanded graph (pruning shorthands shown as their stages).

    Without -o, prints DOT (or Mermaid with --format mermaid). SVG and PNG need Graphviz's
    `dot` program on PATH.
    """
    from archlab.compiler.render import format_for, render
    from archlab.specs.analysis import analyze

    chosen = format_for(output, fmt)
    data = render(analyze(load_spec(spec)), chosen)
    if output is None:
        if chosen in ("svg", "png"):
            raise click.UsageError("SVG and PNG are binary: give -o FILE")
        click.echo(data.decode(), nl=False)
    else:
        output.write_bytes(data)
        click.echo(f"wrote {printable(str(output))} ({chosen})")


@click.command(name="compile")
@spec_argument
@device_option("cpu", "cpu, cuda, cuda:N or auto (CUDA when there is one).")
@click.option(
    "--dtype",
    default="float32",
    show_default=True,
    help="float32, bfloat16, float16 or float64 weights.",
)
@click.option(
    "--json", "as_json", is_flag=True, help="Print the summary as JSON (params, flops, nodes, ...)."
)
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Save weights (safetensors, spec embedded).",
)
@click.option("--show-code", is_flag=True, help="Print the generated forward().")
@click.option(
    "--batch",
    default=2,
    show_default=True,
    type=click.IntRange(min=1),
    help="Batch of the test forward pass.",
)
@click.option("--no-forward", is_flag=True, help="Skip the forward pass on generated inputs.")
@click.option("--seed", default=0, show_default=True, type=int, help="Seed of the initial weights.")
@click.option(
    "--attention-kernel",
    type=click.Choice(["sdpa", "sdpa_mask", "flex", "reference"]),
    help="Force one softmax attention kernel wherever it can run (default: chosen per layer).",
)
@click.option(
    "--max-params",
    type=click.IntRange(min=0),
    metavar="N",
    help="Build models of up to N parameters whatever memory is free now "
    "(default: refuse a model whose weights exceed the memory available).",
)
@click.option(
    "--freeze",
    is_flag=True,
    help="Freeze the model for inference (CompiledModel.freeze): on the CPU, linears packed for "
    "oneDNN with bias and activation fused; on CUDA, bfloat16 weights and torch.compile. The "
    "paths table says what was done, or why not; -o saves the same weights either way.",
)
def compile_command(
    spec: Path,
    device: str,
    dtype: str,
    as_json: bool,
    output: Path | None,
    show_code: bool,
    batch: int,
    no_forward: bool,
    seed: int,
    attention_kernel: str | None,
    max_params: int | None,
    freeze: bool,
) -> None:
    """Build SPEC into a PyTorch module and report what was built.

    Prints every node's output shape, parameters, FLOPs (a multiply-add counts 2) and MACs, the
    attention kernels chosen and why, then runs a forward pass on random inputs of the declared
    shapes and reports the outputs.

    A model whose weights would not fit the memory available (the host's MemAvailable, or the
    CUDA device's free memory) is refused before anything is allocated, as is a forward pass
    too large for it; --max-params N allows up to N parameters instead.
    """
    import torch

    from archlab.compiler.memory import check_forward
    from archlab.compiler.model import compile_spec

    loaded = load_spec(spec)
    started = time.perf_counter()
    model = compile_spec(
        loaded,
        device=device,
        dtype=dtype,
        seed=seed,
        attention_kernel=attention_kernel,
        max_params=max_params,
    )
    if freeze:
        model.freeze()
    build_s = time.perf_counter() - started
    summary = model.summary()
    forward: dict[str, Any] = {}
    if not no_forward:
        first = next(model.parameters(), None)
        if first is not None:
            check_forward(model.graph, batch, first.device, first.element_size())
        model.eval()
        inputs = model.example_inputs(batch=batch, seed=seed)
        started = time.perf_counter()
        with torch.inference_mode():
            out = model(**inputs)
        forward = {
            "inputs": {k: list(v.shape) for k, v in inputs.items()},
            "outputs": {
                k: list(v.shape)
                for k, v in (out.items() if isinstance(out, dict) else [(loaded.outputs[0], out)])
            },
            "seconds": time.perf_counter() - started,
        }
    if output is not None:
        model.save(output)
    if as_json:
        doc = summary.to_dict()
        if forward:
            doc["forward"] = forward
        click.echo(json.dumps(doc, indent=2))
        return
    _print_summary(summary, build_s, forward, output)
    if show_code:
        from rich.console import Console
        from rich.syntax import Syntax

        Console().print(Syntax(model.code, "python", theme="ansi_dark", line_numbers=False))


_PLACEMENT = {
    "before": "before its layer",
    "inside": "after attention",
    "between": "between nodes",
}


def _print_summary(
    summary: Summary, build_s: float, forward: dict[str, Any], output: Path | None
) -> None:
    """What ``arch compile`` prints: the node table and totals, the pruning stages, the paths and
    attention kernels chosen, the forward pass and where the model was saved."""
    from rich.console import Console
    from rich.markup import escape

    console = Console()
    console.print(_node_table(summary))
    console.print(
        f"[bold]params[/] {summary.params:,} ({si(summary.params)})   "
        f"[bold]FLOPs[/] {si(summary.flops)} per sample (multiply-add = 2)   "
        f"[bold]MACs[/] {si(summary.macs)}   "
        f"[bold]weights[/] {summary.weight_bytes / 2**20:.1f} MiB {summary.dtype} on {summary.device}   "
        f"built in {build_s:.2f} s"
    )
    if summary.pruning:
        _print_pruning(console, summary)
    _print_choices(console, summary)
    if forward:
        ins = ", ".join(f"{k} {tuple(v)}" for k, v in forward["inputs"].items())
        outs = ", ".join(f"{k} {tuple(v)}" for k, v in forward["outputs"].items())
        console.print(f"forward pass ok in {forward['seconds'] * 1000:.1f} ms: {ins} -> {outs}")
    if output is not None:
        saved = escape(printable(str(output)))
        console.print(f"saved weights and spec to {saved} (archlab.load_compiled)")


def _node_table(summary: Summary) -> Table:
    """Every node's output shape, parameters, FLOPs, MACs and attention kernel."""
    from rich.markup import escape
    from rich.table import Table

    table = Table(
        title=f"{escape(printable(summary.name or 'spec'))}  (spec_hash {summary.spec_hash[:12]})",
        title_justify="left",
    )
    for col, justify in (
        ("node", "left"),
        ("op", "left"),
        ("output", "left"),
        ("params", "right"),
        ("FLOPs", "right"),
        ("MACs", "right"),
        ("kernel", "left"),
    ):
        table.add_column(col, justify=justify)  # type: ignore[arg-type]
    for row in summary.nodes:
        shape = "(" + ", ".join(map(str, row.shape)) + ")"
        table.add_row(
            row.id,
            row.op,
            shape,
            si(row.params),
            si(row.flops),
            si(row.macs),
            row.kernel or "",
        )
    return table


def _print_pruning(console: Console, summary: Summary) -> None:
    """The token pruning stages and the FLOPs they save."""
    from rich.table import Table

    stages = Table(title="token pruning", title_justify="left", show_lines=False)
    for col, justify in (
        ("stage", "left"),
        ("method", "left"),
        ("acts", "left"),
        ("tokens in", "right"),
        ("tokens out", "right"),
        ("patches kept", "right"),  # of the patches entering the model
    ):
        stages.add_column(col, justify=justify)  # type: ignore[arg-type]
    for st in summary.pruning:
        stages.add_row(
            st["id"],
            st["method"],
            _PLACEMENT[st["placement"]],
            str(st["tokens_before"]),
            str(st["tokens_after"]),
            f"{st['kept_of_original']:.1%}",
        )
    console.print(stages)
    assert summary.dense_flops is not None and summary.flops_saved is not None
    console.print(
        f"[bold]pruning saves[/] {summary.flops_saved:.1%} of the FLOPs: "
        f"{si(summary.flops)} per sample against {si(summary.dense_flops)} without the "
        f"stages ({summary.dense_flops / max(summary.flops, 1):.2f}x fewer)"
    )


def _print_choices(console: Console, summary: Summary) -> None:
    """The performance paths and attention kernels chosen, each with why."""
    from rich.table import Table

    if summary.paths:
        paths = Table(title="performance paths", title_justify="left", show_lines=False)
        for col in ("path", "choice", "modules", "why"):
            paths.add_column(col)
        for p in summary.paths:
            paths.add_row(p["name"], p["choice"], str(p["count"]), p["reason"])
        console.print(paths)
    if summary.kernels:
        kernels = Table(title="attention kernels", title_justify="left", show_lines=False)
        for col in ("node", "kernel", "layers", "why"):
            kernels.add_column(col)
        for k in summary.kernels:
            kernels.add_row(k["node"], k["kernel"], k["layers"], k["reason"])
        console.print(kernels)


COMMANDS = [validate, compile_command, graph, schema]
