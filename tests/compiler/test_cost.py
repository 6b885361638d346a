"""``archlab.compiler.cost``: published parameter counts of the zoo and the counting rules, from
the analysed graph alone (no torch)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from archlab import load_spec
from archlab.compiler import cost
from archlab.specs.analysis import Graph, analyze

SPECS = Path(__file__).parents[2] / "specs"
Doc = dict[str, Any]


def graph_of(source: Doc | str | Path) -> Graph:
    return analyze(load_spec(source))


def zoo(name: str) -> Graph:
    return graph_of(SPECS / f"{name}.json")


def total(graph: Graph) -> cost.Cost:
    out = cost.ZERO
    for node in graph.expanded:
        out += cost.node_cost(graph, node)
    return out


@pytest.mark.parametrize(
    ("name", "params"),
    [
        ("deit-small-16", 22_050_664),  # timm vit_small_patch16_224
        ("vit-base-16", 86_567_656),  # timm vit_base_patch16_224
        ("gpt2-small", 124_439_808),  # HF GPT2LMHeadModel, tied head counted once
        ("vit-tiny-digits", 202_186),
        ("dynamicvit-deit-s", 22_774_414),  # DeiT-S + 3 x 241,250 predictor parameters
        ("evit-deit-s", 22_050_664),  # EViT adds no parameters
        ("t5-small", 60_506_624),  # HF T5ForConditionalGeneration
        ("llama-style", 55_321_088),
    ],
)
def test_published_parameter_counts(name: str, params: int) -> None:
    assert total(zoo(name)).params == params


def test_bert_base_within_one_percent_of_hf() -> None:
    """HF BertModel has token types and a pooler the spec leaves out (109,482,240 in all)."""
    params = total(zoo("bert-base")).params
    assert params == pytest.approx(109_482_240, rel=0.01)
    assert params == 109_482_240 - 2 * 768 - (768 * 768 + 768) + (768 * 2 + 2)


def test_deit_small_macs() -> None:
    macs = total(zoo("deit-small-16")).flops / 2
    assert macs == pytest.approx(4.6e9, rel=0.02)
    assert macs == pytest.approx(4.599e9, rel=1e-3)


def test_pruning_cuts_macs() -> None:
    dense = total(zoo("deit-small-16")).flops
    dynamic = total(zoo("dynamicvit-deit-s")).flops
    evit = total(zoo("evit-deit-s")).flops
    assert dynamic / 2 == pytest.approx(3.0e9, rel=0.01)
    assert evit / 2 == pytest.approx(3.03e9, rel=0.01)
    assert dynamic < evit < dense


def test_deit_small_worked_example() -> None:
    """The per-part numbers of docs/spec-reference.md, 'Counting parameters'."""
    graph = zoo("deit-small-16")
    assert cost.node_cost(graph, "patches").params == 295_296
    assert cost.node_cost(graph, "cls").params == 384
    assert cost.node_cost(graph, "pos").params == 197 * 384
    assert cost.node_cost(graph, "norm").params == 768
    assert cost.node_cost(graph, "head").params == 385_000
    stack = graph.nodes["encoder"].stack
    layer = stack.layers[0]
    assert cost.layer_cost(stack, layer).params == 1_774_464
    assert cost.attention_cost(layer.attention, 197, 197).params == 591_360
    assert cost.mlp_cost(384, 1536, "gelu", True, 197).params == 1_181_568
    assert cost.node_cost(graph, "encoder").params == 12 * 1_774_464


def test_dynamic_predictor_parameters() -> None:
    graph = zoo("dynamicvit-deit-s")
    stages = [n for n in graph.expanded if ".prune." in n]
    assert [cost.node_cost(graph, n).params for n in stages] == [241_250] * 3


def test_segments_add_up_to_the_stack() -> None:
    graph = zoo("dynamicvit-deit-s")
    segments = [n for n in graph.expanded if n.startswith("encoder.layers.")]
    stack = graph.nodes["encoder"].stack
    assert sum(cost.node_cost(graph, n).params for n in segments) == sum(
        cost.layer_cost(stack, layer).params for layer in stack.layers
    )


def test_tied_weights_count_once(minimal_gpt) -> None:
    graph = graph_of(minimal_gpt())
    assert cost.node_cost(graph, "tok").params == 100 * 64
    assert cost.node_cost(graph, "logits").params == 0
    assert cost.node_cost(graph, "logits").flops == 2 * 32 * 64 * 100
    doc = minimal_gpt()
    doc["nodes"]["logits"] = {"op": "lm_head", "input": "norm", "vocab_size": 100}
    untied = graph_of(doc)
    assert cost.node_cost(untied, "logits").params == 64 * 100  # no bias
    assert total(untied).params == total(graph).params + 64 * 100


def test_layer_parameters_by_formula(minimal_gpt) -> None:
    """GQA, no biases, SwiGLU, RMSNorm, layer scale and qk_norm against the reference formulas."""
    doc = minimal_gpt()
    doc["nodes"]["dec"]["block"] = {
        "attention": {"heads": 4, "kv_heads": 2, "bias": False, "qk_norm": True},
        "mlp": {"hidden": 96, "activation": "swiglu", "bias": False},
        "norm": {"kind": "rmsnorm"},
        "layer_scale": 1e-5,
    }
    graph = graph_of(doc)
    D, H, K, E, F = 64, 4, 2, 16, 96
    attention = D * H * E + 2 * D * K * E + H * E * D + 2 * E
    mlp = 2 * D * F + F * D
    norms = 2 * D
    layer_scale = 2 * D
    expected = attention + mlp + norms + layer_scale
    assert cost.node_cost(graph, "dec").params == 2 * expected


def test_cross_attention_parameters(minimal_gpt) -> None:
    doc = minimal_gpt()
    doc["inputs"]["src"] = {"kind": "features", "dim": 32, "max_len": 10}
    doc["nodes"]["dec"].update(depth=1, memory="src")
    graph = graph_of(doc)
    D, Dm = 64, 32
    self_attention = 4 * D * D + 4 * D
    cross = D * D + 2 * Dm * D + D * D + (D + 2 * D + D)
    mlp = 2 * D * 4 * D + 4 * D + D
    norms = 3 * 2 * D
    assert cost.node_cost(graph, "dec").params == self_attention + cross + mlp + norms


def test_relative_bias_table_counts_once_per_stack(minimal_gpt) -> None:
    doc = minimal_gpt()
    graph = graph_of(doc)
    doc["nodes"]["dec"]["block"]["attention"]["position"] = {"kind": "relative_bias", "buckets": 8}
    with_bias = graph_of(doc)
    assert total(with_bias).params - total(graph).params == 8 * 4


def test_attention_flops_are_dense(minimal_gpt) -> None:
    doc = minimal_gpt()
    causal = total(graph_of(doc)).flops
    doc["nodes"]["dec"]["block"]["attention"]["mask"] = {"kind": "sliding_window", "window": 4}
    assert total(graph_of(doc)).flops == causal
    doc["nodes"]["dec"]["block"]["attention"]["mask"] = "none"
    assert total(graph_of(doc)).flops == causal


def test_softmax_attention_flops(minimal_gpt) -> None:
    plan = graph_of(minimal_gpt()).nodes["dec"].stack.layers[0].attention
    T, D, H, E = 32, 64, 4, 16
    projections = 2 * T * D * (3 * H * E) + 2 * T * H * E * D
    assert cost.attention_cost(plan, T, T).flops == projections + 4 * H * T * T * E


def test_linear_attention_flops(minimal_gpt) -> None:
    doc = minimal_gpt()
    doc["nodes"]["dec"]["block"]["attention"].update(kind="linear", mask="none")
    plan = graph_of(doc).nodes["dec"].stack.layers[0].attention
    T, D, H, E = 32, 64, 4, 16
    projections = 2 * T * D * (3 * H * E) + 2 * T * H * E * D
    kernel = H * (2 * T * E * E + 2 * T * E * E + 2 * T * E)
    assert cost.attention_cost(plan, T, T).flops == projections + kernel
    doc["nodes"]["dec"]["block"]["attention"]["mask"] = "causal"
    plan = graph_of(doc).nodes["dec"].stack.layers[0].attention
    c, padded = 32, 32
    causal_kernel = H * (4 * padded * c * E + 4 * padded * E * E + 2 * padded * E)
    assert cost.attention_cost(plan, T, T).flops == projections + causal_kernel


def test_merge_stage_flops(minimal_vit) -> None:
    doc = minimal_vit()
    doc["nodes"]["enc"]["prune"] = {"method": "merge", "at": [1], "r": 2}
    graph = graph_of(doc)
    stage = cost.node_cost(graph, "enc.prune.1")
    assert stage == cost.Cost(0, 2 * 8 * 8 * 16)


def test_zero_cost_nodes(minimal_vit) -> None:
    doc = minimal_vit()
    doc["nodes"]["pos"]["encoding"] = "sincos_2d"
    doc["nodes"]["d"] = {"op": "dropout", "input": "enc", "p": 0.1}
    doc["nodes"]["p"] = {"op": "pool", "input": "d"}
    doc["nodes"]["head"]["input"] = "p"
    graph = graph_of(doc)
    for node in ("image", "pos", "d", "p"):
        assert cost.node_cost(graph, node) == cost.ZERO


def test_every_zoo_node_has_a_cost(zoo_path: Path) -> None:
    graph = graph_of(zoo_path)
    costs = [cost.node_cost(graph, node) for node in graph.expanded]
    assert all(c.params >= 0 and c.flops >= 0 for c in costs)
    assert sum(c.params for c in costs) > 0
