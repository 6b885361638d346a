"""``pruning.trace``: what ``trace_tokens`` records of every stage and pruned node, explicit
``token_prune`` nodes between stacks, in training and inference."""

from __future__ import annotations

import pytest
import torch
from pruning_testing import HEADS, NODE_SETTINGS, PATCHES, TAILS, build, explicit_node, images, vit

from archlab import SpecError
from archlab.compiler.nn.pruning import kept_count


def test_explicit_token_prune_nodes_between_stacks() -> None:
    spec = vit(depth=2)
    nodes = spec["nodes"]
    nodes["tp"] = {"op": "token_prune", "input": "encoder", "method": "attention_topk", "keep": 0.5}
    nodes["enc2"] = {
        "op": "encoder",
        "input": "tp",
        "depth": 2,
        "block": {"attention": {"heads": HEADS}},
        "prune": {"method": "attention_topk", "at": [0], "keep": 0.5, "fuse": True},
    }
    nodes["norm"] = {"op": "norm", "input": "enc2"}
    nodes["tp2"] = {"op": "token_prune", "input": "norm", "method": "merge", "r": 2}
    nodes["enc3"] = {
        "op": "encoder",
        "input": "tp2",
        "depth": 1,
        "block": {"attention": {"heads": HEADS}},
    }
    nodes["tp3"] = {"op": "token_prune", "input": "enc3", "method": "dynamic", "keep": 0.5}
    nodes["head"]["input"] = "tp3"
    model = build(spec)
    with torch.no_grad():
        _, trace = model.trace_tokens(images())
    # 16 -> 8 (EViT) -> 4 + 1 fused -> 5 - min(2, 2) = 3 (ToMe) -> ceil(1.5) = 2 (DynamicViT)
    expected = {"tp": 8, "enc2.prune.0": 5, "tp2": 3, "tp3": 2}
    assert {r.name: r.index.shape[1] - 1 for r in trace.stages} == expected
    rows = {row.id: row.tokens for row in model.summary().nodes}
    assert {name: rows[name] - 1 for name in expected} == expected
    for node, length in {"tp": 9, "enc2": 6, "tp2": 4, "enc3": 4, "tp3": 3}.items():
        assert model.graph.nodes[node].shape.length == length
        assert trace.features[node].shape[1] == length
    assert [r.method for r in trace.stages] == [
        "attention_topk",
        "attention_topk",
        "merge",
        "dynamic",
    ]


@pytest.mark.parametrize("method", ["attention_topk", "merge"])
def test_explicit_token_prune_after_a_stack_that_prunes_in_its_last_layer(method: str) -> None:
    """A stack whose last layer hosts an EViT/ToMe stage, then a token_prune node reading the
    attention of that layer. The compiler accepts the spec and infers its shapes, so the forward
    must run with those shapes (or the compiler must refuse the spec)."""
    settings = {"keep": 0.5} if method == "attention_topk" else {"r": 3}
    spec = vit({"method": method, "at": [3], **settings})
    spec["nodes"]["tp"] = {"op": "token_prune", "input": "encoder", "method": method, **settings}
    spec["nodes"]["head"]["input"] = "tp"
    try:
        model = build(spec)
    except SpecError:
        return  # refusing the spec is a fine answer too
    expected = model.graph.nodes["tp"].shape.length
    with torch.no_grad():
        _, trace = model.trace_tokens(images())
    assert trace.features["tp"].shape[1] == expected


NODE_PATCHES = {"dynamic": 8, "attention_topk": 9, "merge": 12}


@pytest.mark.parametrize(
    ("method", "tail"),
    [
        (method, tail)
        for method in sorted(NODE_SETTINGS)
        for tail in sorted(TAILS)
        if method == "dynamic" or tail != "dynamic-between"  # (two dynamic nodes in a row)
    ],
)
def test_explicit_token_prune_node_trains_and_infers(method: str, tail: str) -> None:
    """The node form of every method, followed by one or more stacks: training runs forward and
    backward at the length training really has (DynamicViT keeps every token, the others
    shorten), the state (DynamicViT's policy, ToMe's sizes) reaches every later stack, and
    inference shortens the sequence as the shape inference and the summary say."""
    model = build(explicit_node(method, tail), train=True)
    stacks = [node_id for node_id, _ in TAILS[tail] if node_id.startswith("enc")]
    patches = NODE_PATCHES[method]
    if tail == "dynamic-between":
        patches = kept_count(0.5, patches)
    torch.manual_seed(0)
    logits, trace = model.trace_tokens(images(4))
    logits.square().mean().backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    if method == "dynamic":  # the predictors learn through the later attentions' policy
        assert model.tp.predictor.output[4].weight.grad.abs().max() > 0
    for node_id in ["tp", *stacks]:
        shape = model.graph.nodes[node_id].shape
        trained = trace.features[node_id].shape[1]
        if method == "dynamic":
            assert (shape.train_length, trained) == (1 + PATCHES, 1 + PATCHES), node_id
            state = trace.states[node_id]
            assert state.policy is not None and state.policy.shape == (4, 1 + PATCHES), node_id
            # the policy of the last dynamic stage before it, dropped tokens still dropped
            assert state.stages[-1].policy is state.policy, node_id
            assert (state.policy[:, 1:] == 0).any(), node_id
        else:
            assert shape.train_length is None and trained == shape.length, node_id
    last = trace.states[stacks[-1]]
    if method == "merge":
        assert last.size is not None and last.size.sum(1).eq(1 + PATCHES).all()
    assert last.stages[0].name == "tp"  # the node's record travels on

    model.eval()
    rows = {row.id: row.tokens for row in model.summary().nodes}
    with torch.no_grad():
        out, trace = model.trace_tokens(images(4))
    assert out.shape == (4, 10)
    for node_id in ["tp", *stacks]:
        length = model.graph.nodes[node_id].shape.length
        assert trace.features[node_id].shape[1] == length == rows[node_id], node_id
        assert trace.states[node_id].policy is None, node_id
    assert trace.features[stacks[-1]].shape[1] == 1 + patches < 1 + PATCHES
