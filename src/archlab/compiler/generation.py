"""``CompiledModel.generate``: autoregressive decoding with the caches of ``compiler.decoding``.

Greedy decoding, sampling (temperature, top-k, nucleus top-p, a seeded ``generator``) and beam
search (``num_beams`` with a length penalty), for decoder-only and encoder-decoder specs. A
batch of prompts of different lengths is left-padded, with ``<input>_mask`` (True = real
token): each row's learned or sinusoidal positions count from its first real token, so a
padded row decodes like the same prompt alone. Rows that emit ``eos_id`` continue as
``pad_id`` while the others go on; decoding stops early once every row has finished.

Every request is checked before a token is computed: a ``DecodeError`` names the argument, the
value and the limit (the CLI prints it and exits with code 2).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from archlab.compiler.builders import mask_pattern
from archlab.compiler.decoding import DecodeError, DecodePlan, Decoding, decode_plan
from archlab.compiler.devices import device_of
from archlab.specs.analysis import TokensShape

if TYPE_CHECKING:
    from archlab.compiler.model import CompiledModel

#: called with each new column of tokens `(B,)` as it is chosen (streaming)
Streamer = Callable[[Tensor], None]


@dataclass(frozen=True)
class Sampling:
    """How the next token is chosen from the logits: greedy, or sampled after temperature,
    top-k and top-p (nucleus) filtering."""

    do_sample: bool = False
    temperature: float = 1.0
    top_k: int | None = None
    top_p: float | None = None
    generator: torch.Generator | None = None

    def check(self) -> None:
        if not self.temperature > 0:
            raise DecodeError(f"temperature must be > 0 (got {self.temperature})")
        if self.top_k is not None and self.top_k < 1:
            raise DecodeError(f"top_k must be at least 1 (got {self.top_k})")
        if self.top_p is not None and not 0 < self.top_p <= 1:
            raise DecodeError(f"top_p must lie in (0, 1] (got {self.top_p})")

    def choose(self, logits: Tensor) -> Tensor:
        """The next token of each row. Shape: logits `(B, V)` -> `(B,)` int64."""
        if not self.do_sample:
            return logits.argmax(dim=-1)
        scores = logits.float() / self.temperature
        if self.top_k is not None and self.top_k < scores.shape[-1]:
            kth = scores.topk(self.top_k, dim=-1).values[:, -1:]  # (B, 1)
            scores = scores.masked_fill(scores < kth, float("-inf"))
        if self.top_p is not None and self.top_p < 1:
            ordered, order = scores.sort(dim=-1, descending=True)
            before = ordered.softmax(dim=-1).cumsum(dim=-1) - ordered.softmax(dim=-1)
            drop = before >= self.top_p  # keeps the smallest set reaching top_p, at least one
            scores = scores.masked_fill(drop.scatter(-1, order, drop), float("-inf"))
        probs = scores.softmax(dim=-1)
        return torch.multinomial(probs, 1, generator=self.generator).squeeze(-1)


@dataclass(frozen=True)
class Request:
    """A checked generation request: the prompt, its padding, the fixed inputs and limits."""

    plan: DecodePlan
    prompt: Tensor  # (B, T)
    mask: Tensor | None  # (B, T) True = real, left padding; None when nothing is padded
    shift: Tensor | None  # (B,) left padding per row
    fixed: dict[str, Tensor]
    max_new_tokens: int
    eos_id: int | None
    pad_id: int | None
    #: ids never chosen, True at their index `(V,)` (a vocabulary with unused ids); or None
    suppress: Tensor | None = None

    def allowed(self, logits: Tensor) -> Tensor:
        """``logits`` with the suppressed ids at -inf."""
        if self.suppress is None:
            return logits
        return logits.masked_fill(self.suppress, float("-inf"))


def generate(
    model: CompiledModel,
    ids: Tensor | None = None,
    max_new_tokens: int = 16,
    *,
    do_sample: bool = False,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    eos_id: int | None = None,
    pad_id: int | None = None,
    ids_mask: Tensor | None = None,
    generator: torch.Generator | None = None,
    num_beams: int = 1,
    length_penalty: float = 1.0,
    start_id: int | None = None,
    static: bool = False,
    compile: dict[str, Any] | None = None,
    streamer: Streamer | None = None,
    suppress_ids: Sequence[int] | None = None,
    **inputs: Tensor,
) -> Tensor:
    """Continue the prompt ``ids`` `(B, T)` by up to ``max_new_tokens``. -> `(B, T + new)`.

    See ``CompiledModel.generate`` for the arguments.
    """
    plan = decode_plan(model.graph)
    sampling = Sampling(do_sample, temperature, top_k, top_p, generator)
    sampling.check()
    if num_beams < 1:
        raise DecodeError(f"num_beams must be at least 1 (got {num_beams})")
    if num_beams > 1 and do_sample:
        raise DecodeError("beam search is deterministic: use num_beams > 1 or do_sample, not both")
    request = _request(model, plan, ids, ids_mask, max_new_tokens, eos_id, pad_id, start_id, inputs)
    if suppress_ids is not None:
        request = dataclasses.replace(request, suppress=_suppressed(plan, suppress_ids, model))
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            if num_beams > 1:
                return _beam_search(model, request, num_beams, length_penalty, static, compile)
            return _sample(model, request, sampling, static, compile, streamer)
    finally:
        model.train(was_training)


def _request(
    model: CompiledModel,
    plan: DecodePlan,
    ids: Tensor | None,
    ids_mask: Tensor | None,
    max_new_tokens: int,
    eos_id: int | None,
    pad_id: int | None,
    start_id: int | None,
    inputs: dict[str, Tensor],
) -> Request:
    """Check every argument against the spec; the prompt, its padding and the fixed inputs."""
    name = plan.input
    device = device_of(model)
    if ids is None:
        ids = inputs.pop(name, None)
    if ids_mask is None:
        ids_mask = inputs.pop(f"{name}_mask", None)
    expected = {*plan.fixed, *(f"{f}_mask" for f in plan.fixed)}
    unknown = sorted(set(inputs) - expected)
    if unknown:
        takes = ", ".join(sorted(expected)) or "nothing besides the prompt"
        raise DecodeError(f"generate got unknown inputs {unknown}; this spec takes {takes}")
    missing = [f for f in plan.fixed if f not in inputs]
    if missing:
        raise DecodeError(f"this encoder-decoder needs its source input(s) {missing}")
    if not isinstance(max_new_tokens, int) or max_new_tokens < 0:
        raise DecodeError(f"max_new_tokens must be a whole number >= 0 (got {max_new_tokens!r})")
    for what, value in (("eos_id", eos_id), ("pad_id", pad_id), ("start_id", start_id)):
        if value is not None and not 0 <= value < plan.vocab:
            raise DecodeError(f"{what} {value} lies outside the vocabulary 0..{plan.vocab - 1}")
    if ids is None:
        if not plan.encoder_decoder or start_id is None:
            wanted = "start_id (or a target prompt)" if plan.encoder_decoder else "a prompt (ids)"
            raise DecodeError(f"generate needs {wanted}")
        batch = next(iter(inputs.values())).shape[0]
        ids = torch.full((batch, 1), start_id, dtype=torch.long, device=device)
    ids = _prompt(ids, plan)
    mask, shift = _padding(ids_mask, ids)
    _check_length(model, plan, ids.shape[1], max_new_tokens)
    if eos_id is not None and pad_id is None:
        pad_id = eos_id  # finished rows repeat eos, as Hugging Face does without a pad_id
    fixed = {k: v.to(device) for k, v in inputs.items()}
    for key, tensor in fixed.items():
        shape = model.graph.shape(key) if key in model.spec.inputs else None
        if isinstance(shape, TokensShape) and tensor.numel():
            low, high = int(tensor.min()), int(tensor.max())
            if low < 0 or high >= shape.vocab:
                raise DecodeError(
                    f"the input `{key}` holds ids {low}..{high} but has vocab_size {shape.vocab} "
                    f"(ids 0..{shape.vocab - 1})"
                )
    return Request(plan, ids.to(device), mask, shift, fixed, max_new_tokens, eos_id, pad_id)


def _suppressed(plan: DecodePlan, ids: Sequence[int], model: CompiledModel) -> Tensor:
    """The `(V,)` mask of ids generation must never choose."""
    wrong = [i for i in ids if not 0 <= i < plan.vocab]
    if wrong:
        raise DecodeError(
            f"suppress_ids {wrong[:5]} lie outside the vocabulary 0..{plan.vocab - 1}"
        )
    mask = torch.zeros(plan.vocab, dtype=torch.bool, device=device_of(model))
    mask[list(ids)] = True
    if bool(mask.all()):
        raise DecodeError("suppress_ids covers the whole vocabulary: nothing is left to choose")
    return mask


def _prompt(ids: Tensor, plan: DecodePlan) -> Tensor:
    if not isinstance(ids, Tensor):
        ids = torch.as_tensor(ids)
    if ids.ndim == 1:
        ids = ids[None]
    if ids.ndim != 2 or ids.dtype not in (torch.int64, torch.int32) or ids.shape[1] == 0:
        raise DecodeError(
            f"the prompt must be token ids (B, T) with T >= 1, got {ids.dtype} {tuple(ids.shape)}"
        )
    if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= plan.vocab):
        raise DecodeError(
            f"the prompt holds ids {int(ids.min())}..{int(ids.max())} but the input "
            f"`{plan.input}` has vocab_size {plan.vocab} (ids 0..{plan.vocab - 1})"
        )
    return ids.long()


def _padding(mask: Tensor | None, ids: Tensor) -> tuple[Tensor | None, Tensor | None]:
    """The prompt's mask and each row's left padding; prompts must be left-padded."""
    if mask is None:
        return None, None
    mask = mask.to(ids.device)
    if mask.dtype != torch.bool or mask.shape != ids.shape:
        raise DecodeError(
            f"the prompt's mask must be bool {tuple(ids.shape)} (True = real token), got "
            f"{mask.dtype} {tuple(mask.shape)}"
        )
    real = mask.sum(dim=1)
    if bool((real == 0).any()):
        raise DecodeError("a prompt row has no real token; every row needs at least one")
    shift = ids.shape[1] - real
    left = torch.arange(ids.shape[1], device=ids.device)[None, :] >= shift[:, None]
    if not torch.equal(left, mask):
        raise DecodeError(
            "prompts of different lengths must be left-padded (False before True in each row "
            "of the mask), so that every row continues from its last position"
        )
    if not bool(shift.any()):
        return None, None
    return mask, shift


def _check_length(model: CompiledModel, plan: DecodePlan, length: int, new: int) -> None:
    if length > plan.max_len:
        raise DecodeError(
            f"the prompt has {length} tokens, {length - plan.max_len} more than the input "
            f"`{plan.input}`'s max_len {plan.max_len}; shorten it"
        )
    if length + new > plan.max_len and plan.window is None:
        raise DecodeError(
            f"the prompt ({length} tokens) and max_new_tokens ({new}) exceed the input "
            f"`{plan.input}`'s max_len {plan.max_len} by {length + new - plan.max_len}; ask for "
            f"at most {plan.max_len - length} new tokens (only a sliding-window model without "
            "a learned position table decodes past max_len)"
        )
    for node_id in plan.path:
        info = model.graph.nodes[node_id]
        if info.op != "decoder" or info.stack is None:
            continue
        for layer in info.stack.layers:
            pattern = mask_pattern(layer.attention.mask)
            if pattern.kind == "prefix" and pattern.prefix_len and length < pattern.prefix_len:
                raise DecodeError(
                    f"`{node_id}` is a prefix LM whose first {pattern.prefix_len} tokens see each "
                    f"other; a prompt of {length} tokens would let new tokens change it: give a "
                    f"prompt of at least {pattern.prefix_len} tokens"
                )


def _decoding(
    model: CompiledModel,
    request: Request,
    capacity: int,
    static: bool,
    compile: dict[str, Any] | None,
) -> Decoding:
    decoding = Decoding(
        model,
        request.plan,
        capacity=capacity,
        shift=request.shift,
        padded=request.mask is not None,
        static=static,
    )
    if compile is not None:
        decoding.compile(**compile)
    return decoding


def _sample(
    model: CompiledModel,
    request: Request,
    sampling: Sampling,
    static: bool,
    compile: dict[str, Any] | None,
    streamer: Streamer | None,
) -> Tensor:
    prompt = request.prompt
    if request.max_new_tokens == 0:
        return prompt
    capacity = prompt.shape[1] + request.max_new_tokens
    columns = [prompt]
    done = torch.zeros(prompt.shape[0], dtype=torch.bool, device=prompt.device)
    eos, pad = request.eos_id, request.pad_id
    with _decoding(model, request, capacity, static, compile) as decoding:
        logits = decoding.prefill(prompt, request.mask, **request.fixed)
        for index in range(request.max_new_tokens):
            token = sampling.choose(request.allowed(logits))
            if eos is not None:
                assert pad is not None
                token = token.masked_fill(done, pad)
                done = done | (token == eos)
            columns.append(token[:, None])
            if streamer is not None:
                streamer(token)
            if index + 1 == request.max_new_tokens or (eos is not None and bool(done.all())):
                break
            logits = decoding.step(token[:, None])
    return torch.cat(columns, dim=1)


def _beam_search(
    model: CompiledModel,
    request: Request,
    beams: int,
    length_penalty: float,
    static: bool,
    compile: dict[str, Any] | None,
) -> Tensor:
    """Beam search: keep the ``beams`` best partial outputs of each row by summed
    log-probability; an output ending in ``eos_id`` is finished and scored by its sum divided
    by (new tokens) ** ``length_penalty``. A row stops once it has ``beams`` finished outputs
    that no running one can beat."""
    prompt = request.prompt
    B, T = prompt.shape
    if request.max_new_tokens == 0:
        return prompt
    expanded = _expand(request, beams)
    capacity = T + request.max_new_tokens
    scores = torch.full((B, beams), float("-inf"), device=prompt.device)
    scores[:, 0] = 0.0  # every beam starts as the prompt: count it once
    tokens = torch.zeros(B * beams, 0, dtype=torch.long, device=prompt.device)
    finished: list[list[tuple[float, Tensor]]] = [[] for _ in range(B)]
    rows_done = [False] * B
    eos = request.eos_id
    with _decoding(model, expanded, capacity, static, compile) as decoding:
        logits = decoding.prefill(expanded.prompt, expanded.mask, **expanded.fixed)
        for step in range(request.max_new_tokens):
            logp = expanded.allowed(logits.float()).log_softmax(dim=-1)  # (B * beams, V)
            V = logp.shape[-1]
            total = (scores[:, :, None] + logp.view(B, beams, V)).view(B, beams * V)
            top, where = total.topk(2 * beams, dim=-1)  # (B, 2 beams)
            chosen_beam, chosen_token, new_scores = _advance(
                top, where, V, beams, tokens, finished, rows_done, eos, step, length_penalty
            )
            scores = new_scores
            index = (torch.arange(B, device=prompt.device)[:, None] * beams + chosen_beam).view(-1)
            tokens = torch.cat([tokens[index], chosen_token.view(-1, 1)], dim=1)
            if all(rows_done) or step + 1 == request.max_new_tokens:
                break
            decoding.reorder(index)
            logits = decoding.step(chosen_token.view(-1, 1))
    return _best(prompt, tokens, scores, finished, rows_done, length_penalty, request.pad_id)


def _expand(request: Request, beams: int) -> Request:
    """The request with each row repeated ``beams`` times (rows b * beams .. b * beams + beams - 1)."""

    def rep(t: Tensor | None) -> Tensor | None:
        return None if t is None else t.repeat_interleave(beams, dim=0)

    fixed = {k: v.repeat_interleave(beams, dim=0) for k, v in request.fixed.items()}
    prompt = rep(request.prompt)
    assert prompt is not None
    return Request(
        request.plan,
        prompt,
        rep(request.mask),
        rep(request.shift),
        fixed,
        request.max_new_tokens,
        request.eos_id,
        request.pad_id,
        request.suppress,
    )


def _advance(
    top: Tensor,
    where: Tensor,
    V: int,
    beams: int,
    tokens: Tensor,
    finished: list[list[tuple[float, Tensor]]],
    rows_done: list[bool],
    eos: int | None,
    step: int,
    length_penalty: float,
) -> tuple[Tensor, Tensor, Tensor]:
    """Choose each row's next beams from its 2 * beams best candidates, setting aside those
    that end in ``eos``. -> the source beam, the token and the score of each kept beam
    `(B, beams)` each."""
    B = top.shape[0]
    beam_of, token_of = where // V, where % V
    keep_beam = torch.zeros(B, beams, dtype=torch.long)
    keep_token = torch.zeros(B, beams, dtype=torch.long)
    keep_score = torch.full((B, beams), float("-inf"))
    top_l, beam_l, token_l = top.tolist(), beam_of.tolist(), token_of.tolist()
    length = (step + 1) ** length_penalty
    for b in range(B):
        if rows_done[b]:  # keep a finished row's beams running on padding, never chosen
            keep_token[b] = eos if eos is not None else 0
            continue
        kept = 0
        for rank in range(2 * beams):
            score, beam, token = top_l[b][rank], beam_l[b][rank], token_l[b][rank]
            if score == float("-inf"):
                break
            if eos is not None and token == eos:
                if rank < beams:  # only candidates that would have been kept may finish
                    done_tokens = torch.cat([tokens[b * beams + beam].cpu(), torch.tensor([token])])
                    _add(finished[b], score / length, done_tokens, beams)
                continue
            keep_beam[b, kept], keep_token[b, kept], keep_score[b, kept] = beam, token, score
            kept += 1
            if kept == beams:
                break
        best_running = max(keep_score[b].tolist())
        if len(finished[b]) >= beams and best_running / length <= finished[b][-1][0]:
            rows_done[b] = True
    device = top.device
    return keep_beam.to(device), keep_token.to(device), keep_score.to(device)


def _add(hypotheses: list[tuple[float, Tensor]], score: float, tokens: Tensor, beams: int) -> None:
    """Keep the ``beams`` best finished outputs, best first."""
    hypotheses.append((score, tokens))
    hypotheses.sort(key=lambda h: -h[0])
    del hypotheses[beams:]


def _best(
    prompt: Tensor,
    tokens: Tensor,
    scores: Tensor,
    finished: list[list[tuple[float, Tensor]]],
    rows_done: list[bool],
    length_penalty: float,
    pad_id: int | None,
) -> Tensor:
    """Each row's best output after its prompt, padded with ``pad_id`` to the longest."""
    B, beams = scores.shape
    length = max(tokens.shape[1], 1) ** length_penalty
    best: list[Tensor] = []
    for b in range(B):
        candidates = list(finished[b])
        if not rows_done[b]:  # unfinished beams compete as they are
            for k in range(beams):
                score = float(scores[b, k])
                if score != float("-inf"):
                    candidates.append((score / length, tokens[b * beams + k].cpu()))
        candidates.sort(key=lambda h: -h[0])
        best.append(candidates[0][1])
    width = max(len(t) for t in best)
    fill = pad_id if pad_id is not None else 0
    out = torch.full((B, width), fill, dtype=torch.long)
    for b, t in enumerate(best):
        out[b, : len(t)] = t
    return torch.cat([prompt, out.to(prompt.device)], dim=1)


__all__ = ["Sampling", "Streamer", "generate"]
