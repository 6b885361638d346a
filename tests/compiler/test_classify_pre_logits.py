"""``classify.pre_logits`` compiled and counted: a ``Linear(D, P)`` and tanh before ``fc``."""

from __future__ import annotations

from typing import Any

import torch

import archlab
from archlab.compiler import cost
from archlab.compiler.nn.heads import Pool
from archlab.specs.analysis import analyze

Doc = dict[str, Any]


def classifier(head_input: str = "enc", **head: Any) -> Doc:
    """Tokens -> embed 24 -> 1-layer encoder -> (a pool node) -> classify 3."""
    return {
        "version": 1,
        "inputs": {"ids": {"kind": "tokens", "vocab_size": 50, "max_len": 12}},
        "nodes": {
            "tok": {"op": "embed", "input": "ids", "dim": 24},
            "enc": {
                "op": "encoder",
                "input": "tok",
                "depth": 1,
                "block": {"attention": {"heads": 3}},
            },
            "pooled": {"op": "pool", "input": "enc", "mode": "first"},
            "head": {"op": "classify", "input": head_input, "classes": 3, **head},
        },
        "outputs": ["head", "pooled"] if head_input == "enc" else "head",
    }


def test_cost_counts_the_pre_logits_layer() -> None:
    graph = analyze(archlab.load_spec(classifier(pre_logits={"dim": 40})))
    head = cost.node_cost(graph, "head")
    assert head.params == 24 * 40 + 40 + 40 * 3 + 3
    assert head.flops == 2 * 24 * 40 + 2 * 40 * 3
    plain = cost.node_cost(analyze(archlab.load_spec(classifier())), "head")
    assert (plain.params, plain.flops) == (24 * 3 + 3, 2 * 24 * 3)


def test_module_is_linear_tanh_then_fc_on_the_first_position() -> None:
    model = archlab.compile_spec(classifier(pool="first", pre_logits={"dim": 40}), seed=0)
    assert model.summary().params == sum(p.numel() for p in model.parameters())
    keys = {k: tuple(v.shape) for k, v in model.state_dict().items() if k.startswith("head.")}
    assert keys == {
        "head.pre_logits.weight": (40, 24),
        "head.pre_logits.bias": (40,),
        "head.fc.weight": (3, 40),
        "head.fc.bias": (3,),
    }
    out = model(torch.randint(0, 50, (2, 7)))  # "pooled" is the first position of "enc"
    head = model.head
    expected = head.fc(torch.tanh(head.pre_logits(out["pooled"])))
    torch.testing.assert_close(out["head"], expected)


def test_pooled_input_goes_through_pre_logits() -> None:
    model = archlab.compile_spec(classifier("pooled", pre_logits={}), seed=0).eval()
    assert "self.head.logits(" in model.code
    assert model.summary().params == sum(p.numel() for p in model.parameters())
    assert "self.head.fc(" in archlab.compile_spec(classifier("pooled")).code


def test_pool_first_reads_position_zero_even_when_padded() -> None:
    x = torch.randn(2, 5, 4)
    mask = torch.tensor([[True] * 5, [False, True, True, False, False]])
    assert torch.equal(Pool("first")(x, mask), x[:, 0])
