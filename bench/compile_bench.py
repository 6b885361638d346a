"""Compiled specs against the modules people would otherwise use, side by side in one process.

    python bench/compile_bench.py [--batch 8] [--seq 128] [--repeats 30] [--threads 2]

Each row times inference (``torch.inference_mode``, eval, float32 on the CPU) of an archlab
module and of its peer with the same shape, interleaving the two so that a noisy machine slows
both alike, and prints the median latency of each and the ratio ``peer / archlab`` (above 1.0:
archlab is faster). Peers: ``nn.TransformerEncoder`` with its fast path on, and HF transformers'
``BertModel`` and ``GPT2Model`` when transformers is installed (``pip install -e .[bench]``).
Last, the wall time of ``arch validate`` and ``compile_spec`` for GPT-2 small.

Not a test: nothing here asserts a time. Results go to bench/RESULTS.md by hand, with the machine.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

import archlab

ROOT = Path(__file__).parents[1]


def timed(fn: Callable[[], Any], repeats: int) -> list[float]:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def side_by_side(
    ours: Callable[[], Any], peer: Callable[[], Any], repeats: int
) -> tuple[float, float]:
    """Median seconds of each, warmed up, measured in alternating rounds."""
    for fn in (ours, peer, ours, peer):
        fn()
    a: list[float] = []
    b: list[float] = []
    rounds = 5
    for _ in range(rounds):
        a += timed(ours, max(1, repeats // rounds))
        b += timed(peer, max(1, repeats // rounds))
    return statistics.median(a), statistics.median(b)


def spec_dict(stem: str) -> dict[str, Any]:
    return json.loads((ROOT / "specs" / f"{stem}.json").read_text())


def encoder_spec(layers: int, dim: int, heads: int, seq: int, eps: float) -> dict[str, Any]:
    """An encoder stack alone over feature inputs, shaped like BERT-base's."""
    return {
        "version": 1,
        "name": "bert-base-encoder",
        "inputs": {"x": {"kind": "features", "dim": dim, "max_len": seq}},
        "nodes": {
            "encoder": {
                "op": "encoder",
                "input": "x",
                "depth": layers,
                "block": {
                    "attention": {"heads": heads},
                    "mlp": {"activation": "gelu"},
                    "norm": {"placement": "post", "eps": eps},
                },
            }
        },
        "outputs": "encoder",
    }


def without_head(stem: str, head: str, new_output: str) -> dict[str, Any]:
    """A zoo spec with its task head removed, to match a headless peer."""
    spec = spec_dict(stem)
    del spec["nodes"][head]
    spec["outputs"] = new_output
    spec["name"] = f"{stem}-body"
    return spec


def row(name: str, ours: float, peer: float, peer_name: str) -> dict[str, Any]:
    return {
        "workload": name,
        "peer": peer_name,
        "archlab_ms": ours * 1e3,
        "peer_ms": peer * 1e3,
        "ratio": peer / ours,
    }


def bench_transformer_encoder(args: argparse.Namespace) -> dict[str, Any]:
    layers, dim, heads, eps = 12, 768, 12, 1e-12
    model = archlab.compile_spec(encoder_spec(layers, dim, heads, args.seq, eps), seed=0).eval()
    layer = nn.TransformerEncoderLayer(
        dim, heads, 4 * dim, dropout=0.0, activation="gelu", layer_norm_eps=eps, batch_first=True
    )
    peer = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False).eval()
    x = torch.randn(args.batch, args.seq, dim)
    with torch.inference_mode():
        ours, theirs = side_by_side(lambda: model(x), lambda: peer(x), args.repeats)
    return row(
        f"BERT-base encoder, {args.batch}x{args.seq}",
        ours,
        theirs,
        "nn.TransformerEncoder (fast path)",
    )


def bench_hf(args: argparse.Namespace, family: str) -> dict[str, Any] | None:
    """A zoo spec's body against the HF transformers model of the same shape (``bert``, ``gpt2``)."""
    try:
        import transformers
    except ImportError:
        return None
    stem, head, body, vocab, label, peer_name = {
        "bert": ("bert-base", "head", "encoder", 30522, "BERT-base", "BertModel"),
        "gpt2": ("gpt2-small", "lm_head", "norm", 50257, "GPT-2 small", "GPT2Model"),
    }[family]
    config = getattr(transformers, peer_name.replace("Model", "Config"))(attn_implementation="sdpa")
    peer = getattr(transformers, peer_name)(config).eval()
    model = archlab.compile_spec(without_head(stem, head, body), seed=0).eval()
    ids = torch.randint(1, vocab, (args.batch, args.seq))
    extra = {"use_cache": False} if family == "gpt2" else {}
    with torch.inference_mode():
        ours, theirs = side_by_side(
            lambda: model(ids), lambda: peer(input_ids=ids, **extra), args.repeats
        )
    return row(f"{label}, {args.batch}x{args.seq}", ours, theirs, f"HF {peer_name} (sdpa)")


def tooling_times() -> dict[str, float]:
    gpt2 = ROOT / "specs" / "gpt2-small.json"
    arch = [sys.executable, "-m", "archlab", "validate", str(gpt2)]
    start = time.perf_counter()
    subprocess.run(arch, check=True, capture_output=True)
    validate_s = time.perf_counter() - start
    start = time.perf_counter()
    archlab.load_spec(gpt2)
    load_s = time.perf_counter() - start
    start = time.perf_counter()
    archlab.compile_spec(gpt2)
    compile_s = time.perf_counter() - start
    return {"arch validate (process)": validate_s, "load_spec": load_s, "compile_spec": compile_s}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--json", type=Path, help="also write the results as JSON")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    print(
        f"# archlab {archlab.__version__}, torch {torch.__version__}, python {platform.python_version()}, "
        f"{platform.machine()}, {torch.get_num_threads()} threads, float32 inference on the CPU"
    )
    rows = [bench_transformer_encoder(args)]
    for extra in (bench_hf(args, "bert"), bench_hf(args, "gpt2")):
        if extra is None:
            print("# transformers is not installed: HF peers skipped (pip install -e .[bench])")
        else:
            rows.append(extra)
    print(
        "\n| workload | peer | archlab ms | peer ms | ratio (peer/archlab) |\n|---|---|---:|---:|---:|"
    )
    for r in rows:
        print(
            f"| {r['workload']} | {r['peer']} | {r['archlab_ms']:.1f} | {r['peer_ms']:.1f} | {r['ratio']:.2f} |"
        )
    tools = tooling_times()
    print("\n| spec tooling, GPT-2 small | seconds |\n|---|---:|")
    for name, seconds in tools.items():
        print(f"| {name} | {seconds:.3f} |")
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "tooling": tools}, indent=2))


if __name__ == "__main__":
    main()
