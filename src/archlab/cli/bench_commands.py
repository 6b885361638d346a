"""``arch bench``: latency, throughput and peak memory of a spec, recorded as a ``bench`` run."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from archlab.cli.formatting import si
from archlab.cli.options import device_option, registry_option, threads_option
from archlab.jsonpolicy import jsonable

if TYPE_CHECKING:
    from archlab.runners.benchmark import BenchReport

_WHOLE = re.compile(r"^[+-]?\d+$")


class _BatchesCommand(click.Command):
    """Lets ``--batch`` take several values, ``--batch 1 8 64``, as click options cannot: the
    numbers after it are rewritten as ``--batch 1 --batch 8 --batch 64`` before parsing."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        out: list[str] = []
        taking = False  # after --batch, while numbers follow
        taken = 0  # numbers taken since that --batch
        for i, arg in enumerate(args):
            if arg == "--":  # the rest is positional
                out += args[i:]
                break
            if taking and _WHOLE.match(arg):
                out += ["--batch", arg]
                taken += 1
                continue
            if taking and not taken:
                out.append("--batch")  # no number after it: click says what is missing
            taking, taken = arg == "--batch", 0
            if not taking:
                out.append(arg)
        else:
            if taking and not taken:
                out.append("--batch")
        return super().parse_args(ctx, out)


@click.command("bench", cls=_BatchesCommand)
@click.argument("spec", type=click.Path(dir_okay=False, path_type=Path))
@device_option("auto", "auto (CUDA when there is one), cpu, cuda or cuda:N.")
@threads_option
@click.option("--dtype", type=click.Choice(["float32", "bfloat16", "float16"]), default="float32",
              show_default=True, help="The weights' dtype (no autocast).")  # fmt: skip
@click.option("--batch", "batches", type=int, multiple=True, metavar="N ...",
              help="Batch sizes, one row each: --batch 1 8 64 [default: 1].")  # fmt: skip
@click.option("--seq", type=int, metavar="T",
              help="Length of every sequence input [default: its max_len].")  # fmt: skip
@click.option("--mode", type=click.Choice(["infer", "train"]), default="infer", show_default=True,
              help="infer: a forward pass (eval, inference_mode); train: forward, loss, "
              "backward and an AdamW step.")  # fmt: skip
@click.option("--compile", "compile_model", is_flag=True, help="torch.compile the module.")
@click.option("--cuda-graphs", is_flag=True,
              help="Capture the forward as a CUDA graph and replay it (CUDA, infer mode); with "
              "--compile: torch.compile(mode='reduce-overhead').")  # fmt: skip
@click.option("--freeze", is_flag=True,
              help="Measure the model frozen for inference (CompiledModel.freeze): oneDNN packed "
              "linears on the CPU; bfloat16 weights and torch.compile on CUDA (infer mode).")  # fmt: skip
@click.option("--warmup", type=int, metavar="N",
              help="Untimed calls per batch size; the first pays for torch.compile and CUDA graph "
              "capture [default: 3 on the CPU, 10 on CUDA].")  # fmt: skip
@click.option("--iters", type=int, metavar="N",
              help="Timed calls per batch size [default: 10 on the CPU, 30 on CUDA].")  # fmt: skip
@click.option("--no-record", is_flag=True, help="Do not record a bench run in the registry.")
@registry_option
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def bench(
    spec: Path,
    device: str,
    dtype: str,
    batches: tuple[int, ...],
    seq: int | None,
    mode: str,
    compile_model: bool,
    cuda_graphs: bool,
    freeze: bool,
    warmup: int | None,
    iters: int | None,
    no_record: bool,
    registry_url: str | None,
    as_json: bool,
    threads: int | None,
) -> None:
    """Measure SPEC's latency, throughput and peak memory at each batch size.

    Builds SPEC (seed 0) on the device in the weights' dtype, then per batch size runs --warmup
    untimed and --iters timed calls on random inputs and reports the median latency (p10 - p90),
    samples/s (and tokens/s for sequence inputs) and peak memory, with the device, versions,
    params, FLOPs and the performance paths used (dtype, compile, CUDA graphs, attention
    kernels). Recorded as a bench run (arch runs list --where "kind == 'bench'") unless
    --no-record.

    \b
    arch bench specs/vit-tiny-digits.json --batch 1 64
    arch bench specs/gpt-tiny.json --seq 128 --batch 1 8 --mode train
    arch bench specs/vit-base-16.json --device cuda --dtype bfloat16 --batch 1 256 --compile
    arch bench specs/bert-base.json --device cpu --seq 128 --batch 8 --freeze
    """
    from archlab.registry import Registry
    from archlab.runners.benchmark import benchmark, record_bench
    from archlab.runners.threads import configure_threads

    configure_threads(threads)
    report = benchmark(
        spec,
        device=device,
        dtype=dtype,
        batches=batches or (1,),
        seq=seq,
        mode=mode,
        compile=compile_model,
        cuda_graphs=cuda_graphs,
        warmup=warmup,
        iters=iters,
        freeze=freeze,
    )
    run_id = None
    if not no_record:
        with Registry(registry_url) as registry:
            run_id = record_bench(report, registry)
    if as_json:
        click.echo(json.dumps(jsonable({**report.to_dict(), "run": run_id}), indent=2))
        return
    _print_report(report)
    if run_id is not None:
        click.echo(f"recorded bench run {run_id} (arch runs show {run_id})")


def _ms(value: float) -> str:
    return f"{value:.3f}" if value < 10 else f"{value:.1f}"


def _print_report(report: BenchReport) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    what = "training step (forward, backward, AdamW)" if report.mode == "train" else "forward"
    seq = f", seq {report.seq}" if report.seq is not None else ""
    table = Table(
        title=f"{report.name}: {what}, {report.dtype}, {report.device}{seq}",
        title_justify="left",
        show_edge=False,
        pad_edge=False,
    )
    tokens = any(row.tokens_per_s is not None for row in report.rows)
    # latencies in ms: the median, 10th and 90th percentiles, and the first warm-up call
    columns = ["batch", "median ms", "p10", "p90", "samples/s"]
    columns += ["tokens/s"] if tokens else []
    columns += ["peak MiB", "first ms"]
    for col in columns:
        table.add_column(col, justify="right")
    for row in report.rows:
        cells = [str(row.batch), _ms(row.median_ms), _ms(row.p10_ms), _ms(row.p90_ms)]
        cells.append(si(row.samples_per_s))
        if tokens:
            cells.append(si(row.tokens_per_s) if row.tokens_per_s is not None else "n/a")
        cells.append(f"{row.peak_mem_mb:.1f}" if row.peak_mem_mb is not None else "n/a")
        cells.append(_ms(row.first_ms) if row.first_ms is not None else "")
        table.add_row(*cells)
    console.print(table)
    compiled = f"torch.compile ({report.compile_mode})" if report.compile else "eager"
    graphs = "CUDA graphs" if report.cuda_graphs else "no CUDA graphs"
    threads = f", {report.threads} CPU threads" if report.device == "cpu" else ""
    versions = ", ".join(f"{name} {version}" for name, version in report.versions.items())
    console.print(
        f"[bold]device[/] {report.device} ({report.device_name}){threads}   "
        f"[bold]versions[/] {versions}"
    )
    console.print(
        f"[bold]params[/] {report.params:,} ({si(report.params)})   [bold]FLOPs[/] "
        f"{si(report.flops)} per sample (forward, declared lengths)   "
        f"[bold]spec_hash[/] {report.spec_hash[:12]}"
    )
    console.print(f"[bold]paths[/] {report.dtype} weights, {compiled}, {graphs}")
    if report.frozen is not None:
        console.print(f"[bold]frozen[/] {_frozen_line(report.frozen)}")
    for k in report.kernels:
        console.print(
            f"[bold]attention[/] {k['node']}: {k['kernel']} x{k['layers']} ({k['reason']})"
        )
    console.print(
        f"[bold]timing[/] {report.warmup} warm-up + {report.iters} timed calls per batch size   "
        f"[bold]peak mem[/] {report.memory}"
    )


def _frozen_line(frozen: dict[str, Any]) -> str:
    """What freezing did, in one line: packed and fused linears, and why any were left."""
    parts = []
    if frozen["packed"]:
        parts.append(f"{frozen['packed']} linears packed for oneDNN ({frozen['fused']} fused with "
                     "their activation)")  # fmt: skip
    parts += [f"{n} linears unpacked: {reason}" for reason, n in frozen["unpacked"].items()]
    if frozen["dtype_after"] != frozen["dtype_before"]:
        parts.append(f"weights cast {frozen['dtype_before']} -> {frozen['dtype_after']}")
    return "; ".join(parts) or "nothing to pack"


COMMANDS = [bench]
