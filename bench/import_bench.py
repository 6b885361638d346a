"""Importing a GPT-2-small-sized checkpoint with archlab against transformers' ``from_pretrained``.

    python bench/import_bench.py [--layers 12] [--repeats 3] [--threads 2] [--dtype float32]

Saves a randomly initialised ``GPT2LMHeadModel`` (``GPT2Config()`` defaults: 124M parameters,
tied head) with ``save_pretrained`` into a temporary folder, then times, alternating the two,
``archlab.import_pretrained(folder)`` (read, convert, compile, load; on the CPU, float32 or
``--dtype``) and ``GPT2LMHeadModel.from_pretrained(folder)`` in the same dtype, and prints the median of each and the ratio
``archlab / transformers`` (below 1.0: archlab is faster). Needs transformers
(``pip install -e .[interop]``).

Not a test: nothing here asserts a time. Results go to bench/RESULTS.md by hand, with the machine.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from typing import Any

import torch
import transformers

import archlab


def timed(fn: Callable[[], Any]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def load_reference(folder: str, dtype: str) -> Any:
    """transformers' model of ``folder`` in ``dtype`` (the keyword is ``torch_dtype`` before 5)."""
    major = int(transformers.__version__.split(".")[0])
    keyword = "dtype" if major >= 5 else "torch_dtype"
    model = transformers.GPT2LMHeadModel.from_pretrained(folder, **{keyword: getattr(torch, dtype)})
    return model.eval()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=12)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    with tempfile.TemporaryDirectory() as folder:
        config = transformers.GPT2Config(n_layer=args.layers)
        transformers.GPT2LMHeadModel(config).save_pretrained(folder)
        params = sum(p.numel() for p in archlab.import_pretrained(folder).parameters())
        ours, theirs = [], []
        for _ in range(args.repeats):
            ours.append(timed(lambda: archlab.import_pretrained(folder, dtype=args.dtype)))
            theirs.append(timed(lambda: load_reference(folder, args.dtype)))
    a, t = statistics.median(ours), statistics.median(theirs)
    print(
        f"GPT-2, {args.layers} layers, {params:,} parameters; torch {torch.__version__}, "
        f"transformers {transformers.__version__}, {platform.processor() or platform.machine()}, "
        f"{args.threads} threads, {args.dtype}"
    )
    print(f"archlab.import_pretrained   {a:.2f} s (median of {args.repeats})")
    print(f"from_pretrained             {t:.2f} s")
    print(f"ratio archlab / transformers {a / t:.2f}")


if __name__ == "__main__":
    main()
