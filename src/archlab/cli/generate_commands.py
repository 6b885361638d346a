"""``arch generate``: continue a prompt with a weights file or a run's checkpoint."""

from __future__ import annotations

import re
from typing import Any

import click

from archlab.cli.formatting import dumps
from archlab.cli.options import device_option, registry_option, threads_option

_SEPARATORS = re.compile(r"[\s,]+")


class TokenIds(click.ParamType):
    """``"1 2 3"`` (or ``1,2,3``): whole numbers, as a list."""

    name = "ids"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, list):
            return value
        words = [w for w in _SEPARATORS.split(str(value).strip()) if w]
        bad = [w for w in words if not re.fullmatch(r"[+-]?\d+", w)]
        if bad or not words:
            shown = ", ".join(repr(w) for w in bad[:3]) or "nothing"
            self.fail(
                f"takes whole-number token ids separated by spaces or commas, e.g. "
                f'--ids "1 2 3"; got {shown}',
                param,
                ctx,
            )
        return [int(w) for w in words]


@click.command("generate")
@click.argument("source", metavar="MODEL|RUN")
@click.option("--prompt", metavar="TEXT",
              help="The prompt as text: encoded with the vocabulary the run was trained on "
              "(text: data), or as UTF-8 bytes for a 256-id vocabulary.")  # fmt: skip
@click.option("--ids", type=TokenIds(), metavar='"1 2 3"',
              help="The prompt as token ids (an encoder-decoder's source).")  # fmt: skip
@click.option("--max-new-tokens", type=click.IntRange(min=0), metavar="N",
              help="Tokens to generate [default: as many as max_len leaves room for; for a run "
              "trained on seq2seq: data, the source's length].")  # fmt: skip
@click.option("--temperature", type=float, metavar="T",
              help="Sampling temperature; 0 decodes greedily [default: 1].")  # fmt: skip
@click.option("--top-k", type=int, metavar="K", help="Sample among the K likeliest tokens.")
@click.option("--top-p", type=float, metavar="P",
              help="Nucleus sampling: among the likeliest tokens reaching probability P, in (0, 1].")  # fmt: skip
@click.option("--num-beams", type=int, default=1, show_default=True, metavar="N",
              help="Beam search with N beams (deterministic: no sampling options).")  # fmt: skip
@click.option("--seed", type=int, metavar="S",
              help="Seed of the sampling: the same seed, the same output [default: a fresh one, "
              "printed].")  # fmt: skip
@click.option("--eos-id", type=int, metavar="ID", help="Stop once the model writes this id.")
@click.option("--start-id", type=int, metavar="ID",
              help="Encoder-decoder: the id the output starts from [default: the BOS id of "
              "seq2seq: data for a run trained on it].")  # fmt: skip
@device_option("auto", "auto (CUDA when there is one), cpu, cuda or cuda:N.")
@threads_option
@click.option("--json", "as_json", is_flag=True,
              help="No streaming; print one JSON object at the end: ids, text (when the "
              "vocabulary is text), prompt_tokens, new_tokens, seed.")  # fmt: skip
@registry_option
def generate_command(
    source: str,
    prompt: str | None,
    ids: list[int] | None,
    max_new_tokens: int | None,
    temperature: float | None,
    top_k: int | None,
    top_p: float | None,
    num_beams: int,
    seed: int | None,
    eos_id: int | None,
    start_id: int | None,
    device: str,
    threads: int | None,
    as_json: bool,
    registry_url: str | None,
) -> None:
    """Continue a prompt with MODEL (a weights file archlab wrote) or RUN's checkpoint.

    A run trained on text: data reads and writes text with the vocabulary it recorded
    (byte- or char-level); a model with the 256 byte values as vocabulary takes --prompt as
    UTF-8; any other model takes --ids and prints ids. Tokens are printed as they come.

    \b
    arch generate RUN --prompt "To be, or not" --max-new-tokens 200 --seed 0
    arch generate RUN --prompt "To be" --temperature 0          # greedy
    arch generate model.safetensors --ids "5 17 3" --num-beams 4 --json
    arch generate SEQ2SEQ_RUN --ids "3 4 5 6"                    # the source; starts from BOS
    """
    from archlab.runners.generate import GenerateOptions, generate_from
    from archlab.runners.threads import configure_threads
    from archlab.textsafe import printable_text

    configure_threads(threads)
    options = GenerateOptions(
        prompt=prompt,
        ids=ids,
        max_new_tokens=max_new_tokens,
        temperature=temperature,
        top_k=top_k,
        top_p=top_p,
        num_beams=num_beams,
        seed=seed,
        eos_id=eos_id,
        start_id=start_id,
    )
    shown = [0]  # pieces printed so far

    def stream(tokens: list[int], text: str | None) -> None:
        if text is not None:
            click.echo(printable_text(text), nl=False)
        elif tokens:
            click.echo(("" if not shown[0] else " ") + " ".join(map(str, tokens)), nl=False)
        shown[0] += 1

    result = generate_from(
        source,
        options,
        registry_url=registry_url,
        device=device,
        stream=None if as_json else stream,
    )
    if as_json:
        click.echo(dumps(result.to_dict()))
        return
    click.echo()
    given = (
        f"{result.prompt_tokens} prompt" if result.src is None else f"{len(result.src[0])} source"
    )
    seed_text = f", seed {result.seed}" if result.seed is not None else ""
    click.echo(f"({given} tokens, {result.new_tokens} new{seed_text})", err=True)


COMMANDS = [generate_command]
