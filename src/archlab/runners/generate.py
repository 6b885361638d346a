"""``arch generate`` as a function: a weights file or a run's checkpoint continues a prompt.

The model comes from a weights file archlab wrote or from a registry run, resolved to its
checkpoint as ``--init RUN`` resolves it (``runners.init.weights_file``). A run trained on
``text:`` data recorded its vocabulary (``TextVocab``): a text prompt is encoded with it and
the output decoded with it. A model whose prompt input has the 256 byte values as vocabulary
takes a text prompt as UTF-8 bytes. Any other model reads and writes ids.

For an encoder-decoder, the prompt is the source; the output starts from a start id (for a run
trained on ``seq2seq:`` data, that data's BOS id unless one is given).

``generate_from`` checks every request before a token is computed, and every problem a user can
fix is a ``GenerateError`` (exit code 2 in the CLI). New tokens go to ``stream`` as they are
chosen (beam search hands them over once it has chosen).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from archlab.compiler.decoding import DecodeError, DecodePlan, decode_plan
from archlab.compiler.devices import resolve_device
from archlab.compiler.model import CompiledModel, load_compiled
from archlab.errors import UserInputError
from archlab.runners.data import BOS_ID, DataError
from archlab.runners.data.text import TextDecoder, TextVocab
from archlab.runners.init import InitError, run_checkpoint
from archlab.specs.models import TokensInput

#: receives token ids as they are shown, with their text when the model's vocabulary is text
#: (None otherwise): first the prompt (decoder-only models), then the new tokens
Stream = Callable[[list[int], str | None], None]


class GenerateError(UserInputError):
    """A request ``arch generate`` cannot serve: the model, the prompt or an option."""


@dataclass(frozen=True)
class Writer:
    """A model ready to generate, with what its source says about reading and writing it.

    ``vocab``: the text vocabulary a prompt is encoded with (a text run's recorded one, or
    bytes for a 256-id prompt input), None when prompts must be ids; ``recorded``: the vocabulary
    is the run's own, so output is shown as text even for a prompt given as ids;
    ``start_id``: an encoder-decoder's default start id; ``seq2seq``: trained on ``seq2seq:``
    data, whose outputs are as long as their sources."""

    name: str
    model: CompiledModel
    device: torch.device
    plan: DecodePlan
    vocab: TextVocab | None
    recorded: bool
    start_id: int | None
    seq2seq: bool

    @property
    def prompt_input(self) -> str:
        """The input a prompt feeds: the decoded one, or an encoder-decoder's source."""
        return self.plan.fixed[0] if self.plan.encoder_decoder else self.plan.input

    def input_spec(self, name: str) -> TokensInput:
        inp = self.model.spec.inputs[name]
        assert isinstance(inp, TokensInput)
        return inp


@dataclass(frozen=True)
class GenerateOptions:
    """One request: the prompt as text (``prompt``) or as ids (``ids``), and how to decode.

    ``temperature`` None samples at 1.0, 0 decodes greedily; ``num_beams`` > 1 is beam search
    (deterministic: no temperature, top_k or top_p). ``max_new_tokens`` None: as many as the
    prompt input's ``max_len`` leaves room for (for an encoder-decoder trained on ``seq2seq:``
    data, the source's length). ``seed`` None: a fresh seed, reported in the result."""

    prompt: str | None = None
    ids: Sequence[int] | None = None
    max_new_tokens: int | None = None
    temperature: float | None = None
    top_k: int | None = None
    top_p: float | None = None
    num_beams: int = 1
    length_penalty: float = 1.0
    seed: int | None = None
    eos_id: int | None = None
    start_id: int | None = None


@dataclass(frozen=True)
class Generation:
    """What was generated: ``ids`` (prompt, or the start id of an encoder-decoder, then the new
    tokens), ``prompt_tokens`` of them given, ``new_tokens`` generated; ``text`` when the
    vocabulary is text (the whole row; an encoder-decoder's new tokens); ``src`` the source of
    an encoder-decoder; ``seed`` of the sampling (None when decoding was deterministic)."""

    ids: list[list[int]]
    prompt_tokens: int
    new_tokens: int
    seed: int | None
    text: list[str] | None = None
    src: list[list[int]] | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"ids": self.ids}
        if self.text is not None:
            out["text"] = self.text
        if self.src is not None:
            out["src"] = self.src
        out.update(prompt_tokens=self.prompt_tokens, new_tokens=self.new_tokens, seed=self.seed)
        return out


def generate_from(
    source: str,
    options: GenerateOptions,
    *,
    registry_url: str | None = None,
    device: str | None = None,
    stream: Stream | None = None,
) -> Generation:
    """Continue ``options``' prompt with the model ``source`` names: a weights file, or a run
    of the registry at ``registry_url`` (found as ``archlab.Registry`` finds it)."""
    return write(load_writer(source, registry_url=registry_url, device=device), options, stream)


def load_writer(
    source: str, *, registry_url: str | None = None, device: str | None = None
) -> Writer:
    """The model ``source`` names, checked to be one that generates."""
    path = Path(source)
    config: dict[str, Any] = {}
    name = str(path)
    if not path.is_file():
        if path.exists():
            raise GenerateError(f"{source} is a folder; give a .safetensors file or a run id")
        if path.suffix or len(path.parts) > 1:  # a path, not a run id
            raise GenerateError(f"{source}: no such file")
        path, config = _run_checkpoint(source, registry_url)
        name = f"run {source}"
    where = resolve_device(device)
    model = load_compiled(path, device=where)
    try:
        plan = decode_plan(model.graph)
    except DecodeError as exc:
        raise GenerateError(f"{name} cannot generate: {exc}") from None
    if len(plan.fixed) > 1:
        raise GenerateError(
            f"{name} reads {len(plan.fixed)} fixed inputs ({', '.join(plan.fixed)}); generation "
            "from the command line gives one source"
        )
    prompt_input = plan.fixed[0] if plan.fixed else plan.input
    inp = model.spec.inputs[prompt_input]
    assert isinstance(inp, TokensInput)
    vocab, recorded = None, False
    if isinstance(config.get("text_vocab"), dict):
        vocab, recorded = TextVocab.from_record(config["text_vocab"], inp.pad_id), True
    elif inp.vocab_size == 256:
        vocab = TextVocab("byte")
    seq2seq = str(config.get("data", "")).startswith("seq2seq:")
    start = BOS_ID if seq2seq and plan.encoder_decoder else None
    return Writer(name, model, where, plan, vocab, recorded, start, seq2seq)


def _run_checkpoint(source: str, registry_url: str | None) -> tuple[Path, dict[str, Any]]:
    """A run's checkpoint and its recorded configuration."""
    try:
        path, run = run_checkpoint(source, registry_url, what="arch generate")
    except InitError as exc:
        raise GenerateError(str(exc)) from None
    return path, run.config


def write(writer: Writer, options: GenerateOptions, stream: Stream | None = None) -> Generation:
    """Generate with ``writer`` as ``options`` ask; new tokens go to ``stream`` as they come."""
    prompt = _prompt_ids(writer, options)
    sampling = _sampling(options)
    generator, seed = None, None
    if sampling["do_sample"]:
        seed = options.seed if options.seed is not None else random.SystemRandom().randrange(2**63)
        generator = torch.Generator(device=writer.device).manual_seed(seed)
    decodes = writer.vocab is not None and (writer.recorded or options.prompt is not None)
    shown = _Shown(writer.vocab.decoder() if decodes and writer.vocab else None, stream)
    tensor = torch.tensor([prompt], dtype=torch.long, device=writer.device)
    plan = writer.plan
    if plan.encoder_decoder:
        start = options.start_id if options.start_id is not None else writer.start_id
        if start is None:
            raise GenerateError(
                f"{writer.name} is an encoder-decoder: its output starts from a start id (the "
                "BOS token it was trained with); give it with start_id (--start-id)"
            )
        args: dict[str, Any] = {"start_id": start, plan.fixed[0]: tensor}
        ids, given = None, 1
    else:
        shown.hold(prompt)
        args, ids, given = {}, tensor, len(prompt)
    new = _max_new(writer, options, len(prompt))
    try:
        out = writer.model.generate(
            ids,
            new,
            **sampling,
            generator=generator,
            num_beams=options.num_beams,
            length_penalty=options.length_penalty,
            eos_id=options.eos_id,
            streamer=shown.tokens if stream is not None else None,
            suppress_ids=_unused(writer, plan.vocab) or None,
            **args,
        )
    except DecodeError as exc:
        raise GenerateError(f"{writer.name}: {exc}") from None
    rows: list[list[int]] = out.tolist()
    if stream is not None:
        shown.finish(rows[0][given + shown.streamed :])
    text = None
    if decodes and writer.vocab is not None:
        first = 0 if not plan.encoder_decoder else given
        text = [writer.vocab.decode(row[first:]) for row in rows]
    src = [prompt] if plan.encoder_decoder else None
    return Generation(rows, given, len(rows[0]) - given, seed, text, src)


class _Shown:
    """What ``stream`` has been given: the prompt is held back until the first new token (a
    request refused before decoding shows nothing), text through one incremental decoder."""

    def __init__(self, decoder: TextDecoder | None, stream: Stream | None) -> None:
        self.decoder, self.stream = decoder, stream
        self.pending: list[int] = []
        self.streamed = 0  # new tokens shown

    def hold(self, prompt: list[int]) -> None:
        self.pending = list(prompt)

    def _show(self, ids: list[int]) -> None:
        if self.stream is None:
            return
        ids = [*self.pending, *ids]
        self.pending = []
        if ids:
            self.stream(ids, self.decoder.feed(ids) if self.decoder is not None else None)

    def tokens(self, column: torch.Tensor) -> None:
        self.streamed += 1
        self._show(column.tolist())

    def finish(self, rest: list[int]) -> None:
        """The tokens not streamed yet (beam search's, or the prompt alone), then the text an
        unfinished UTF-8 character held back."""
        self._show(rest)
        tail = self.decoder.finish() if self.decoder is not None else ""
        if tail and self.stream is not None:
            self.stream([], tail)


def _unused(writer: Writer, vocab: int) -> list[int]:
    """Ids a recorded char vocabulary does not use: never generated, so all output decodes."""
    if writer.vocab is None or not writer.recorded:
        return []
    return writer.vocab.unused_ids(vocab)


def _prompt_ids(writer: Writer, options: GenerateOptions) -> list[int]:
    """The prompt as ids of the prompt input, checked against its vocabulary."""
    if (options.prompt is None) == (options.ids is None):
        raise GenerateError("give the prompt as text (--prompt) or as ids (--ids), one of them")
    name = writer.prompt_input
    inp = writer.input_spec(name)
    if options.prompt is not None:
        if writer.vocab is None:
            raise GenerateError(
                f"{writer.name} has no recorded text vocabulary (it was not trained with --data "
                f"text:, and its input `{name}` has vocab_size {inp.vocab_size}, not the 256 "
                'bytes): give the prompt as token ids with --ids "1 2 3"'
            )
        try:
            ids = writer.vocab.encode(options.prompt)
        except DataError as exc:
            raise GenerateError(f"--prompt: {exc}") from None
    else:
        ids = [int(i) for i in options.ids or ()]
        bad = [i for i in ids if not 0 <= i < inp.vocab_size]
        if bad:
            raise GenerateError(
                f"--ids: the input `{name}` has vocab_size {inp.vocab_size} (ids 0.."
                f"{inp.vocab_size - 1}); outside it: {', '.join(map(str, bad[:5]))}"
            )
    if not ids:
        raise GenerateError("the prompt is empty; give at least one token")
    if len(ids) > inp.max_len:
        what = "source" if writer.plan.encoder_decoder else "prompt"
        raise GenerateError(
            f"the {what} has {len(ids)} tokens, {len(ids) - inp.max_len} more than the input "
            f"`{name}`'s max_len {inp.max_len}; shorten it"
        )
    return ids


def _sampling(options: GenerateOptions) -> dict[str, Any]:
    """The sampling arguments of ``CompiledModel.generate``."""
    beams = options.num_beams > 1
    if beams and (options.temperature, options.top_k, options.top_p) != (None, None, None):
        raise GenerateError(
            "beam search (num_beams > 1) is deterministic: drop --temperature, --top-k and "
            "--top-p, or sample with --num-beams 1"
        )
    temperature = 1.0 if options.temperature is None else options.temperature
    if temperature < 0:
        raise GenerateError(f"temperature must be >= 0 (got {temperature}; 0: greedy decoding)")
    return {
        "do_sample": not beams and temperature > 0,
        "temperature": temperature if temperature > 0 else 1.0,
        "top_k": options.top_k,
        "top_p": options.top_p,
    }


def _max_new(writer: Writer, options: GenerateOptions, prompt: int) -> int:
    """The number of new tokens asked for, or as many as fit."""
    if options.max_new_tokens is not None:
        return options.max_new_tokens
    plan = writer.plan
    if plan.encoder_decoder:
        room = plan.max_len - 1  # after the start id
        return min(prompt, room) if writer.seq2seq else room
    room = plan.max_len - prompt
    if room == 0 and plan.window is not None:
        return plan.max_len  # a sliding window decodes past max_len
    if room == 0:
        raise GenerateError(
            f"the prompt fills the input `{plan.input}`'s max_len of {plan.max_len} tokens: "
            "nothing is left to generate; shorten it"
        )
    return room


__all__ = [
    "GenerateError",
    "GenerateOptions",
    "Generation",
    "Stream",
    "Writer",
    "generate_from",
    "load_writer",
    "write",
]
