"""``CompiledModel.generate``: greedy and sampled decoding, eos and padding, left-padded
batches, beam search, the static (compilable) mode, streaming, and every request it refuses."""

from __future__ import annotations

import copy
import itertools
import json
from pathlib import Path

import pytest
import torch

import archlab
from archlab.compiler.decoding import DecodeError
from archlab.compiler.model import CompiledModel
from archlab.specs.shrink import small_version

ROOT = Path(__file__).parents[2]


def small(name: str, seed: int = 0, **change: object) -> CompiledModel:
    torch.manual_seed(seed)
    doc = small_version(json.loads((ROOT / "specs" / f"{name}.json").read_text()))
    for key, value in change.items():
        doc["inputs"]["ids"][key] = value
    return archlab.compile_spec(doc).eval()


@pytest.fixture(scope="module")
def gpt() -> CompiledModel:
    return small("gpt-tiny")


def prompt(batch: int = 2, length: int = 5, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 100, (batch, length), generator=torch.Generator().manual_seed(seed))


def test_greedy_decoding_picks_the_argmax_of_the_full_forward(gpt: CompiledModel) -> None:
    ids = prompt()
    out = gpt.generate(ids, 6)
    assert out.shape == (2, 11) and out.dtype == torch.int64 and torch.equal(out[:, :5], ids)
    with torch.no_grad():
        for t in range(5, 11):
            assert torch.equal(out[:, t], gpt(ids=out[:, :t])[:, -1].argmax(-1))
    assert not gpt.training


def test_sampling_is_repeatable_with_a_seeded_generator(gpt: CompiledModel) -> None:
    def sample(seed: int, **options: object) -> torch.Tensor:
        g = torch.Generator().manual_seed(seed)
        return gpt.generate(prompt(), 12, do_sample=True, generator=g, **options)

    assert torch.equal(sample(3), sample(3))
    assert not torch.equal(sample(3), sample(4))
    top1 = sample(5, top_k=1)  # top_k 1 and a tiny top_p are greedy
    assert torch.equal(top1, gpt.generate(prompt(), 12))
    assert torch.equal(sample(6, top_p=1e-6), top1)
    cold = sample(7, temperature=1e-4)
    assert torch.equal(cold, top1)


def test_top_k_and_top_p_only_sample_the_kept_tokens(gpt: CompiledModel) -> None:
    from archlab.compiler.generation import Sampling

    logits = torch.tensor([[4.0, 3.0, 2.0, 1.0, 0.0]]).repeat(400, 1)
    g = torch.Generator().manual_seed(0)
    assert set(Sampling(True, top_k=2, generator=g).choose(logits).tolist()) == {0, 1}
    # probabilities 0.64, 0.24, 0.09, ...: 0.8 keeps the first two (0.64 < 0.8 <= 0.88)
    assert set(Sampling(True, top_p=0.8, generator=g).choose(logits).tolist()) == {0, 1}
    assert set(Sampling(True, top_p=0.5, generator=g).choose(logits).tolist()) == {0}


def test_finished_rows_continue_as_padding_and_decoding_stops_when_all_finish(
    gpt: CompiledModel,
) -> None:
    ids = prompt(3)
    free = gpt.generate(ids, 10)
    eos = int(free[0, 7])  # row 0 emits it at step 3 (or earlier)
    out = gpt.generate(ids, 10, eos_id=eos, pad_id=0)
    for row in range(3):
        new = out[row, 5:].tolist()
        if eos in new:
            end = new.index(eos)
            assert new[: end + 1] == free[row, 5 : 5 + end + 1].tolist()
            assert all(t == 0 for t in new[end + 1 :])
        else:
            assert new == free[row, 5 : 5 + len(new)].tolist()
    stop = gpt.generate(ids[:1], 10, eos_id=eos)
    assert stop.shape[1] <= 8 and int(stop[0, -1]) == eos  # stopped at its eos, not 10 later


def test_a_left_padded_batch_decodes_each_row_as_it_would_alone(gpt: CompiledModel) -> None:
    long, short = prompt(1, 6, seed=1), prompt(1, 3, seed=2)
    batch = torch.cat([long, torch.cat([torch.zeros(1, 3, dtype=torch.long), short], 1)])
    mask = torch.ones(2, 6, dtype=torch.bool)
    mask[1, :3] = False
    out = gpt.generate(batch, 8, ids_mask=mask)
    assert torch.equal(out[0], gpt.generate(long, 8)[0])
    assert torch.equal(out[1, 3:], gpt.generate(short, 8)[0])


def test_static_steps_and_compiled_steps_give_the_same_tokens(gpt: CompiledModel) -> None:
    ids = prompt()
    dynamic = gpt.generate(ids, 10)
    assert torch.equal(gpt.generate(ids, 10, static=True), dynamic)
    compiled = gpt.generate(ids, 10, static=True, compile={"backend": "eager", "fullgraph": True})
    assert torch.equal(compiled, dynamic)


def test_the_streamer_gets_each_column_as_it_is_chosen(gpt: CompiledModel) -> None:
    columns: list[list[int]] = []
    out = gpt.generate(prompt(), 4, streamer=lambda column: columns.append(column.tolist()))
    assert torch.equal(torch.tensor(columns).T, out[:, 5:])
    assert torch.equal(gpt.generate(prompt(), 0), prompt())


def _sequence_logp(model: CompiledModel, ids: torch.Tensor, start: int) -> float:
    with torch.no_grad():
        logp = model(ids=ids[None, :-1])[0].log_softmax(-1)
    return float(sum(logp[t - 1, ids[t]] for t in range(start, len(ids))))


def test_beam_search_wide_enough_finds_the_most_likely_continuation() -> None:
    model = small("gpt-tiny", vocab_size=5)  # 5 tokens: 3 steps have 125 continuations
    ids = torch.tensor([[1, 2, 3]])
    best = max(
        (torch.tensor([1, 2, 3, *tail]) for tail in itertools.product(range(5), repeat=3)),
        key=lambda seq: _sequence_logp(model, seq, 3),
    )
    assert torch.equal(model.generate(ids, 3, num_beams=25)[0], best)
    assert torch.equal(model.generate(ids, 3, num_beams=1), model.generate(ids, 3))


def test_beam_search_finishes_outputs_at_eos_and_pads_the_shorter() -> None:
    model = small("gpt-tiny", vocab_size=6)
    ids = torch.tensor([[1, 2, 3], [4, 5, 1]])
    free = model.generate(ids, 8, num_beams=3)
    eos = int(free[0, 4])
    out = model.generate(ids, 8, num_beams=3, eos_id=eos, pad_id=0)
    assert out.shape[0] == 2 and torch.equal(out[:, :3], ids)
    for row in out[:, 3:].tolist():
        if eos in row:
            assert all(t == 0 for t in row[row.index(eos) + 1 :])


def test_an_encoder_decoder_generates_from_its_source() -> None:
    model = small("transformer-tiny")
    src = torch.randint(3, model.graph.shape("src").vocab, (2, 6))  # type: ignore[union-attr]
    out = model.generate(src=src, start_id=1, max_new_tokens=5)
    assert out.shape == (2, 6) and (out[:, 0] == 1).all()
    reference = copy.deepcopy(model)
    with torch.no_grad():
        for t in range(1, 6):
            assert torch.equal(out[:, t], reference(src=src, tgt=out[:, :t])[:, -1].argmax(-1))
    beams = model.generate(src=src, start_id=1, max_new_tokens=5, num_beams=3)
    assert beams.shape == (2, 6)


@pytest.mark.parametrize(
    ("call", "pattern"),
    [
        (
            {"max_new_tokens": 40},
            r"prompt \(5 tokens\) and max_new_tokens \(40\) exceed the input `ids`'s max_len 32 by 13; ask for at most 27",
        ),
        (
            {"ids": torch.zeros(1, 33, dtype=torch.long)},
            r"the prompt has 33 tokens, 1 more than the input `ids`'s max_len 32",
        ),
        (
            {"ids": torch.tensor([[1, 100]])},
            r"the prompt holds ids 1\.\.100 but the input `ids` has vocab_size 100",
        ),
        ({"ids": torch.ones(1, 2)}, r"the prompt must be token ids \(B, T\)"),
        ({"top_p": 0.0, "do_sample": True}, r"top_p must lie in \(0, 1\] \(got 0\.0\)"),
        ({"top_p": 1.5}, r"top_p must lie in \(0, 1\] \(got 1\.5\)"),
        ({"temperature": 0}, r"temperature must be > 0"),
        ({"top_k": 0}, r"top_k must be at least 1"),
        ({"num_beams": 2, "do_sample": True}, r"beam search is deterministic"),
        ({"eos_id": 100}, r"eos_id 100 lies outside the vocabulary 0\.\.99"),
        ({"max_new_tokens": -1}, r"max_new_tokens must be a whole number >= 0"),
        ({"ids_mask": torch.tensor([[True, True, True, False, False]])}, r"must be left-padded"),
        ({"ids_mask": torch.zeros(1, 5, dtype=torch.bool)}, r"a prompt row has no real token"),
        ({"src": torch.ones(1, 3, dtype=torch.long)}, r"unknown inputs \['src'\]"),
    ],
)
def test_bad_requests_are_refused_before_decoding(
    gpt: CompiledModel, call: dict[str, object], pattern: str
) -> None:
    options = {"ids": prompt(1), "max_new_tokens": 4} | call
    with pytest.raises(DecodeError, match=pattern):
        gpt.generate(**options)  # type: ignore[arg-type]


def test_a_prefix_lm_needs_a_prompt_covering_its_prefix() -> None:
    model = small("prefix-lm")
    with pytest.raises(DecodeError, match=r"is a prefix LM whose first \d+ tokens see each other"):
        model.generate(torch.ones(1, 2, dtype=torch.long), 3)
    assert model.generate(torch.ones(1, 9, dtype=torch.long), 3).shape == (1, 12)


def test_an_encoder_only_spec_cannot_generate() -> None:
    model = archlab.compile_spec(ROOT / "specs" / "vit-tiny-digits.json")
    with pytest.raises(DecodeError, match="an encoder-only or classification spec cannot write"):
        model.generate(torch.ones(1, 2, dtype=torch.long), 3)


def test_suppressed_ids_are_never_chosen(gpt: CompiledModel) -> None:
    free = gpt.generate(prompt(), 10)
    banned = sorted(set(free[:, 5:].flatten().tolist()))
    out = gpt.generate(prompt(), 10, suppress_ids=banned)
    assert not set(out[:, 5:].flatten().tolist()) & set(banned)
    g = torch.Generator().manual_seed(0)
    sampled = gpt.generate(prompt(), 10, do_sample=True, generator=g, suppress_ids=range(50))
    assert (sampled[:, 5:] >= 50).all()
    beams = gpt.generate(prompt(), 6, num_beams=3, suppress_ids=range(50))
    assert (beams[:, 5:] >= 50).all()
    with pytest.raises(DecodeError, match=r"suppress_ids \[100\] lie outside the vocabulary"):
        gpt.generate(prompt(), 2, suppress_ids=[100])
    with pytest.raises(DecodeError, match="covers the whole vocabulary"):
        gpt.generate(prompt(), 2, suppress_ids=range(100))
