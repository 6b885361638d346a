"""Explanation throughput against training throughput, and the perturbation AUC table.

    python bench/explain_bench.py [--batch 8] [--threads 2] [--repeats 5] [--warmup 1]
        [--methods attention rollout generic chefer] [--skip-speed] [--skip-auc]
        [--epochs 30] [--tokens] [--run RUN --registry URL] [--json PATH]

1. **Speed**: DeiT-S/16 (``specs/deit-small-16.json``, random seeded weights, 224 x 224 images) on
   the CPU with ``--threads`` torch threads. The same random batch of ``--batch`` images goes
   through ``archlab.explain`` with each method (eval mode, the predicted class) and through one
   training step (train mode, forward, cross-entropy against random labels, backward, AdamW
   step). Every repeat times each of them once, in an order rotated from repeat to repeat, after
   ``--warmup`` untimed rounds. ``samples/s`` is the batch over the median time; ``ratio`` is a
   method's samples/s over the training step's (the issue's target: at least 0.5x).
2. **AUC**: the perturbation test (``runners.explain_eval``) of every method on the digits
   ViT (``specs/vit-tiny-digits.json``), trained here for ``--epochs`` epochs on ``digits`` in
   a temporary registry (or ``--run RUN --registry URL``: a run trained already), on that run's
   validation split. Lower positive AUC and higher negative AUC are better. ``--tokens``: the
   same test on a token classifier instead (removed tokens masked out): a 2-layer encoder
   without positions, mean-pooled, trained for 12 epochs to say which of the key tokens 1, 2, 3
   a row of 6..12 random filler tokens (4..31, padded to 12) holds; 480 rows, seed 0.

Not a test: nothing here asserts a time. Results go to bench/RESULTS.md by hand, with the machine.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

import archlab
from archlab.runners.explain import METHODS

ROOT = Path(__file__).resolve().parents[1]


def _speed(args: argparse.Namespace) -> dict[str, dict[str, float]]:
    torch.manual_seed(0)
    model = archlab.compile_spec(ROOT / "specs/deit-small-16.json")
    x = torch.randn(args.batch, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    y = torch.randint(0, 1000, (args.batch,), generator=torch.Generator().manual_seed(2))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def step() -> None:
        model.train()
        optimizer.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(model(image=x), y).backward()
        optimizer.step()

    def explainer(method: str) -> Callable[[], None]:
        def run() -> None:
            model.eval()
            archlab.explain(model, method=method, image=x)

        return run

    jobs: dict[str, Callable[[], None]] = {"train step": step}
    jobs.update({m: explainer(m) for m in args.methods})
    times: dict[str, list[float]] = {name: [] for name in jobs}
    names = list(jobs)
    for round_ in range(args.warmup + args.repeats):
        turn = round_ % len(names)
        for name in names[turn:] + names[:turn]:
            start = time.perf_counter()
            jobs[name]()
            if round_ >= args.warmup:
                times[name].append(time.perf_counter() - start)
    train_rate = args.batch / statistics.median(times["train step"])
    out: dict[str, dict[str, float]] = {}
    for name, ts in times.items():
        rate = args.batch / statistics.median(ts)
        spread = (max(ts) - min(ts)) / statistics.median(ts)
        out[name] = {"samples_per_s": rate, "ratio": rate / train_rate, "spread": spread}
    return out


def _auc(args: argparse.Namespace) -> dict[str, Any]:
    from archlab.registry import Registry
    from archlab.runners.config import TrainConfig
    from archlab.runners.explain_eval import evaluate_run
    from archlab.runners.train import train

    with tempfile.TemporaryDirectory() as tmp:
        if args.run is not None:
            registry = Registry(args.registry)
            run_id, trained_s = args.run, 0.0
        else:
            registry = Registry(f"sqlite:///{tmp}/r.db", artifacts=Path(tmp) / "artifacts")
            spec: Any = ROOT / "specs/vit-tiny-digits.json"
            config = TrainConfig(
                data="digits", epochs=args.epochs, batch_size=64, lr=3e-3, warmup=0.1, seed=0
            )
            if args.tokens:
                spec, source = _key_tokens(Path(tmp) / "keys.npz")
                config = TrainConfig(data=source, epochs=12, batch_size=32, lr=3e-3, warmup=0.5)
            started = time.perf_counter()
            run_id = train(spec, config, registry).runs[0]
            trained_s = time.perf_counter() - started
        started = time.perf_counter()
        out = evaluate_run(run_id, None, args.methods, registry)
        out["eval_s"] = time.perf_counter() - started
        out["train_s"] = trained_s
        out["val_acc"] = registry.get(run_id).metrics.get("val_acc")
        registry.close()
    return out


def _key_tokens(path: Path, n: int = 480) -> tuple[dict[str, Any], str]:
    """The key-token classifier's spec and its data (see the module docstring)."""
    import numpy as np

    rng = np.random.default_rng(0)
    x = rng.integers(4, 32, (n, 12))
    lengths = rng.integers(6, 13, n)
    mask = np.arange(12)[None, :] < lengths[:, None]
    y = np.arange(n) % 3
    x[np.arange(n), rng.integers(0, lengths)] = y + 1
    x[~mask] = 0
    np.savez(path, x=x, y=y, ids_mask=mask)
    spec = {
        "version": 1,
        "name": "which-key",
        "inputs": {"ids": {"kind": "tokens", "vocab_size": 32, "max_len": 12}},
        "nodes": {
            "tok": {"op": "embed", "input": "ids", "dim": 32},
            "enc": {
                "op": "encoder",
                "input": "tok",
                "depth": 2,
                "block": {"attention": {"heads": 4}},
            },
            "head": {"op": "classify", "input": "enc", "classes": 3, "pool": "mean"},
        },
        "outputs": "head",
    }
    return spec, f"npz:{path}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--skip-speed", action="store_true")
    parser.add_argument("--skip-auc", action="store_true")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--tokens", action="store_true", help="the key-token classifier")
    parser.add_argument("--run", default=None, help="a trained digits run to evaluate")
    parser.add_argument("--registry", default=None, help="the registry URL of --run")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(
        f"# {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, "
        f"torch {torch.__version__}, archlab {archlab.__version__}, python "
        f"{platform.python_version()}"
    )
    report: dict[str, Any] = {}
    if not args.skip_speed:
        report["speed"] = speed = _speed(args)
        print(f"\nDeiT-S/16, batch {args.batch}, median of {args.repeats}")
        print(f"{'':12} {'samples/s':>10} {'x train':>8} {'spread':>7}")
        for name, row in speed.items():
            print(
                f"{name:12} {row['samples_per_s']:10.2f} {row['ratio']:7.2f}x {row['spread']:6.0%}"
            )
    if not args.skip_auc:
        report["auc"] = out = _auc(args)
        print(
            f"\n{'key-token classifier' if args.tokens else 'digits ViT'} (val_acc {out['val_acc']}, trained in {out['train_s']:.0f} s), "
            f"{out['examples']} validation samples, evaluated in {out['eval_s']:.0f} s"
        )
        print(f"{'':12} {'AUC pos':>8} {'AUC neg':>8}   (pos lower / neg higher is better)")
        for method, row in out["results"].items():
            print(f"{method:12} {row['auc_pos']:8.3f} {row['auc_neg']:8.3f}")
    if args.json is not None:
        args.json.write_text(json.dumps(report, indent=2, default=str))


if __name__ == "__main__":
    main()
