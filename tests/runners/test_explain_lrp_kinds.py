"""``chefer`` on the blocks beyond ViT/BERT: score biases (ALiBi, relative positions), rotary
positions, gated MLPs and linear attention (causal or not). Each explains a batch as its samples
alone, keeps each sample's total relevance where its rules promise it, the rotary rule is the z+
rule of the explicit turn, and a Llama imported from Hugging Face is explained."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import Tensor

import archlab
from archlab.compiler.model import CompiledModel
from archlab.compiler.nn.mlp import Gated
from archlab.compiler.nn.rotary import RotaryEmbedding
from archlab.runners.explain_lrp import (
    block_relevance,
    head_relevance,
    rotary_relevance,
    taping,
)
from archlab.specs.shrink import small_version

ROOT = Path(__file__).parents[2]


def _spec(name: str) -> dict[str, Any]:
    return small_version(json.loads((ROOT / f"specs/{name}.json").read_text()))


def _with_block(doc: dict[str, Any], stack: str, **parts: Any) -> dict[str, Any]:
    """``doc`` with the stack's attention / mlp settings updated by ``parts``."""
    doc = copy.deepcopy(doc)
    block = doc["nodes"][stack]["block"]
    for part, settings in parts.items():
        block[part] = {**block.get(part, {}), **settings}
    return doc


def _kinds(bias: bool) -> dict[str, dict[str, Any]]:
    """One small spec per kind of block (``bias`` False: no bias in attention or MLP)."""
    no = {"bias": bias}
    return {
        "alibi": _with_block(_spec("alibi-decoder"), "decoder", attention=no, mlp=no),
        "relative-bias-mean": _with_block(
            _spec("bert-base"),
            "encoder",
            attention={"position": {"kind": "relative_bias", "buckets": 8}, **no},
            mlp=no,
        ),
        "rotary-half-geglu-cls": _with_block(
            _spec("vit-tiny-digits"),
            "encoder",
            attention={"position": {"kind": "rotary", "fraction": 0.5}, **no},
            mlp={"activation": "geglu", **no},
        ),
        "llama-rotary-swiglu-gqa": _with_block(
            _spec("llama-style"), "decoder", attention=no, mlp=no
        ),
        "linear-causal": _with_block(
            _spec("linear-attention-decoder"), "decoder", attention=no, mlp=no
        ),
        "linear-mean-padded": _with_block(
            _spec("bert-base"), "encoder", attention={"kind": "linear", **no}, mlp=no
        ),
        "swiglu-alibi": _with_block(
            _spec("alibi-decoder"), "decoder", attention=no, mlp={"activation": "swiglu", **no}
        ),
    }


def _inputs(model: CompiledModel) -> dict[str, Tensor]:
    inputs = model.example_inputs(batch=3, length=9)
    if "ids" in inputs and model.graph.nodes["ids"].shape.pad_id is not None:  # type: ignore[union-attr]
        inputs["ids_mask"] = torch.arange(9)[None, :] < torch.tensor([9, 6, 4])[:, None]
    return inputs


@pytest.mark.parametrize("kind", list(_kinds(True)))
def test_each_kind_explains_a_batch_as_its_samples_alone(kind: str) -> None:
    torch.manual_seed(0)
    model = archlab.compile_spec(_kinds(True)[kind])
    inputs = _inputs(model)
    batch = archlab.explain(model, method="chefer", **inputs)
    assert torch.isfinite(batch.scores).all() and (batch.scores >= 0).all()
    for i in range(3):
        alone = archlab.explain(model, method="chefer", **{k: v[i : i + 1] for k, v in inputs.items()})  # fmt: skip
        torch.testing.assert_close(batch.scores[i : i + 1], alone.scores, rtol=1e-5, atol=1e-7)
        assert int(alone.target) == int(batch.target[i])


def _totals(model: CompiledModel, inputs: dict[str, Tensor]) -> list[Tensor]:
    """Each sample's total relevance `(B,)` at the head, then at each block's input from the
    last block down (the rules of ``explain_lrp`` on one forward's tape and records)."""
    model.eval()
    stack = next(m for m in model.modules() if hasattr(m, "layers"))
    blocks = list(stack.layers)
    head = getattr(model, model.spec.outputs[0])
    records: list[list[Any]] = [[] for _ in blocks]
    for block, record in zip(blocks, records, strict=True):
        block.attention.record = record
    try:
        with taping(blocks, head) as tape, torch.enable_grad():  # (no_grad: in-place activations)
            logits = model(**inputs)
    finally:
        for block in blocks:
            block.attention.record = None
    with torch.no_grad():
        logits = logits if logits.dim() == 2 else logits[:, -1]
        one_hot = torch.nn.functional.one_hot(logits.argmax(-1), logits.shape[-1]).float()
        R = head_relevance(head, tape, one_hot, -1)
        totals = [R.sum((1, 2))]
        for i in reversed(range(len(blocks))):
            A, q, k, v = (t.detach() for t in records[i][0])
            R, _ = block_relevance(blocks[i], i, tape, R, A, q, k, v)
            totals.append(R.sum((1, 2)))
    return totals


@pytest.mark.parametrize(
    "kind",
    [
        "alibi",
        "relative-bias-mean",
        "linear-causal",
        "linear-mean-padded",
        "swiglu-alibi",
        "rotary-half-geglu-cls",
        "llama-rotary-swiglu-gqa",
    ],
)
def test_the_rules_keep_each_samples_total_relevance_through_every_block(kind: str) -> None:
    """Without biases the z+, product, residual and rotary rules each keep a sample's total:
    the one-hot target's 1 reaches the stack's input."""
    torch.manual_seed(0)
    model = archlab.compile_spec(_kinds(False)[kind])
    for total in _totals(model, _inputs(model)):
        torch.testing.assert_close(total, torch.ones(3), rtol=1e-4, atol=1e-4)


def test_the_gated_product_gives_each_operand_half() -> None:
    """The SwiGLU block's MLP: fc2's relevance splits evenly between value and gate, so fc1's
    output carries the whole of it."""
    from archlab.runners.explain_lrp import mlp_relevance

    torch.manual_seed(0)
    model = archlab.compile_spec(_kinds(False)["llama-rotary-swiglu-gqa"]).eval()
    block = model.decoder.layers[0]
    assert isinstance(block.mlp.act, Gated)
    with taping([block], model.lm_head) as tape, torch.enable_grad():
        x = torch.randn(2, 5, block.mlp.fc1.in_features)
        block(x)
    R = torch.rand(2, 5, x.shape[-1])
    with torch.no_grad():
        R_y = mlp_relevance(block, 0, tape, R)
    torch.testing.assert_close(R_y.sum((1, 2)), R.sum((1, 2)), rtol=1e-4, atol=1e-4)


def _turn_matrix(cos: Tensor, sin: Tensor) -> Tensor:
    """The rotary turn at one position as a matrix `(R, R)`: y = M x on the turned channels,
    written from its definition (pairs (c, c + R/2): y_c = x_c cos - x_{c+R/2} sin,
    y_{c+R/2} = x_{c+R/2} cos + x_c sin)."""
    n = cos.shape[0]
    h = n // 2
    M = torch.diag(cos)
    for c in range(h):
        M[c, c + h] = -sin[c]
        M[c + h, c] = sin[c + h]
    return M


def test_the_rotary_rule_is_the_signed_rule_of_the_explicit_turn() -> None:
    g = torch.Generator().manual_seed(0)
    rotary = RotaryEmbedding(head_dim=12, max_len=6, base=100.0, fraction=2 / 3)  # 8 turned
    x = torch.randn(2, 3, 6, 12, generator=g, dtype=torch.float64)
    R = torch.randn(2, 3, 6, 12, generator=g, dtype=torch.float64)
    cos, sin = rotary.cos.double(), rotary.sin.double()
    turned = rotary.rotate(x)
    got = rotary_relevance(x, cos, sin, R)
    for t in range(6):
        M = _turn_matrix(cos[t], sin[t])
        y = x[..., t, :8] @ M.T
        torch.testing.assert_close(y, turned[..., t, :8])  # the same turn
        # LRP-0 written out: R_k = sum_j x_k M_jk / y_j R_j
        want = x[..., t, :8] * ((R[..., t, :8] / y) @ M)
        torch.testing.assert_close(got[..., t, :8], want, rtol=1e-5, atol=1e-6)  # eps 1e-9
    torch.testing.assert_close(got[..., 8:], R[..., 8:])  # not turned: passed on
    torch.testing.assert_close(
        got[..., 0, :], R[..., 0, :], rtol=1e-6, atol=1e-6
    )  # position 0 does not turn
    torch.testing.assert_close(
        got.sum(-1), R.sum(-1), rtol=1e-5, atol=1e-6
    )  # each position's total is kept


@pytest.mark.parametrize("qk_norm", [False, True])
def test_the_rotary_rule_reads_q_and_k_before_the_turn(qk_norm: bool) -> None:
    """The taped pre-turn queries and keys (after a QK norm), turned, are the recorded ones."""
    torch.manual_seed(0)
    doc = _with_block(_kinds(True)["llama-rotary-swiglu-gqa"], "decoder", attention={"qk_norm": qk_norm})  # fmt: skip
    model = archlab.compile_spec(doc).eval()
    blocks = list(model.decoder.layers)
    attention = blocks[0].attention
    attention.record = []
    try:
        with taping(blocks, model.lm_head) as tape, torch.enable_grad():
            model(ids=torch.randint(0, 100, (2, 7)))
        _, q, k, _ = attention.record[0]
    finally:
        attention.record = None
    rotary = attention.position.rotary
    assert k.shape[1] == attention.kv_heads < attention.heads
    torch.testing.assert_close(rotary.rotate(tape[(0, "q_turn_in")]), q.detach())
    torch.testing.assert_close(rotary.rotate(tape[(0, "k_turn_in")]), k.detach())


transformers = pytest.importorskip("transformers")


def test_chefer_explains_a_llama_imported_from_hugging_face(tmp_path: Path) -> None:
    config = transformers.LlamaConfig(
        vocab_size=61, hidden_size=32, intermediate_size=40, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=32,
        rope_theta=10000.0, tie_word_embeddings=False, attn_implementation="eager",
    )  # fmt: skip
    torch.manual_seed(0)
    source = transformers.LlamaForCausalLM(config).eval()
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():  # random norms too (HF starts them at one)
        for name, p in source.named_parameters():
            noise = torch.randn(p.shape, generator=gen)
            p.copy_(1.0 + 0.1 * noise if "norm" in name else 0.2 * noise)
    source.save_pretrained(tmp_path / "llama")
    model = archlab.import_pretrained(tmp_path / "llama")
    block = model.decoder.layers[0]
    assert block.attention.position.kind == "rotary" and isinstance(block.mlp.act, Gated)
    assert block.attention.kv_heads < block.attention.heads
    ids = torch.randint(0, 61, (3, 8), generator=gen)
    batch = archlab.explain(model, method="chefer", ids=ids)
    with torch.no_grad():
        assert torch.equal(batch.target, source(input_ids=ids).logits[:, -1].argmax(-1))
    scores = batch.scores
    assert scores.shape == (3, 8) and torch.isfinite(scores).all() and (scores >= 0).all()
    assert (scores[:, :-1].sum(-1) > 0).all()  # relevance reaches earlier tokens
    for i in range(3):
        alone = archlab.explain(model, method="chefer", ids=ids[i : i + 1])
        torch.testing.assert_close(scores[i : i + 1], alone.scores, rtol=1e-5, atol=1e-7)
