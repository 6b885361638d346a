"""Cached decoding computes what ``forward`` computes: for the small version of every decoder
spec of the zoo, the logits of each step equal a full recomputation of the sequence so far; the
caches hold what they should (key-value heads, a ring of ``window`` slots, linear attention's
running sums, the memory projected once); specs that cannot decode token by token are refused,
naming the node."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
import torch

import archlab
from archlab.compiler.decoding import DecodeError, Decoding, decode_plan
from archlab.compiler.model import CompiledModel
from archlab.compiler.nn.kv_cache import CrossCache, KVCache, LinearState
from archlab.specs.shrink import small_version

ROOT = Path(__file__).parents[2]
DECODERS = [
    "alibi-decoder",
    "gpt-tiny",
    "gpt2-small",
    "linear-attention-decoder",
    "llama-style",
    "prefix-lm",
    "sliding-window-decoder",
    "t5-small",
    "transformer-base",
    "transformer-tiny",
]


def small_model(name: str, seed: int = 0) -> CompiledModel:
    torch.manual_seed(seed)
    doc = small_version(json.loads((ROOT / "specs" / f"{name}.json").read_text()))
    return archlab.compile_spec(doc).eval()


def fixed_inputs(model: CompiledModel, batch: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random source tokens for an encoder-decoder (none for a decoder-only spec)."""
    plan = decode_plan(model.graph)
    g = torch.Generator().manual_seed(seed)
    return {
        name: torch.randint(0, model.graph.shape(name).vocab, (batch, 7), generator=g)  # type: ignore[union-attr]
        for name in plan.fixed
    }


def relative(ours: torch.Tensor, theirs: torch.Tensor) -> float:
    return float((ours - theirs).abs().max() / theirs.abs().max())


def check_steps(
    model: CompiledModel,
    prompt: torch.Tensor,
    new: int,
    fixed: dict[str, torch.Tensor] | None = None,
    generator: torch.Generator | None = None,
) -> None:
    """Decode ``new`` tokens after ``prompt`` (sampled with ``generator``, else greedy) and
    compare each step's logits with a full forward of the sequence so far."""
    reference = copy.deepcopy(model)  # the same weights, never decoding
    plan, fixed = decode_plan(model.graph), fixed or {}
    sequence = prompt
    with torch.no_grad(), Decoding(model, plan, capacity=prompt.shape[1] + new) as decoding:
        logits = decoding.prefill(prompt, **fixed)
        for _ in range(new):
            full = reference(**{plan.input: sequence}, **fixed)[:, -1]
            assert relative(logits, full) <= 1e-5
            if generator is not None:
                token = torch.multinomial(logits.softmax(-1), 1, generator=generator)
            else:
                token = logits.argmax(-1, keepdim=True)
            sequence = torch.cat([sequence, token], dim=1)
            logits = decoding.step(token)


@pytest.mark.parametrize("name", DECODERS)
@pytest.mark.parametrize("sample", [False, True], ids=["greedy", "sampled"])
def test_cached_steps_equal_recomputing_the_sequence(name: str, sample: bool) -> None:
    model = small_model(name)
    plan = decode_plan(model.graph)
    g = torch.Generator().manual_seed(1)
    prompt = torch.randint(0, plan.vocab, (2, 9), generator=g)  # 9 >= the small prefix-LM's prefix
    new = min(8, plan.max_len - prompt.shape[1])
    check_steps(model, prompt, new, fixed_inputs(model, 2), g if sample else None)


def test_grouped_query_attention_caches_the_key_value_heads() -> None:
    model = small_model("llama-style")
    plan = decode_plan(model.graph)
    heads = {(m.heads, m.kv_heads) for m in model.modules() if hasattr(m, "kv_heads")}
    [(H, K)] = heads
    assert K < H
    with torch.no_grad(), Decoding(model, plan, capacity=12) as decoding:
        decoding.prefill(torch.randint(0, plan.vocab, (3, 5)))
        caches = list(decoding.caches_of(KVCache))
        assert caches and all(c.k.shape[:3] == (3, K, 12) for c in caches)
    assert all(m.cache is None for m in model.modules() if hasattr(m, "cache"))  # removed after


def test_a_sliding_window_keeps_a_ring_of_window_slots_and_decodes_past_max_len() -> None:
    model = small_model("sliding-window-decoder")
    reference = copy.deepcopy(model)
    plan = decode_plan(model.graph)
    assert plan.window is not None and plan.window < plan.max_len
    prompt = torch.randint(0, plan.vocab, (2, 5))
    total = plan.max_len + 20
    with torch.no_grad(), Decoding(model, plan, capacity=total) as decoding:
        logits = decoding.prefill(prompt)
        sequence = prompt
        for _ in range(total - prompt.shape[1]):
            token = logits.argmax(-1, keepdim=True)
            sequence = torch.cat([sequence, token], dim=1)
            logits = decoding.step(token)
            for cache in decoding.caches_of(KVCache):
                assert cache.k.shape[2] == plan.window and cache.filled <= plan.window
    assert sequence.shape[1] == total
    # with depth L, the last token depends on its last L (window - 1) + 1 tokens only, and
    # rotary positions only through offsets: a fresh forward over the last max_len tokens
    # (positions from 0 again) gives its logits
    depth = len(model.decoder.layers)
    assert depth * (plan.window - 1) + 1 <= plan.max_len
    with torch.no_grad():
        fresh = reference(ids=sequence[:, -plan.max_len :])[:, -1]
    assert relative(logits, fresh) <= 1e-5


def test_linear_attention_decodes_with_constant_state() -> None:
    model = small_model("linear-attention-decoder")
    plan = decode_plan(model.graph)
    with torch.no_grad(), Decoding(model, plan, capacity=30) as decoding:
        decoding.prefill(torch.randint(0, plan.vocab, (2, 4)))
        states = list(decoding.caches_of(LinearState))
        assert states and not list(decoding.caches_of(KVCache))
        shapes = [(s.state.shape, s.total.shape) for s in states]
        for _ in range(20):
            decoding.step(torch.randint(0, plan.vocab, (2, 1)))
        assert [(s.state.shape, s.total.shape) for s in states] == shapes


def test_the_memory_is_encoded_and_projected_once(monkeypatch: pytest.MonkeyPatch) -> None:
    model = small_model("transformer-tiny")
    plan = decode_plan(model.graph)
    assert plan.encoder_decoder and plan.memos
    calls: dict[str, int] = {"memory": 0, "encoder": 0}
    project = type(next(m for m in model.modules() if getattr(m, "is_cross", False)))
    original = project.project_memory

    def counted(self: Any, memory: torch.Tensor) -> Any:
        calls["memory"] += 1
        return original(self, memory)

    monkeypatch.setattr(project, "project_memory", counted)
    encoder = getattr(model, plan.memos[0])
    encoder.register_forward_hook(lambda *_: calls.__setitem__("encoder", calls["encoder"] + 1))
    crosses = sum(1 for m in model.modules() if getattr(m, "is_cross", False))
    with torch.no_grad(), Decoding(model, plan, capacity=10) as decoding:
        decoding.prefill(torch.ones(2, 1, dtype=torch.long), **fixed_inputs(model, 2))
        for _ in range(6):
            decoding.step(torch.ones(2, 1, dtype=torch.long))
        assert len(list(decoding.caches_of(CrossCache))) == crosses
    assert calls["memory"] == crosses  # once per cross-attention layer, at the prefill
    assert calls["encoder"] == 7  # the stack is called each step but runs its layers once


def _doc(name: str) -> dict[str, Any]:
    return small_version(json.loads((ROOT / "specs" / f"{name}.json").read_text()))


def test_specs_that_cannot_decode_are_refused_naming_the_node() -> None:
    with pytest.raises(DecodeError, match=r"one output is an lm_head; this one outputs `head` \(classify\)"):  # fmt: skip
        decode_plan(archlab.compile_spec(_doc("vit-tiny-digits")).graph)
    doc = _doc("gpt-tiny")
    decoder = next(k for k, n in doc["nodes"].items() if n["op"] == "decoder")
    doc["nodes"][decoder]["op"] = "encoder"
    with pytest.raises(DecodeError, match="reads no decoder: an encoder-only spec"):
        decode_plan(archlab.compile_spec(doc).graph)
    doc = _doc("gpt-tiny")
    doc["nodes"][decoder]["block"]["attention"]["mask"] = "none"
    with pytest.raises(DecodeError, match=rf"node `{decoder}` \(decoder\): layer 0's self-attention mask is none without causal"):  # fmt: skip
        decode_plan(archlab.compile_spec(doc).graph)


@pytest.mark.parametrize(
    "mask",
    [
        {"kind": "block_local", "block": 4, "causal": True},
        {"kind": "sliding_window", "window": 3, "causal": True},
        {"kind": "prefix", "prefix_len": 4},
    ],
    ids=["block_local", "sliding_window", "prefix"],
)
@pytest.mark.parametrize("position", [None, {"kind": "alibi"}, {"kind": "rotary"}])
def test_every_causal_mask_with_every_position_decodes_exactly(
    mask: dict[str, Any], position: dict[str, Any] | None
) -> None:
    doc = _doc("gpt-tiny")
    decoder = next(k for k, n in doc["nodes"].items() if n["op"] == "decoder")
    attention = doc["nodes"][decoder]["block"]["attention"]
    attention["mask"] = mask
    attention["position"] = position
    torch.manual_seed(0)
    model = archlab.compile_spec(doc).eval()
    check_steps(model, torch.randint(0, decode_plan(model.graph).vocab, (2, 6)), 14)


def test_leaving_a_decoding_restores_every_module() -> None:
    from archlab.compiler.nn.heads import LMHead
    from archlab.compiler.nn.linear import Linear

    model = small_model("t5-small")
    plan = decode_plan(model.graph)

    def state() -> list[tuple[str, object]]:
        names = ("cache", "clock", "memo", "last_only", "weight_first")
        return [(n, m.__dict__.get(n)) for _, m in model.named_modules() for n in names]

    before = state()
    with Decoding(model, plan, capacity=4):
        assert any(m.weight_first for m in model.modules() if isinstance(m, Linear | LMHead))
    assert state() == before
