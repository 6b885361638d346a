"""Greedy decoding speed of a GPT-2-small-sized model: archlab ``generate`` against transformers.

    python bench/generate_bench.py [--batch 1 8] [--prompt 32] [--new-tokens 256] [--repeats 3]
                                   [--threads 2] [--quick]

Saves a randomly initialised ``GPT2LMHeadModel`` (``GPT2Config()`` defaults: 12 layers, 124M
parameters, tied head) with ``save_pretrained``, imports the folder with
``archlab.import_pretrained`` and decodes, for each batch size, a random prompt greedily with
``CompiledModel.generate`` and with transformers' ``generate`` (its dynamic KV cache) on the same
weights, alternating the two, float32 on the CPU. Prints the median tokens per second of each
(batch x new tokens / seconds, prefill included), the ratio archlab / transformers (above 1.0:
archlab is faster), whether both chose the same tokens, and the mean time of one decoding step
at a few ranges of positions (taken from each library's streamer callback), which stays flat when
the cache is doing its work. ``--quick``: 2 layers, 32 new tokens, one repeat (a smoke run).
Needs transformers (``pip install -e .[interop]``).

Not a test: nothing here asserts a time. Results go to bench/RESULTS.md by hand, with the machine.
"""

from __future__ import annotations

import argparse
import itertools
import platform
import statistics
import tempfile
import time
from typing import Any

import torch
import transformers

import archlab


class Clock:
    """Records the time each new column of tokens arrives (archlab's streamer; also
    transformers' ``BaseStreamer``, whose first ``put`` is the prompt)."""

    def __init__(self) -> None:
        self.times: list[float] = []

    def __call__(self, token: torch.Tensor) -> None:
        self.times.append(time.perf_counter())

    def put(self, value: torch.Tensor) -> None:
        self.times.append(time.perf_counter())

    def end(self) -> None:
        pass


def ours(model: Any, ids: torch.Tensor, new: int) -> tuple[float, list[float], torch.Tensor]:
    """Seconds, step times (one per token after the first) and the tokens of archlab's run."""
    clock = Clock()
    start = time.perf_counter()
    out = model.generate(ids, new, streamer=clock)
    seconds = time.perf_counter() - start
    return seconds, [b - a for a, b in itertools.pairwise(clock.times)], out


def theirs(model: Any, ids: torch.Tensor, new: int) -> tuple[float, list[float], torch.Tensor]:
    """The same for transformers' ``generate`` (greedy, its default dynamic cache)."""
    clock = Clock()
    start = time.perf_counter()
    with torch.inference_mode():
        out = model.generate(
            ids,
            attention_mask=torch.ones_like(ids),
            max_new_tokens=new,
            do_sample=False,
            streamer=clock,
        )
    seconds = time.perf_counter() - start
    times = clock.times[1:]  # the first put is the prompt
    return seconds, [b - a for a, b in itertools.pairwise(times)], out


def ranges(prompt: int, new: int) -> list[tuple[int, int]]:
    """Position ranges [lo, hi) for the per-step table: near the start, middle and end."""
    width = max(new // 8, 1)
    middle = prompt + new // 2
    end = prompt + new - width
    return [
        (prompt, prompt + width),
        (middle - width // 2, middle + width - width // 2),
        (end, end + width),
    ]


def step_means(steps: list[list[float]], prompt: int, spans: list[tuple[int, int]]) -> list[float]:
    """Mean milliseconds of a step whose new token sits at positions in each span, over runs.
    Step i (from 0) feeds the token at position prompt + i and produces the next one."""
    means = []
    for lo, hi in spans:
        values = [s[p - prompt] for s in steps for p in range(lo, hi) if 0 <= p - prompt < len(s)]
        means.append(1000 * statistics.fmean(values) if values else float("nan"))
    return means


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--prompt", type=int, default=32)
    parser.add_argument("--new-tokens", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--layers", type=int, default=12)
    parser.add_argument("--quick", action="store_true", help="2 layers, 32 new tokens, 1 repeat")
    args = parser.parse_args()
    if args.quick:
        args.layers, args.new_tokens, args.repeats = 2, 32, 1
    torch.set_num_threads(args.threads)
    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    config = transformers.GPT2Config(n_layer=args.layers)
    torch.manual_seed(0)
    hf = transformers.GPT2LMHeadModel(config).eval()
    # greedy decoding runs the full length: no end-of-sequence stop in either library
    hf.generation_config.eos_token_id = None
    hf.generation_config.pad_token_id = 0
    with tempfile.TemporaryDirectory() as folder:
        hf.save_pretrained(folder)
        model = archlab.import_pretrained(folder).eval()
    params = sum(p.numel() for p in model.parameters())
    print(
        f"GPT-2, {args.layers} layers, {params:,} parameters; prompt {args.prompt}, "
        f"{args.new_tokens} new tokens, greedy, float32; torch {torch.__version__}, "
        f"transformers {transformers.__version__}, {platform.processor() or platform.machine()}, "
        f"{args.threads} threads; median of {args.repeats}"
    )
    spans = ranges(args.prompt, args.new_tokens)
    for batch in args.batch:
        gen = torch.Generator().manual_seed(batch)
        ids = torch.randint(0, config.vocab_size, (batch, args.prompt), generator=gen)
        ours(model, ids, 4), theirs(hf, ids, 4)  # warm-up
        a_secs, t_secs, a_steps, t_steps = [], [], [], []
        same = True
        for _ in range(args.repeats):
            a, a_step, a_out = ours(model, ids, args.new_tokens)
            t, t_step, t_out = theirs(hf, ids, args.new_tokens)
            a_secs.append(a), t_secs.append(t), a_steps.append(a_step), t_steps.append(t_step)
            same = same and torch.equal(a_out, t_out)
        tokens = batch * args.new_tokens
        a_rate, t_rate = tokens / statistics.median(a_secs), tokens / statistics.median(t_secs)
        print(
            f"batch {batch}: archlab {a_rate:7.1f} tok/s, transformers {t_rate:7.1f} tok/s, "
            f"ratio {a_rate / t_rate:.2f}; same tokens: {same}"
        )
        a_means = step_means(a_steps, args.prompt, spans)
        t_means = step_means(t_steps, args.prompt, spans)
        for (lo, hi), a_ms, t_ms in zip(spans, a_means, t_means, strict=True):
            print(
                f"  step at positions {lo:4d}-{hi:4d}: archlab {a_ms:6.2f} ms, "
                f"transformers {t_ms:6.2f} ms"
            )


if __name__ == "__main__":
    main()
