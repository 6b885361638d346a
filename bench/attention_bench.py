"""Sliding-window attention: archlab's kernel choice against FlexAttention and a dense SDPA mask.

    python bench/attention_bench.py [--device cpu|cuda] [--dtype bfloat16|float32]
        [--batch 4] [--heads 16] [--seq 8192] [--head-dim 64] [--window 512]
        [--iters 30] [--quick] [--json PATH]

The workload of ``../shared/anchors.md``: attention alone (no projections), causal sliding window,
B 4 x 16 heads x T 8192 x head dim 64 in bf16 on CUDA. Rows, all on the same q, k, v:
- ``archlab``: ``Attention.core`` of a layer built for a ``sliding_window`` mask, with the kernel
  ``choose_kernel`` picks on this device (``flex`` on CUDA, run under ``torch.compile`` as a
  compiled model runs it; ``sdpa_mask`` on the CPU);
- ``FlexAttention``: ``flex_attention`` with a sliding-window block mask, compiled (CUDA only:
  FlexAttention has no fused CPU kernel);
- ``SDPA dense mask``: ``F.scaled_dot_product_attention`` with a materialised (T, T) bool mask;
- ``SDPA causal``: the flash kernel with ``is_causal`` and no window, a floor (it computes
  something else: the full causal attention).
Each row's output is checked against the dense-mask row (max abs difference, within the dtype's
tolerance). Times are medians of interleaved rounds (CUDA events on CUDA). The target: archlab
within 1.1x of FlexAttention's time, measured in the same run (H100 anchor: FlexAttention 0.50 ms,
dense mask 4.46 ms). On the CPU the default shape is smaller (B 2 x 8 heads x T 2048, window 256):
there archlab takes the dense-mask path itself, and the table shows what that costs.

Not a test: nothing here asserts a time.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

try:
    import archlab
except ImportError:  # run from a checkout without installing: put src/ on the path
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
    import archlab

from archlab.compiler.nn.attention import Attention, choose_kernel
from archlab.compiler.nn.masks import MaskPattern

TOLERANCE = {torch.float32: 1e-4, torch.bfloat16: 2e-2, torch.float16: 5e-3}


def build_rows(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, window: int, compile_flex: bool
) -> dict[str, Callable[[], torch.Tensor]]:
    """The contenders, each a no-argument call on the same q, k, v."""
    _, H, T, E = q.shape
    pattern = MaskPattern("sliding_window", causal=True, window=window)
    kernel = choose_kernel(
        kind="softmax",
        mask=pattern,
        position=None,
        device=q.device,
        dtype=q.dtype,
        has_dropout=False,
    )
    layer = Attention(H * E, H, mask=pattern, max_len=T, kernel=kernel).to(q.device).eval()
    core = layer.core
    if kernel.name == "flex" and compile_flex:
        core = torch.compile(layer.core)  # as a compiled model runs it
    rows: dict[str, Callable[[], torch.Tensor]] = {
        f"archlab ({kernel.name})": lambda: core(q, k, v),
    }
    if q.device.type == "cuda":
        from torch.nn.attention.flex_attention import create_block_mask, flex_attention

        def window_mod(b: Any, h: Any, i: Any, j: Any) -> Any:
            return (i >= j) & (i - j < window)

        block_mask = create_block_mask(window_mod, None, None, T, T, device=q.device)
        flex = torch.compile(flex_attention)
        rows["FlexAttention (compiled)"] = lambda: flex(q, k, v, block_mask=block_mask)
    dense = pattern.allowed(T, T, q.device)  # (T, T) bool, materialised once
    rows["SDPA dense mask"] = lambda: F.scaled_dot_product_attention(q, k, v, attn_mask=dense)
    rows["SDPA causal (no window)"] = lambda: F.scaled_dot_product_attention(
        q, k, v, is_causal=True
    )
    return rows


def median_times(
    rows: dict[str, Callable[[], torch.Tensor]], warmup: int, iters: int, cuda: bool
) -> dict[str, float]:
    """Median milliseconds per row, the rows interleaved call by call."""
    for fn in rows.values():
        for _ in range(warmup):
            fn()
    if cuda:
        torch.cuda.synchronize()
    times: dict[str, list[float]] = {name: [] for name in rows}
    for _ in range(iters):
        for name, fn in rows.items():
            if cuda:
                start, end = (
                    torch.cuda.Event(enable_timing=True),
                    torch.cuda.Event(enable_timing=True),
                )
                start.record()
                fn()
                end.record()
                torch.cuda.synchronize()
                times[name].append(start.elapsed_time(end))
            else:
                t0 = time.perf_counter()
                fn()
                times[name].append((time.perf_counter() - t0) * 1000)
    return {name: statistics.median(ts) for name, ts in times.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", choices=["bfloat16", "float32"], default=None)
    parser.add_argument("--batch", type=int, default=None)
    parser.add_argument("--heads", type=int, default=None)
    parser.add_argument("--seq", type=int, default=None)
    parser.add_argument("--head-dim", type=int, default=64)
    parser.add_argument("--window", type=int, default=None)
    parser.add_argument("--iters", type=int, default=None)
    parser.add_argument("--quick", action="store_true", help="tiny shapes: a smoke test")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)

    device = torch.device(args.device)
    cuda = device.type == "cuda"
    if cuda and not torch.cuda.is_available():
        print("error: --device cuda, but torch sees no CUDA device", file=sys.stderr)
        return 2
    default = (4, 16, 8192, 512) if cuda else (2, 8, 2048, 256)
    if args.quick:
        default = (1, 2, 256, 32)
    B = args.batch or default[0]
    H = args.heads or default[1]
    T = args.seq or default[2]
    W = args.window or default[3]
    E = args.head_dim
    dtype = getattr(torch, args.dtype or ("bfloat16" if cuda else "float32"))
    iters = args.iters or (3 if args.quick else 30 if cuda else 10)

    gen = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(B, H, T, E, generator=gen).to(device, dtype) for _ in range(3))
    with torch.inference_mode():
        rows = build_rows(q, k, v, W, compile_flex=cuda)
        reference = rows["SDPA dense mask"]().float()
        errors = {
            name: float((fn().float() - reference).abs().max())
            for name, fn in rows.items()
            if "no window" not in name
        }
        times = median_times(rows, warmup=2 if args.quick else 5, iters=iters, cuda=cuda)

    device_name = torch.cuda.get_device_name(device) if cuda else platform.processor() or "cpu"
    print(
        f"# torch {torch.__version__}, archlab {archlab.__version__}, {device_name}, "
        f"{str(dtype).removeprefix('torch.')}, B {B} x H {H} x T {T} x E {E}, window {W}, "
        f"median of {iters}"
    )
    print("\n| attention | ms | vs archlab | max abs diff vs dense mask |")
    print("|---|---:|---:|---:|")
    ours_name = next(iter(rows))
    ours = times[ours_name]
    tol = TOLERANCE[dtype]
    ok = True
    for name, ms in times.items():
        err = errors.get(name)
        verdict = "" if err is None else (f"{err:.1e}" + ("" if err <= tol else " MISMATCH"))
        ok = ok and (err is None or err <= tol)
        print(f"| {name} | {ms:.3f} | {ms / ours:.2f}x | {verdict} |")
    flex = times.get("FlexAttention (compiled)")
    if flex is not None:
        ratio = ours / flex
        verdict = "MET" if ratio <= 1.1 else "MISSED"
        print(f"\ntarget: archlab within 1.1x of FlexAttention: {ratio:.2f}x ({verdict})")
    else:
        print("\n(no FlexAttention row: it has no fused kernel on this device)")
    if args.json is not None:
        doc = {
            "device": device_name,
            "dtype": str(dtype),
            "shape": {"batch": B, "heads": H, "seq": T, "head_dim": E, "window": W},
            "ms": times,
            "max_abs_diff": errors,
        }
        args.json.write_text(json.dumps(doc, indent=2) + "\n")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
