"""Token pruning throughput: dense DeiT-S against DynamicViT, EViT and ToMe, in one run.

    python bench/prune_bench.py [--mode infer|train] [--device cpu|cuda]
        [--dtype float32|bfloat16] [--batch 1 32 256] [--iters N] [--warmup N] [--compile]
        [--threads N] [--models dense dynamicvit evit tome] [--profile] [--quick] [--json PATH]

Four models of the same DeiT-S/16 shape (224 x 224 images, 197 tokens, 12 layers of width 384),
compiled from specs with random (seeded) weights:
- ``dense``: ``specs/deit-small-16.json``;
- ``dynamicvit``: ``specs/dynamicvit-deit-s.json``, a learned keep predictor keeping 0.7 of the
  patch tokens before layers 3, 6 and 9;
- ``evit``: ``specs/evit-deit-s.json``, CLS-attention top-k keeping 0.7 at layers 3, 6 and 9, the
  rest fused into one token;
- ``tome``: the DeiT-S spec with ``{"method": "merge", "at": [0..11], "r": 8}`` (ToMe, 8 token
  pairs merged in every layer), built here.

For each batch size, every model first runs ``--warmup`` calls (the first call's output is checked:
shape ``(B, 1000)``, all finite), then ``--iters`` timed calls under ``torch.inference_mode()``
in eval mode. The models are interleaved: each round times every model once (in an order rotated
from round to round), so a noisy, shared machine slows them all alike. On CUDA each call is timed
with CUDA events after a synchronisation. Inputs are random normal images, the same for every model.

How to read the table: ``GMACs/img`` is the spec's forward cost per image (multiply-adds, the
"FLOPs" of vision papers; archlab counts a multiply-add as 2 FLOPs, this column is half that),
``MAC ratio`` is that cost over dense's, ``img/s`` is batch / median latency of one call, and
``speed-up`` is a model's img/s over dense's in the same run. ``of ideal`` is the speed-up over
``1 / MAC ratio``, the share of the arithmetic saving turned into time (below 100%: the pruned
model pays overheads the MAC count does not see, such as the gather, top-k, small GEMMs, or a batch
too small to keep the cores busy). ``spread`` is (max - min) / median of the timed calls.

Defaults: float32 on the CPU; bfloat16 weights (no autocast) on CUDA. Iterations per batch size
unless ``--iters`` / ``--warmup`` say otherwise: on the CPU 3 warm-up + 20 timed calls up to batch
8, 2 + 10 up to batch 64, and 1 + 3 above (batch 256 is about 2.4 TFLOP of dense work per call:
seconds per call on a small CPU, so three calls only); on CUDA 10 + 30 at every size.

``--mode train`` times one training step instead (forward in train mode, cross-entropy against
random labels, backward; no optimiser step, gradients cleared before each step) of three rows:
``dense``, ``dynamicvit`` (its policy attention through SDPA, ``pruning.policy.
fast_policy_attention``) and ``dynamicvit-reference`` (the same model with the float32 reference
``policy_attention``, switched by ``pruning.policy.USE_FAST``), interleaved the same way, with
ms/step and the ratio to dense's step. In training DynamicViT keeps every token (the policy masks
the dropped ones), so it can at best match dense: the target is <= 1.1x dense at batch 32 on the CPU.
Defaults: batch 32, 1 warm-up + 3 timed steps per model (``--quick``: batch 2, 1 + 2); eager only.

The inference target: DynamicViT 0.7 at least 1.35x dense at batch 32 on the CPU. Anchor on a GPU
(``../shared/anchors.md``): a hand-written ViT-S top-k (keep 0.7 at 3/6/9) reached 1.22-1.23x dense
at batch 256 on one H100 (bf16 weights or autocast, eager).

Not a test: nothing here asserts a time. Results go to bench/RESULTS.md by hand, with the machine.
"""

from __future__ import annotations

import argparse
import copy
import functools
import json
import math
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

import archlab
from archlab.compiler import compile_spec
from archlab.compiler.nn.pruning import policy

ROOT = Path(__file__).resolve().parents[1]
SPECS = ROOT / "specs"

MODELS: dict[str, str] = {
    "dense": "DeiT-S (dense)",
    "dynamicvit": "DynamicViT 0.7",
    "evit": "EViT 0.7",
    "tome": "ToMe r=8",
}
TARGET_BATCH = 32
TARGET_SPEEDUP = 1.35
TRAIN_MODELS: dict[str, str] = {
    "dense": "DeiT-S (dense)",
    "dynamicvit": "DynamicViT 0.7 (SDPA policy attention)",
    "dynamicvit-reference": "DynamicViT 0.7 (reference policy attention)",
}
TRAIN_TARGET = 1.1  # DynamicViT's train step at most this many times dense's
GPU_ANCHOR = "hand-written ViT-S top-k, keep 0.7 at 3/6/9, batch 256, one H100: 1.22-1.23x dense"


# ----------------------------------------------------------------------------------- the models


def load_json(stem: str) -> dict[str, Any]:
    return json.loads((SPECS / f"{stem}.json").read_text())


def tome_spec(r: int = 8) -> dict[str, Any]:
    """DeiT-S/16 with ToMe merging ``r`` token pairs in each of its 12 layers."""
    spec = copy.deepcopy(load_json("deit-small-16"))
    depth = spec["nodes"]["encoder"]["depth"]
    spec["nodes"]["encoder"]["prune"] = {"method": "merge", "at": list(range(depth)), "r": r}
    spec["name"] = f"tome-deit-s-r{r}"
    spec["description"] = (
        f"DeiT-S/16 (see deit-small-16) with ToMe token merging, r={r} in every layer "
        "(built by bench/prune_bench.py)."
    )
    return spec


def model_specs() -> dict[str, dict[str, Any]]:
    return {
        "dense": load_json("deit-small-16"),
        "dynamicvit": load_json("dynamicvit-deit-s"),
        "evit": load_json("evit-deit-s"),
        "tome": tome_spec(8),
    }


@dataclass
class Entry:
    """One model under test: its callable (compiled or not) and its cost per image."""

    key: str
    label: str
    module: nn.Module
    run: Callable[[torch.Tensor], torch.Tensor]
    flops: int  # forward FLOPs per image, a multiply-add counting 2
    params: int


def build_models(keys: list[str], device: str, dtype: str, compiled: bool) -> list[Entry]:
    specs = model_specs()
    entries = []
    for key in keys:
        model = compile_spec(specs[key], device=device, dtype=dtype, seed=0).eval()
        summary = model.summary()
        run: Callable[[torch.Tensor], torch.Tensor] = model
        if compiled:
            # dynamic=False: each batch size gets its own static graph (the pruned lengths are
            # static too), not a dynamic-shape one after the second size
            run = torch.compile(model, dynamic=False)
        entries.append(Entry(key, MODELS[key], model, run, summary.flops, summary.params))
    return entries


# ----------------------------------------------------------------------------------- timing


def synchronize(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def call_seconds(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, device: str) -> float:
    """Seconds of one call: CUDA events on the GPU, ``perf_counter`` on the CPU."""
    if device == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        torch.cuda.synchronize()
        start.record()
        fn(x)
        end.record()
        torch.cuda.synchronize()
        return start.elapsed_time(end) / 1e3
    t0 = time.perf_counter()
    fn(x)
    return time.perf_counter() - t0


def check_output(entry: Entry, y: torch.Tensor, batch: int) -> None:
    if tuple(y.shape) != (batch, 1000):
        sys.exit(f"{entry.label}: output shape {tuple(y.shape)}, expected ({batch}, 1000)")
    if not bool(torch.isfinite(y).all()):
        sys.exit(f"{entry.label}: non-finite values in the output at batch {batch}")


def default_iters(batch: int, device: str) -> tuple[int, int]:
    """(warm-up, timed) calls per model at this batch size."""
    if device == "cuda":
        return 10, 30
    if batch <= 8:
        return 3, 20
    if batch <= 64:
        return 2, 10
    return 1, 3


@dataclass
class Row:
    key: str
    label: str
    batch: int
    gmacs_per_img: float
    mac_ratio: float
    times_s: list[float] = field(default_factory=list)
    median_s: float = 0.0
    img_per_s: float = 0.0
    speedup: float = 0.0
    of_ideal: float = 0.0
    spread: float = 0.0


def bench_batch(
    entries: list[Entry], batch: int, warmup: int, iters: int, device: str, dtype: torch.dtype
) -> list[Row]:
    """Warm every model up, then time them round-robin; rows in ``entries`` order."""
    gen = torch.Generator().manual_seed(batch)
    x = torch.randn(batch, 3, 224, 224, generator=gen).to(device=device, dtype=dtype)
    dense_flops = entries[0].flops
    times: dict[str, list[float]] = {e.key: [] for e in entries}
    with torch.inference_mode():
        for i in range(max(1, warmup)):
            for e in entries:
                y = e.run(x)
                synchronize(device)
                if i == 0:
                    check_output(e, y, batch)
                del y
        n = len(entries)
        for it in range(iters):
            for j in range(n):
                e = entries[(it + j) % n]  # rotated each round
                times[e.key].append(call_seconds(e.run, x, device))
    rows = []
    for e in entries:
        ts = times[e.key]
        med = statistics.median(ts)
        rows.append(
            Row(
                key=e.key,
                label=e.label,
                batch=batch,
                gmacs_per_img=e.flops / 2 / 1e9,
                mac_ratio=e.flops / dense_flops,
                times_s=ts,
                median_s=med,
                img_per_s=batch / med,
                spread=(max(ts) - min(ts)) / med,
            )
        )
    base = rows[0].img_per_s
    for r in rows:
        r.speedup = r.img_per_s / base
        r.of_ideal = r.speedup * r.mac_ratio
    return rows


def profile_models(entries: list[Entry], batch: int, device: str, dtype: torch.dtype) -> None:
    """Top operators by self time of one call of each model (after the timed runs)."""
    from torch.profiler import ProfilerActivity, profile

    x = torch.randn(batch, 3, 224, 224).to(device=device, dtype=dtype)
    activities = [ProfilerActivity.CPU]
    sort = "self_cpu_time_total"
    if device == "cuda":
        activities.append(ProfilerActivity.CUDA)
        sort = "self_cuda_time_total"
    with torch.inference_mode():
        for e in entries:
            e.run(x)
            synchronize(device)
            with profile(activities=activities) as prof:
                e.run(x)
                synchronize(device)
            print(f"\n### profile: {e.label}, batch {batch}, one call\n")
            print(prof.key_averages().table(sort_by=sort, row_limit=12))


# ---------------------------------------------------------------------------------- reporting


def device_name(device: str) -> str:
    if device == "cuda":
        return torch.cuda.get_device_name()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def loadavg() -> str:
    try:
        return "/".join(f"{v:.2f}" for v in os.getloadavg())
    except OSError:
        return "n/a"


def load_before() -> float | None:
    """The 1-minute load average now, before this run adds its own threads (None if unknown)."""
    try:
        return os.getloadavg()[0]
    except OSError:
        return None


def busy_warning(threads: int, load: float | None) -> str | None:
    """A warning when other processes leave fewer free cores than the threads this run uses.

    ``load`` is the 1-minute load average from before this run started (during the run it counts
    the run's own threads). With more runnable threads than cores, every OpenMP barrier waits for
    a descheduled thread; models made of many small operators (the pruned ones) suffer most, and
    the speed-ups shrink.
    """
    if load is None:
        return None
    cores = os.cpu_count() or 1
    if threads > 1 and load > cores - threads + 1.0:  # another core-hog was running
        return (
            f"WARNING: load {load:.1f} before the run on {cores} CPUs with {threads} threads: the machine is "
            "busy, multi-threaded timings (and the speed-ups of the pruned models most) are "
            "unreliable; rerun when it is quiet, or with --threads 1"
        )
    return None


def run_meta(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "archlab": archlab.__version__,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "device": args.device,
        "device_name": device_name(args.device),
        "threads": torch.get_num_threads(),
        "dtype": args.dtype,
        "compile": args.compile,
        "load_end": loadavg(),
    }


def table(rows: list[Row], warmup: int, iters: int) -> str:
    batch = rows[0].batch
    lines = [
        f"\n## batch {batch} ({warmup} warm-up + {iters} timed calls per model, median)\n",
        "| model | GMACs/img | MAC ratio | img/s | latency ms | speed-up | of ideal | spread |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r.label} | {r.gmacs_per_img:.2f} | {r.mac_ratio:.3f} | {r.img_per_s:,.1f} "
            f"| {r.median_s * 1e3:,.1f} | {r.speedup:.2f}x | {r.of_ideal:.0%} | {r.spread:.0%} |"
        )
    return "\n".join(lines)


def target_line(results: dict[int, list[Row]], device: str) -> str:
    rows = results.get(TARGET_BATCH)
    dyn = next((r for r in rows or [] if r.key == "dynamicvit"), None)
    if dyn is None or not any(r.key == "dense" for r in rows or []):
        return (
            f"target (DynamicViT 0.7 >= {TARGET_SPEEDUP}x dense at batch {TARGET_BATCH} on the "
            "CPU): not measured in this run"
        )
    met = "MET" if dyn.speedup >= TARGET_SPEEDUP else "NOT MET"
    where = "" if device == "cpu" else f" (measured on {device}; the target is for the CPU)"
    return (
        f"target: DynamicViT 0.7 at batch {TARGET_BATCH} is {dyn.speedup:.2f}x dense "
        f"(>= {TARGET_SPEEDUP}x wanted): {met}{where}"
    )


# ------------------------------------------------------------------------------ training steps


@dataclass
class TrainEntry:
    """One row of the training benchmark: a model in train mode and which policy attention."""

    key: str
    label: str
    model: nn.Module
    fast: bool  # pruning.policy.USE_FAST during its steps


@dataclass
class TrainRow:
    key: str
    label: str
    batch: int
    times_s: list[float] = field(default_factory=list)
    median_s: float = 0.0
    ratio: float = 0.0  # median step over dense's
    spread: float = 0.0
    loss: float = 0.0  # of the first (warm-up) step


def build_train_models(device: str, dtype: str) -> list[TrainEntry]:
    specs = model_specs()
    dense = compile_spec(specs["dense"], device=device, dtype=dtype, seed=0).train()
    dynamic = compile_spec(specs["dynamicvit"], device=device, dtype=dtype, seed=0).train()
    models = {"dense": dense, "dynamicvit": dynamic, "dynamicvit-reference": dynamic}
    return [
        TrainEntry(key, label, models[key], key != "dynamicvit-reference")
        for key, label in TRAIN_MODELS.items()
    ]


def train_step(entry: TrainEntry, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Forward, cross-entropy and backward; returns the loss (detached). Every step draws the
    same Gumbel noise, so both DynamicViT rows compute the same loss (a check of the fast form)."""
    before = policy.USE_FAST
    policy.USE_FAST = entry.fast
    torch.manual_seed(0)
    try:
        entry.model.zero_grad(set_to_none=True)
        loss = F.cross_entropy(entry.model(x).float(), labels)
        loss.backward()
    finally:
        policy.USE_FAST = before
    return loss.detach()


def bench_train(
    entries: list[TrainEntry], batch: int, warmup: int, iters: int, device: str, dtype: torch.dtype
) -> list[TrainRow]:
    """Warm every row up, then time train steps round-robin; rows in ``entries`` order."""
    gen = torch.Generator().manual_seed(batch)
    x = torch.randn(batch, 3, 224, 224, generator=gen).to(device=device, dtype=dtype)
    labels = torch.randint(0, 1000, (batch,), generator=gen).to(device)
    times: dict[str, list[float]] = {e.key: [] for e in entries}
    losses: dict[str, float] = {}
    for i in range(max(1, warmup)):
        for e in entries:
            loss = train_step(e, x, labels)
            synchronize(device)
            if i == 0:
                losses[e.key] = float(loss)
                if not math.isfinite(losses[e.key]):
                    sys.exit(f"{e.label}: non-finite loss at batch {batch}")
    n = len(entries)
    for it in range(iters):
        for j in range(n):
            e = entries[(it + j) % n]  # rotated each round
            step = functools.partial(train_step, e, labels=labels)
            times[e.key].append(call_seconds(step, x, device))
    rows = []
    for e in entries:
        ts = times[e.key]
        med = statistics.median(ts)
        rows.append(
            TrainRow(
                key=e.key,
                label=e.label,
                batch=batch,
                times_s=ts,
                median_s=med,
                spread=(max(ts) - min(ts)) / med,
                loss=losses[e.key],
            )
        )
    for r in rows:
        r.ratio = r.median_s / rows[0].median_s
    return rows


def train_table(rows: list[TrainRow], warmup: int, iters: int) -> str:
    lines = [
        f"\n## train step, batch {rows[0].batch} ({warmup} warm-up + {iters} timed steps per "
        "model, median)\n",
        "| model | ms/step | vs dense | spread | loss |",
        "|---|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r.label} | {r.median_s * 1e3:,.0f} | {r.ratio:.2f}x | {r.spread:.0%} "
            f"| {r.loss:.4f} |"
        )
    return "\n".join(lines)


def train_target_line(results: dict[int, list[TrainRow]]) -> str:
    rows = results.get(TARGET_BATCH)
    if rows is None:
        return (
            f"target (DynamicViT train step <= {TRAIN_TARGET}x dense at batch {TARGET_BATCH}): "
            "not measured in this run"
        )
    by_key = {r.key: r for r in rows}
    fast, ref = by_key["dynamicvit"], by_key["dynamicvit-reference"]
    met = "MET" if fast.ratio <= TRAIN_TARGET else "NOT MET"
    return (
        f"target: DynamicViT train step at batch {TARGET_BATCH} is {fast.ratio:.2f}x dense "
        f"(<= {TRAIN_TARGET}x wanted): {met}; with the reference policy attention "
        f"{ref.ratio:.2f}x"
    )


def main_train(args: argparse.Namespace, before: float | None) -> None:
    dtype = getattr(torch, args.dtype)
    start = time.perf_counter()
    entries = build_train_models(args.device, args.dtype)
    print(f"# 2 models compiled from specs in {time.perf_counter() - start:.1f} s (train mode)")
    results: dict[int, list[TrainRow]] = {}
    for batch in args.batch:
        t0 = time.perf_counter()
        rows = bench_train(entries, batch, args.warmup, args.iters, args.device, dtype)
        results[batch] = rows
        print(train_table(rows, args.warmup, args.iters))
        print(f"\n({time.perf_counter() - t0:.0f} s for this batch size, load {loadavg()})")
    warning = busy_warning(torch.get_num_threads(), before) if args.device == "cpu" else None
    if warning:
        print("\n" + warning)
    print("\n" + train_target_line(results))
    print(f"# total {time.perf_counter() - start:.0f} s, load {loadavg()}")
    if args.json:
        payload = {
            "meta": {**run_meta(args), "mode": "train", "warning": warning},
            "results": {str(b): [asdict(r) for r in rows] for b, rows in results.items()},
            "target": train_target_line(results),
        }
        args.json.write_text(json.dumps(payload, indent=2))


# ---------------------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--mode",
        choices=["infer", "train"],
        default="infer",
        help="infer: throughput of the four models; train: DynamicViT's train step against "
        "dense's, with the SDPA and the reference policy attention",
    )
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument(
        "--dtype",
        choices=["float32", "bfloat16"],
        help="weights and inputs (default: float32 on cpu, bfloat16 on cuda)",
    )
    parser.add_argument(
        "--batch", type=int, nargs="+", help="batch sizes (default: 1 32 256; train: 32)"
    )
    parser.add_argument("--iters", type=int, help="timed calls per model and batch size")
    parser.add_argument("--warmup", type=int, help="warm-up calls per model and batch size")
    parser.add_argument("--compile", action="store_true", help="torch.compile every model")
    parser.add_argument("--threads", type=int, help="torch.set_num_threads")
    parser.add_argument(
        "--models",
        nargs="+",
        choices=list(MODELS),
        default=list(MODELS),
        help="models to run in infer mode (dense is always included: speed-ups are against it)",
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="after timing, print torch.profiler's top operators of one call per model "
        "at the largest batch size",
    )
    parser.add_argument(
        "--quick", action="store_true", help="smoke test: batch 1 and 2, 1 warm-up + 2 timed calls"
    )
    parser.add_argument("--json", type=Path, help="also write the results as JSON")
    args = parser.parse_args(argv)
    if args.dtype is None:
        args.dtype = "bfloat16" if args.device == "cuda" else "float32"
    if args.mode == "train":
        if args.compile or args.profile:
            parser.error("--mode train runs eager and unprofiled: no --compile or --profile")
        args.batch = args.batch or ([2] if args.quick else [TARGET_BATCH])
        args.warmup = 1 if args.warmup is None else args.warmup
        args.iters = (2 if args.quick else 3) if args.iters is None else args.iters
    if args.batch is None:
        args.batch = [1, 2] if args.quick else [1, 32, 256]
    if args.quick:
        args.iters = 2 if args.iters is None else args.iters
        args.warmup = 1 if args.warmup is None else args.warmup
    args.models = ["dense", *[m for m in MODELS if m in args.models and m != "dense"]]
    return args


def main(argv: list[str] | None = None) -> None:
    before = load_before()  # what other processes were doing
    args = parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit("--device cuda: no CUDA device is available")
    if args.threads:
        torch.set_num_threads(args.threads)
    dtype = getattr(torch, args.dtype)

    print(
        f"# archlab {archlab.__version__}, torch {torch.__version__}, "
        f"python {platform.python_version()}, device {args.device}: {device_name(args.device)}, "
        f"{torch.get_num_threads()} threads, {os.cpu_count()} CPUs, {args.dtype} weights, "
        f"{'torch.compile' if args.compile else 'eager'}, load {loadavg()}"
    )
    if args.mode == "train":
        main_train(args, before)
        return
    start = time.perf_counter()
    entries = build_models(args.models, args.device, args.dtype, args.compile)
    print(f"# {len(entries)} models compiled from specs in {time.perf_counter() - start:.1f} s")

    results: dict[int, list[Row]] = {}
    plan: dict[int, tuple[int, int]] = {}
    for batch in args.batch:
        warmup, iters = default_iters(batch, args.device)
        warmup = args.warmup if args.warmup is not None else warmup
        iters = args.iters if args.iters is not None else iters
        plan[batch] = (warmup, iters)
        t0 = time.perf_counter()
        rows = bench_batch(entries, batch, warmup, iters, args.device, dtype)
        results[batch] = rows
        print(table(rows, warmup, iters))
        print(f"\n({time.perf_counter() - t0:.0f} s for this batch size, load {loadavg()})")
    if args.device == "cpu" and any(b > 64 for b in args.batch) and args.iters is None:
        print(
            "\nNote: few timed calls at batch > 64 on the CPU (seconds each); read with the spread."
        )

    warning = busy_warning(torch.get_num_threads(), before) if args.device == "cpu" else None
    if warning:
        print("\n" + warning)
    print("\n" + target_line(results, args.device))
    if args.device == "cuda":
        print(f"anchor (../shared/anchors.md): {GPU_ANCHOR}")
    print(f"# total {time.perf_counter() - start:.0f} s, load {loadavg()}")

    if args.profile:
        profile_models(entries, max(args.batch), args.device, dtype)

    if args.json:
        payload = {
            "meta": {
                **run_meta(args),
                "warning": warning,
                "plan": {str(b): {"warmup": w, "iters": i} for b, (w, i) in plan.items()},
            },
            "models": {
                e.key: {"label": e.label, "flops": e.flops, "params": e.params} for e in entries
            },
            "results": {str(b): [asdict(r) for r in rows] for b, rows in results.items()},
            "target": target_line(results, args.device),
        }
        args.json.write_text(json.dumps(payload, indent=2))


if __name__ == "__main__":
    main()
