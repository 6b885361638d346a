"""archlab's compiled zoo specs against the models people would otherwise use, in one process.

    python bench/peers.py [--mode infer train] [--device cpu|cuda] [--dtype float32|bfloat16]
        [--autocast] [--batch N] [--seq T] [--compile] [--freeze] [--only NAME ...] [--quick]
        [--iters N] [--warmup N] [--threads N] [--profile] [--json PATH]

Workloads (``--only`` picks some; each is an archlab spec and a peer of the same shape):

- ``vit-s16``: ``specs/deit-small-16.json`` against timm ``vit_small_patch16_224`` (with the
  spec's stochastic depth, ``drop_path_rate=0.1``);
- ``vit-b16``: ``specs/vit-base-16.json`` against timm ``vit_base_patch16_224``;
- ``bert-base``: ``specs/bert-base.json`` without its classifier against HF ``BertModel`` (sdpa, no
  pooler), both given the padding mask a tokenizer gives (all real tokens);
- ``gpt2-small``: ``specs/gpt2-small.json`` (with its tied LM head) against HF
  ``GPT2LMHeadModel`` (sdpa, ``use_cache=False``);
- ``encoder-deit-s``: the DeiT-S encoder stack alone (12 pre-norm layers of width 384, 6 heads,
  197 tokens, no stochastic depth) against ``nn.TransformerEncoder`` (``norm_first=True``);
- ``encoder-bert``: a BERT-base encoder stack (12 post-norm layers of width 768, 12 heads, no
  dropout) against ``nn.TransformerEncoder`` (``norm_first=False``).

The ``nn.TransformerEncoder`` peers are built with ``batch_first=True``, ``enable_nested_tensor``
and GELU, so in eval under ``torch.inference_mode`` they take PyTorch's fast path
(``torch._transformer_encoder_layer_fwd``). The timm rows need timm and a torchvision built for
the installed torch (install them yourself: pip would otherwise swap a CPU torch for a CUDA one),
the HF rows transformers (``pip install -e .[bench]``); a row whose peer does not import is
skipped with a note.

Weights: each peer gets the archlab model's (seeded, random) weights copied in, and the two are
run once in float32, eval, on a small input of the same kind; the ``outputs`` column says
``outputs match`` when the largest difference is within 1e-4 (relative to the output's scale),
else the difference. Only then are both cast to ``--dtype`` for timing.

Frozen rows (``--freeze``, the way to measure ``CompiledModel.freeze()`` against the peers): in
``infer`` mode each workload also gets a frozen copy of the archlab model (a deep copy of the same
build, then ``.freeze()``: on the CPU in float32 its linears packed for oneDNN with bias and
activation fused; with ``--compile`` inductor's freezing instead; on CUDA bfloat16 and compiled),
its outputs checked against the peer's like the unfrozen model's, and the three callables
(archlab, archlab frozen, peer) are timed in the same rounds. The table gains ``frozen ms``,
``frozen ratio`` (peer time over frozen time), ``frozen paired`` and ``frozen gain`` (archlab
time over frozen time); the JSON rows the same ``frozen_*`` fields and the ``FreezeReport``. When
a peer does not import, its workload still gets a row of archlab frozen against archlab, the
frozen outputs checked against the unfrozen model's. Training rows are never frozen. The usual
command: ``python bench/peers.py --freeze --mode infer --only encoder-bert encoder-deit-s
bert-base vit-s16``.

Modes: ``infer`` times one forward call in eval under ``torch.inference_mode``; ``train`` one
training step in train mode (dropout and stochastic depth as each model has them): zero the
gradients, forward, a loss (cross-entropy on the classes or next tokens, mean squared error on
hidden states), backward, and an AdamW step (fused on CUDA); the same for the peer.

Timing: warm-up calls of each side, then rounds that time one call of each, the order rotated
from round to round (alternating, with two sides), so that a noisy, shared machine slows both alike; the table shows medians. On
CUDA each call is timed with CUDA events after a synchronisation. ``ratio`` is peer time over
archlab time (of the medians): above 1.0, archlab is faster. ``paired`` is the median over rounds
of the two calls' ratio within a round, which a machine that is busy for a while (other jobs)
disturbs less; ``spread`` is the larger of the two sides' (max - min) / median: a spread far
above 10% on the CPU says other processes were competing for the cores, and the medians (and
``ratio``) are unreliable where they differ from ``paired``.

Defaults: float32 on the CPU, bfloat16 weights (no autocast) on CUDA (``--autocast``: float32
weights under bfloat16 autocast, as some of the anchors). Sizes on the CPU: images batch 8,
text 8 x 128, encoders batch 8 (DeiT-S encoder 197 tokens); on CUDA those of
``../shared/anchors.md``: ViT batch 256 (128 for training), GPT-2 16 x 1024, DeiT-S encoder 256 x
197, BERT 32 x 512. ``--batch`` and ``--seq`` override every workload (images keep their 197
tokens). Calls: on the CPU 2 warm-up + 10 timed per model in inference, 2 + 6 in training; on
CUDA 10 + 30 and 5 + 20. ``--quick``: batch 2, sequences of 32, 1 + 2 calls (a smoke test).

The CPU targets (float32 inference): every encoder spec at least 1.0x ``nn.TransformerEncoder``
with its fast path, the GPT-2 spec at least 1.0x HF GPT-2, and (with ``--freeze``) the frozen
encoders at least 1.5x the fast path.

Not a test: nothing here asserts a time. Results go to bench/RESULTS.md by hand, with the machine.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

import archlab
from peers_workloads import (
    MAX_SEQ,
    WORKLOADS,
    Inputs,
    Pair,
    Workload,
    build_pair,
    peer_version,
)
from prune_bench import (
    busy_warning,
    call_seconds,
    device_name,
    load_before,
    loadavg,
    synchronize,
)

MODES = ("infer", "train")

# GPU figures of the peers, from ../shared/anchors.md (one H100 80GB HBM3, PyTorch 2.11 + CUDA 13,
# medians of 20-30 calls, CUDA events): printed on CUDA for context, next to this run's own rows.
ANCHORS: dict[str, list[tuple[str, str]]] = {
    "vit-s16": [
        ("timm vit_small_patch16_224, batch 256, bf16 weights, eager", "22,890 img/s"),
        ("same, fp32 weights + bf16 autocast, eager", "17,566 img/s"),
        ("same, bf16 weights, torch.compile", "25,605 img/s"),
        ("timm ViT-S/16 training step, batch 128, autocast, fused AdamW", "4,710 img/s"),
    ],
    "vit-b16": [("timm vit_base_patch16_224, batch 256, autocast, eager", "8,387 img/s")],
    "gpt2-small": [
        ("HF GPT-2 small, 16 x 1024, sdpa, autocast, inference", "379,202 tok/s"),
        ("same, training step, fused AdamW", "128,119 tok/s"),
        ("same training step under torch.compile", "284,505 tok/s"),
    ],
    "encoder-deit-s": [
        (
            "nn.TransformerEncoder 12 x 384, 6 heads, seq 197, batch 256, fp16 (fast path)",
            "30,250 seq/s",
        )
    ],
}


# ------------------------------------------------------------------------------------- timing


@dataclass
class Row:
    mode: str
    key: str
    workload: str
    peer: str
    shape: str
    unit: str
    items: int  # images, tokens or sequences per call
    archlab_ms: float = 0.0
    peer_ms: float = 0.0
    ratio: float = 0.0
    paired: float = 0.0  # median over rounds of peer / archlab within the round
    archlab_per_s: float = 0.0
    peer_per_s: float = 0.0
    outputs: str = ""
    archlab_spread: float = 0.0
    peer_spread: float = 0.0
    archlab_times_s: list[float] = field(default_factory=list)
    peer_times_s: list[float] = field(default_factory=list)
    # with --freeze, in inference: the frozen archlab model, timed in the same rounds
    frozen_ms: float | None = None
    frozen_ratio: float | None = None  # peer / frozen (of the medians)
    frozen_paired: float | None = None  # median over rounds of peer / frozen
    frozen_gain: float | None = None  # archlab / frozen (of the medians): what freezing gains
    frozen_per_s: float | None = None
    frozen_outputs: str = ""
    frozen_spread: float = 0.0
    frozen_times_s: list[float] = field(default_factory=list)
    frozen_report: dict[str, Any] | None = None  # FreezeReport.to_dict()


def sizes(w: Workload, args: argparse.Namespace, mode: str) -> tuple[int, int]:
    if args.quick:
        batch, seq = 2, 32 if w.kind != "image" else 197
    elif args.device == "cuda":
        batch, seq = w.cuda
        if mode == "train" and w.cuda_train_batch is not None:
            batch = w.cuda_train_batch
    else:
        batch, seq = w.cpu
    batch = args.batch or batch
    if args.seq and w.kind != "image":
        seq = args.seq
    return batch, seq


def calls(args: argparse.Namespace, mode: str) -> tuple[int, int]:
    if args.quick:
        warmup, iters = 1, 2
    elif args.device == "cuda":
        warmup, iters = (10, 30) if mode == "infer" else (5, 20)
    else:
        warmup, iters = (2, 10) if mode == "infer" else (2, 6)
    return (args.warmup if args.warmup is not None else warmup), args.iters or iters


Side = tuple[str, Callable[[], Any]]  # (name, one call)


def steps(pair: Pair, args: argparse.Namespace, mode: str, inputs: Inputs) -> list[Side]:
    """The callables to time: a forward (infer) or a training step (train) of archlab, of the
    frozen archlab model (infer, with --freeze) and of the peer, in that order."""
    autocast: Callable[[], contextlib.AbstractContextManager[Any]] = (
        (lambda: torch.autocast(args.device, dtype=torch.bfloat16))
        if args.autocast
        else contextlib.nullcontext
    )
    sides = [("archlab", pair.ours, pair.call_ours)]
    if not pair.peerless:
        sides.append(("peer", pair.peer, pair.call_peer))
    if mode == "infer" and pair.frozen is not None:
        sides.insert(1, ("frozen", pair.frozen, pair.call_ours))
    made: list[Side] = []
    for name, module, call in sides:
        # the frozen model was compiled by freeze() itself where --compile asked for it
        run = torch.compile(module) if args.compile and name != "frozen" else module
        if mode == "infer":
            module.eval()

            def forward(run: Any = run, call: Any = call) -> Any:
                with autocast():
                    return call(run, inputs)

            made.append((name, forward))
            continue
        module.train()
        opt = torch.optim.AdamW(module.parameters(), lr=1e-4, fused=args.device == "cuda")

        def step(run: Any = run, call: Any = call, opt: Any = opt) -> Any:
            opt.zero_grad(set_to_none=True)
            with autocast():
                loss = pair.loss(call(run, inputs), inputs)
            loss.backward()
            opt.step()
            return loss

        made.append((name, step))
    return made


@contextlib.contextmanager
def grad_mode(mode: str) -> Iterator[None]:
    with torch.inference_mode() if mode == "infer" else contextlib.nullcontext():
        yield


def time_sides(
    sides: list[Side], mode: str, warmup: int, iters: int, device: str
) -> dict[str, list[float]]:
    """Warm every side up, then time them in rounds, one call each, the order rotated by one
    side from round to round (alternating, for two); seconds per call by side."""
    times: dict[str, list[float]] = {name: [] for name, _ in sides}
    with grad_mode(mode):
        for _ in range(max(1, warmup)):
            for _, fn in sides:
                fn()
                synchronize(device)
        for it in range(iters):
            shift = it % len(sides)
            for name, fn in sides[shift:] + sides[:shift]:
                times[name].append(call_seconds(lambda _, fn=fn: fn(), None, device))
    return times


def profile_sides(pair: Pair, sides: list[Side], mode: str, label: str, device: str) -> None:
    """torch.profiler's top operators by self time of one call of each side."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU]
    sort = "self_cpu_time_total"
    if device == "cuda":
        activities.append(ProfilerActivity.CUDA)
        sort = "self_cuda_time_total"
    names = {"archlab": "archlab", "frozen": "archlab frozen", "peer": pair.peer_label}
    for side, fn in sides:
        with grad_mode(mode):
            fn()
            synchronize(device)
            with profile(activities=activities) as prof:
                fn()
                synchronize(device)
        print(f"\n### profile ({mode}): {label}, {names[side]}, one call\n")
        print(prof.key_averages().table(sort_by=sort, row_limit=15))


def make_row(
    w: Workload, pair: Pair, mode: str, shape: str, items: int, times: dict[str, list[float]]
) -> Row:
    """The row of one workload and mode from the seconds per call of each side (a row without a
    peer keeps 0 in the peer's columns)."""
    a, b = times["archlab"], times.get("peer", [])
    ma = statistics.median(a)
    row = Row(
        mode=mode,
        key=w.key,
        workload=w.label,
        peer=pair.peer_label,
        shape=shape,
        unit=w.unit,
        items=items,
        archlab_ms=ma * 1e3,
        archlab_per_s=items / ma,
        outputs=pair.match,
        archlab_spread=(max(a) - min(a)) / ma,
        archlab_times_s=a,
    )
    if b:
        mb = statistics.median(b)
        row.peer_ms, row.ratio, row.peer_per_s = mb * 1e3, mb / ma, items / mb
        row.paired = statistics.median(y / x for x, y in zip(a, b, strict=True))
        row.peer_spread, row.peer_times_s = (max(b) - min(b)) / mb, b
    f = times.get("frozen")
    if f:
        mf = statistics.median(f)
        row.frozen_ms, row.frozen_gain, row.frozen_per_s = mf * 1e3, ma / mf, items / mf
        if b:
            row.frozen_ratio = statistics.median(b) / mf
            row.frozen_paired = statistics.median(y / x for x, y in zip(f, b, strict=True))
        row.frozen_outputs = pair.frozen_match
        row.frozen_spread = (max(f) - min(f)) / mf
        row.frozen_times_s = f
        row.frozen_report = pair.frozen_report
    return row


def run_workload(w: Workload, args: argparse.Namespace, peerless: str | None = None) -> list[Row]:
    """Build the workload's pair (and frozen copy), time it in each mode; its rows. ``peerless``:
    why the peer is missing; then only the frozen copy against archlab's, in inference."""
    modes = ["infer"] if peerless is not None else args.mode
    seqs = {sizes(w, args, m)[1] for m in modes}
    if max(seqs) > MAX_SEQ.get(w.key, max(seqs)):
        sys.exit(f"{w.label}: --seq {max(seqs)} is longer than its {MAX_SEQ[w.key]} positions")
    freeze = args.freeze and "infer" in args.mode
    pair = build_pair(w, args, max(seqs), freeze=freeze, peerless=peerless)
    if pair.frozen_report is not None:
        print(f"# {w.label}: frozen {frozen_note(pair.frozen_report)}", flush=True)
    rows = []
    for mode in modes:
        batch, seq = sizes(w, args, mode)
        warmup, iters = calls(args, mode)
        inputs = pair.make_inputs(batch, seq)
        sides = steps(pair, args, mode, inputs)
        t0 = time.perf_counter()
        times = time_sides(sides, mode, warmup, iters, args.device)
        shape = f"{batch} x 3 x 224 x 224" if w.kind == "image" else f"{batch} x {seq}"
        items = batch * seq if w.kind == "text" else batch
        row = make_row(w, pair, mode, shape, items, times)
        rows.append(row)
        frozen = (
            ""
            if row.frozen_ms is None
            else f"frozen {row.frozen_ms:,.1f} ms (ratio {cell(row.frozen_ratio)}, "
            f"paired {cell(row.frozen_paired)}, gain {cell(row.frozen_gain)}), "
        )
        print(
            f"# {mode}: {w.label} vs {pair.peer_label}, {shape}: archlab {row.archlab_ms:,.1f} ms, "
            f"{frozen}peer {cell(row.peer_ms, ',.1f')} ms, ratio {cell(row.ratio)}, "
            f"paired {cell(row.paired)}, "
            f"spread {spread(row):.0%} ({warmup} + {iters} calls, "
            f"{time.perf_counter() - t0:.0f} s, load {loadavg()})",
            flush=True,
        )
        if args.profile:
            profile_sides(pair, sides, mode, w.label, args.device)
        del sides, inputs
        gc.collect()
    del pair
    gc.collect()
    if args.device == "cuda":
        torch.cuda.empty_cache()
    return rows


# ---------------------------------------------------------------------------------- reporting


def rate(per_s: float) -> str:
    return f"{per_s:,.0f}" if per_s >= 100 else f"{per_s:.3g}"


def spread(row: Row) -> float:
    return max(row.archlab_spread, row.peer_spread, row.frozen_spread)


def frozen_note(report: dict[str, Any]) -> str:
    """What freeze() did, in a few words: packed and fused linears, what stayed, the compiler."""
    parts = [f"{report['packed']} linears packed, {report['fused']} with their activation fused"]
    parts += [f"{count} unpacked: {why}" for why, count in report["unpacked"].items()]
    if report["dtype_after"] != report["dtype_before"]:
        parts.append(f"{report['dtype_before']} -> {report['dtype_after']}")
    if report["compiled"]:
        parts.append(f"torch.compile ({report['compiled']})")
    return "; ".join(parts)


def cell(value: float | None, fmt: str = ".2f") -> str:
    """A number for the table, or '-' where the row has none (no peer, not frozen)."""
    return "-" if not value else format(value, fmt)


def table(rows: list[Row], mode: str, warmup: int, iters: int) -> str:
    what = (
        "one forward, eval, inference_mode"
        if mode == "infer"
        else "one training step: forward, loss, backward, AdamW"
    )
    frozen = any(r.frozen_ms is not None for r in rows)
    extra = (
        " frozen ms | frozen ratio (peer/frozen) | frozen paired | frozen gain (archlab/frozen) |"
        if frozen
        else ""
    )
    lines = [
        f"\n## {mode}: {what} ({warmup} warm-up + {iters} timed calls each, median)\n",
        f"| workload | peer | shape | archlab ms |{extra} peer ms | ratio (peer/archlab) "
        "| paired | spread | archlab /s | peer /s | outputs |",
        "|---|---|---|---:|"
        + "---:|---:|---:|---:|" * frozen
        + "---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        cells, outputs = "", r.outputs
        if frozen:
            cells = (
                f" {cell(r.frozen_ms, ',.1f')} | {cell(r.frozen_ratio)} | {cell(r.frozen_paired)} "
                f"| {cell(r.frozen_gain)} |"
            )
        if r.frozen_ms is not None:
            outputs = f"{r.outputs}; frozen: {r.frozen_outputs}"
        peer_rate = f"{rate(r.peer_per_s)} {r.unit}" if r.peer_per_s else "-"
        lines.append(
            f"| {r.workload} | {r.peer} | {r.shape} | {r.archlab_ms:,.1f} |{cells} "
            f"{cell(r.peer_ms, ',.1f')} | {cell(r.ratio)} | {cell(r.paired)} | {spread(r):.0%} "
            f"| {rate(r.archlab_per_s)} {r.unit} | {peer_rate} | {outputs} |"
        )
    return "\n".join(lines)


FROZEN_TARGET = 1.5  # frozen archlab against the encoder fast path, CPU, float32 inference


def targets(rows: list[Row], device: str, dtype: str) -> list[str]:
    """The CPU targets, where this run measured them."""
    out = []
    infer = {r.key: r for r in rows if r.mode == "infer"}
    where = (
        ""
        if device == "cpu" and dtype == "float32"
        else f" (measured on {device}, {dtype}; the targets are for the CPU in float32)"
    )
    for key in ("encoder-deit-s", "encoder-bert", "gpt2-small"):
        r = infer.get(key)
        if r is None:
            continue
        met = "MET" if r.ratio >= 1.0 else "NOT MET"
        out.append(
            f"target: {r.workload} >= 1.0x {r.peer} in inference: {r.ratio:.2f}x, {met}{where}"
        )
    for key in ("encoder-deit-s", "encoder-bert"):
        r = infer.get(key)
        if r is None or r.frozen_ratio is None:
            continue
        met = "MET" if r.frozen_ratio >= FROZEN_TARGET else "NOT MET"
        out.append(
            f"target: {r.workload} frozen >= {FROZEN_TARGET}x {r.peer} in inference: "
            f"{r.frozen_ratio:.2f}x (paired {r.frozen_paired:.2f}x), {met}{where}"
        )
    return out


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--mode", nargs="+", choices=MODES, default=list(MODES))
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument(
        "--dtype",
        choices=["float32", "bfloat16"],
        help="weights and inputs (default: float32 on cpu, bfloat16 on cuda)",
    )
    parser.add_argument(
        "--autocast", action="store_true", help="float32 weights under bfloat16 autocast"
    )
    parser.add_argument("--batch", type=int, help="batch size of every workload")
    parser.add_argument("--seq", type=int, help="sequence length of the text and encoder workloads")
    parser.add_argument("--compile", action="store_true", help="torch.compile both sides")
    parser.add_argument(
        "--freeze",
        action="store_true",
        help="in inference, also time a frozen archlab model (CompiledModel.freeze())",
    )
    parser.add_argument("--only", nargs="+", choices=list(WORKLOADS), help="workloads to run")
    parser.add_argument("--quick", action="store_true", help="smoke test: tiny sizes, 1 + 2 calls")
    parser.add_argument("--iters", type=int, help="timed calls per side")
    parser.add_argument("--warmup", type=int, help="warm-up calls per side")
    parser.add_argument("--threads", type=int, help="torch.set_num_threads")
    parser.add_argument(
        "--profile", action="store_true", help="print the top operators of one call of each side"
    )
    parser.add_argument("--json", type=Path, help="also write the results as JSON")
    args = parser.parse_args(argv)
    if args.autocast and args.dtype not in (None, "float32"):
        parser.error("--autocast keeps float32 weights; drop --dtype")
    if args.dtype is None:
        args.dtype = "bfloat16" if args.device == "cuda" and not args.autocast else "float32"
    args.weight_dtype = getattr(torch, args.dtype)
    args.mode = [m for m in MODES if m in args.mode]
    args.only = args.only or list(WORKLOADS)
    return args


TIMM_HINT = "pip install timm, with a torchvision built for this torch"


def main(argv: list[str] | None = None) -> None:
    before = load_before()  # what other processes were doing
    args = parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit("--device cuda: no CUDA device is available")
    if args.threads:
        torch.set_num_threads(args.threads)
    versions = {p: peer_version(p) for p in ("timm", "transformers")}
    shown = ", ".join(f"{p} {v or 'absent'}" for p, (v, _) in versions.items())
    precision = "float32 weights + bfloat16 autocast" if args.autocast else f"{args.dtype} weights"
    print(
        f"# archlab {archlab.__version__}, torch {torch.__version__}, {shown}, "
        f"python {platform.python_version()}"
    )
    print(
        f"# device {args.device}: {device_name(args.device)}, {torch.get_num_threads()} threads, "
        f"{os.cpu_count()} CPUs, {precision}, {'torch.compile' if args.compile else 'eager'}, "
        f"load {loadavg()}"
    )
    start = time.perf_counter()
    rows: list[Row] = []
    skipped: list[str] = []
    for key in args.only:
        w = WORKLOADS[key]
        if w.needs is not None and versions[w.needs][0] is None:
            how = "pip install -e .[bench]" if w.needs == "transformers" else TIMM_HINT
            frozen_only = args.freeze and "infer" in args.mode
            what = "peer rows skipped (frozen against unfrozen only)" if frozen_only else "skipped"
            skipped.append(f"{w.label}: {what}, {versions[w.needs][1]} ({how})")
            print(f"# {skipped[-1]}", flush=True)
            if frozen_only:
                rows += run_workload(w, args, peerless=versions[w.needs][1])
            continue
        rows += run_workload(w, args)

    for mode in args.mode:
        warmup, iters = calls(args, mode)
        mode_rows = [r for r in rows if r.mode == mode]
        if mode_rows:
            print(table(mode_rows, mode, warmup, iters))
    for note in skipped:
        print(f"\n{note}")
    print()
    for line in targets(rows, args.device, args.dtype):
        print(line)
    warning = busy_warning(torch.get_num_threads(), before) if args.device == "cpu" else None
    if warning:
        print("\n" + warning)
    if args.device == "cuda":
        print("\nanchors (../shared/anchors.md, one H100, PyTorch 2.11, not this run):")
        for key in args.only:
            for what, figure in ANCHORS.get(key, []):
                print(f"- {what}: {figure}")
    print(f"\n# total {time.perf_counter() - start:.0f} s, load {loadavg()}")

    if args.json:
        payload = {
            "meta": {
                "archlab": archlab.__version__,
                "torch": torch.__version__,
                "timm": versions["timm"][0],
                "transformers": versions["transformers"][0],
                "python": platform.python_version(),
                "device": args.device,
                "device_name": device_name(args.device),
                "threads": torch.get_num_threads(),
                "dtype": args.dtype,
                "autocast": args.autocast,
                "compile": args.compile,
                "freeze": args.freeze,
                "load_before": before,
                "load_end": loadavg(),
                "warning": warning,
                "skipped": skipped,
            },
            "rows": [asdict(r) for r in rows],
            "targets": targets(rows, args.device, args.dtype),
        }
        args.json.write_text(json.dumps(payload, indent=2))


if __name__ == "__main__":
    main()
