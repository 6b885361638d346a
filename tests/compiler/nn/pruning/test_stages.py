"""Token pruning stages (``archlab.compiler.nn.pruning``): DynamicViT, EViT, ToMe, in compiled models.

Keep counts against the compiler's shape inference, CLS tokens never dropped, training masks,
gradients to the predictors, dropped tokens that stay dropped, EViT's fused token, ToMe's sizes
and source map, the policy-weighted softmax, padding, and the specs the compiler refuses.
Tiny models: 8x8 one-channel images in 2x2 patches (16 patches), width 32, 2 heads.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from archlab import SpecError, compile_spec
from archlab.compiler.model import CompiledModel
from archlab.compiler.nn import Attention, KernelChoice, Stack
from archlab.compiler.nn.pruning import (
    AttentionTopK,
    DynamicPrune,
    TokenMerge,
    TokenState,
    kept_count,
    policy_attention,
)
from archlab.compiler.nn.pruning.hook import PrunedAttention

Doc = dict[str, Any]
PATCHES = 16  # 8x8 images in 2x2 patches
DIM, HEADS = 32, 2

DYNAMIC = {"method": "dynamic", "at": [1, 2], "keep": 0.7}
TOPK = {"method": "attention_topk", "at": [1, 2], "keep": 0.5, "fuse": True}
MERGE = {"method": "merge", "at": [0, 1, 2], "r": 4}
METHODS = {"dynamic": DYNAMIC, "attention_topk": TOPK, "merge": MERGE}


def vit(prune: Doc | None = None, *, depth: int = 4, count: int = 1, **block: Any) -> Doc:
    """8x8 images -> 16 patches of width 32 -> `count` CLS tokens -> learned positions -> encoder."""
    attention = {"heads": HEADS, **block.pop("attention", {})}
    encoder: Doc = {
        "op": "encoder",
        "input": "pos",
        "depth": depth,
        "block": {"attention": attention, **block},
    }
    if prune is not None:
        encoder["prune"] = copy.deepcopy(prune)
    return {
        "version": 1,
        "name": "prune-vit",
        "inputs": {"image": {"kind": "image", "channels": 1, "size": 8}},
        "nodes": {
            "patches": {"op": "patch_embed", "input": "image", "dim": DIM, "patch_size": 2},
            "cls": {"op": "cls_token", "input": "patches", "count": count},
            "pos": {"op": "position", "input": "cls", "encoding": "learned"},
            "encoder": encoder,
            "head": {"op": "classify", "input": "encoder", "pool": "cls", "classes": 10},
        },
        "outputs": "head",
    }


def features_model(prune: Doc) -> Doc:
    """Padded feature sequences (up to 12 tokens of width 32) -> CLS -> a 3-layer encoder."""
    return {
        "version": 1,
        "inputs": {"x": {"kind": "features", "dim": DIM, "max_len": 12}},
        "nodes": {
            "cls": {"op": "cls_token", "input": "x"},
            "enc": {
                "op": "encoder",
                "input": "cls",
                "depth": 3,
                "block": {"attention": {"heads": HEADS}},
                "prune": prune,
            },
            "head": {"op": "classify", "input": "enc", "classes": 3},
        },
        "outputs": "head",
    }


def build(spec: Doc, train: bool = False) -> CompiledModel:
    model = compile_spec(spec, seed=0)
    return model.train(train)


def images(batch: int = 2) -> Tensor:
    return torch.randn(batch, 1, 8, 8)


def stage_modules(model: CompiledModel, stack: str = "encoder") -> dict[str, nn.Module]:
    prune = getattr(model, stack).prune
    assert prune is not None
    return {f"{stack}.prune.{key}": module for key, module in prune.items()}


def record_stage_calls(model: CompiledModel) -> tuple[list[tuple[str, tuple, tuple]], Callable]:
    """Forward hooks on every pruning stage: (name, args, output) per call; call the 2nd to remove."""
    calls: list[tuple[str, tuple, tuple]] = []
    handles = []
    for name, module in model.named_modules():
        if isinstance(module, DynamicPrune | AttentionTopK | TokenMerge):
            handles.append(
                module.register_forward_hook(
                    lambda m, args, out, name=name: calls.append((name, args, out))
                )
            )

    def remove() -> None:
        for handle in handles:
            handle.remove()

    return calls, remove


def expected_patches(prune: Doc, patches: int = PATCHES) -> list[int]:
    """Patch tokens after each stage, from the spec-language rules written out once more."""
    after = []
    for _ in prune["at"]:
        if prune["method"] == "merge":
            patches -= min(prune["r"], patches // 2)
        else:
            kept = max(1, math.ceil(round(prune["keep"] * patches, 9)))
            fused = prune.get("fuse", False) and kept < patches
            patches = kept + fused
        after.append(patches)
    return after


def softmax_attention(q: Tensor, k: Tensor, v: Tensor, scale: float) -> Tensor:
    return ((q @ k.transpose(-2, -1)) * scale).softmax(dim=-1) @ v


def check_spec_error(spec: Doc, path: str, *fragments: str) -> SpecError:
    with pytest.raises(SpecError) as exc:
        compile_spec(spec)
    messages = [m for p, m in exc.value.errors if p == path]
    assert messages, f"no error at {path}: {exc.value.errors}"
    assert any(all(f in m for f in fragments) for m in messages), (
        f"no message at {path} has {fragments}: {messages}"
    )
    return exc.value


# ------------------------------------------------------------------------------------ keep counts


@pytest.mark.parametrize(
    ("prune", "after"),
    [
        (DYNAMIC, [12, 9]),  # ceil(0.7 * 16), ceil(0.7 * 12)
        ({**TOPK, "fuse": False, "keep": 0.7}, [12, 9]),
        (TOPK, [8 + 1, 5 + 1]),  # the fused token counts as a patch at the next stage
        (MERGE, [12, 8, 4]),
        ({**MERGE, "r": 6}, [10, 5, 3]),  # capped at half the patches present
        ({"method": "dynamic", "at": [0, 1, 2, 3], "keep": 0.1}, [2, 1, 1, 1]),  # at least 1
    ],
    ids=["dynamic", "topk", "topk-fused", "merge", "merge-capped", "dynamic-floor"],
)
@pytest.mark.parametrize("count", [1, 2])
def test_keep_counts_follow_the_schedule_and_the_shape_inference(
    prune: Doc, after: list[int], count: int
) -> None:
    assert expected_patches(prune) == after
    model = build(vit(prune, count=count))
    names = [f"encoder.prune.{i}" for i in prune["at"]]
    # run without a trace too: the plain forward shortens the sequence just the same
    calls, remove = record_stage_calls(model)
    with torch.no_grad():
        model(images())
        out, trace = model.trace_tokens(images())
    remove()
    lengths = [output[0].shape[1] for _, _, output in calls]
    assert lengths == [count + a for a in after] * 2
    assert [name for name, _, _ in calls] == names * 2

    assert [r.name for r in trace.stages] == names
    assert [r.n_cls for r in trace.stages] == [count] * len(names)
    assert [r.index.shape[1] for r in trace.stages] == [count + a for a in after]
    if prune["method"] == "merge":  # a merged token stands for several patches, none is gone
        assert all(trace.kept(r).all() for r in trace.stages)
    elif not prune.get("fuse"):
        assert [trace.kept(r).sum(1).tolist() for r in trace.stages] == [[a, a] for a in after]

    rows = {row.id: row.tokens for row in model.summary().nodes}
    assert [rows[name] for name in names] == [count + a for a in after]
    plan = model.graph.nodes["encoder"]
    assert [s.tokens_after for s in plan.stack.stages] == [count + a for a in after]
    assert plan.shape.length == count + after[-1]
    assert trace.features["encoder"].shape == (2, count + after[-1], DIM)
    assert out.shape == (2, 10)
    for layer in plan.stack.layers:  # the layer plans' counts are what the layers really see
        if layer.prune is not None:
            i = prune["at"].index(layer.index)
            before = count + (PATCHES if i == 0 else after[i - 1])
            seen = (layer.tokens, layer.tokens_mlp)
            if layer.prune.placement == "before":
                assert seen == (count + after[i], count + after[i])
            else:
                assert seen == (before, count + after[i])


def test_kept_count_is_the_compilers_count_capped() -> None:
    assert [kept_count(0.7, n) for n in (16, 12, 10, 1, 0)] == [12, 9, 7, 1, 0]
    assert kept_count(1.0, 5) == 5


def dynamic_between_stacks(block: Doc | None = None, prune: Doc | None = None) -> Doc:
    """Two stacks with an explicit `dynamic` token_prune node (keep 0.5) between them; `block`
    and `prune` shape the second stack."""
    spec = vit(depth=2)
    spec["nodes"]["tp"] = {
        "op": "token_prune",
        "input": "encoder",
        "method": "dynamic",
        "keep": 0.5,
    }
    enc2: Doc = {
        "op": "encoder",
        "input": "tp",
        "depth": 2,
        "block": block or {"attention": {"heads": HEADS}},
    }
    if prune is not None:
        enc2["prune"] = prune
    spec["nodes"]["enc2"] = enc2
    spec["nodes"]["head"]["input"] = "enc2"
    return spec


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
def test_evit_and_tome_may_not_follow_a_dynamic_stage(method: str) -> None:
    """In training DynamicViT keeps the dropped tokens (masked): a later EViT/ToMe stage would
    score, fuse or merge them as if alive, so the compiler refuses the order."""
    settings = {"keep": 0.5} if method == "attention_topk" else {"r": 2}
    spec = vit(DYNAMIC)
    spec["nodes"]["tp"] = {"op": "token_prune", "input": "encoder", "method": method, **settings}
    spec["nodes"]["head"]["input"] = "tp"
    with pytest.raises(SpecError, match=f"{method} cannot follow a dynamic stage"):
        build(spec)
    spec = dynamic_between_stacks(prune={"method": method, "at": [1], **settings})
    with pytest.raises(SpecError, match="cannot follow a dynamic stage"):
        build(spec)


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


def test_dynamic_training_keeps_the_length_and_records_the_policy() -> None:
    model = build(vit(DYNAMIC), train=True)
    torch.manual_seed(3)
    logits, trace = model.trace_tokens(images(4))
    assert logits.shape == (4, 10)
    assert trace.features["encoder"].shape == (4, 1 + PATCHES, DIM)  # nothing removed
    first, second = trace.stages
    for record in trace.stages:
        assert record.policy is not None and record.policy.shape == (4, 1 + PATCHES)
        p = record.policy.detach()
        assert torch.minimum(p, (1 - p).abs()).max() < 1e-6  # hard decisions (straight-through)
        assert (record.policy[:, 0] == 1).all()
        torch.testing.assert_close(trace.kept(record), record.policy[:, 1:] > 0, rtol=0, atol=0)
        assert record.index.shape == (4, 1 + PATCHES)
    assert (first.policy[:, 1:] == 0).any(), "a fresh predictor drops some tokens"
    # a token dropped at stage 1 stays dropped at stage 2
    assert not ((first.policy == 0) & (second.policy > 0)).any()
    # ratio-loss targets: the fraction of all patches that inference keeps after the stage
    # (compared with the policy's mean over every patch, which training never removes)
    assert [r.target for r in trace.stages] == pytest.approx([12 / 16, 9 / 16])
    model.eval()
    with torch.no_grad():
        _, trace = model.trace_tokens(images(4))
    assert [r.policy for r in trace.stages] == [None, None]
    assert [r.target for r in trace.stages] == pytest.approx([12 / 16, 9 / 12])


def test_keep_one_is_the_dense_model() -> None:
    """keep 1.0: DynamicViT only reorders the patches, EViT keeps them as they are."""
    x = images()
    dense = build(vit())
    with torch.no_grad():
        expected = dense(x)
        for method in ("dynamic", "attention_topk"):
            model = build(vit({"method": method, "at": [1, 3], "keep": 1.0}))
            missing, unexpected = model.load_state_dict(dense.state_dict(), strict=False)
            assert not unexpected and all(".predictor." in k for k in missing)
            torch.testing.assert_close(model(x), expected, rtol=0, atol=1e-5)


# ------------------------------------------------------------------------------ CLS never dropped


@pytest.mark.parametrize("method", list(METHODS))
@pytest.mark.parametrize("count", [1, 2])
@pytest.mark.parametrize("train", [False, True])
def test_cls_tokens_are_never_dropped(method: str, count: int, train: bool) -> None:
    model = build(vit(METHODS[method], count=count), train=train)
    calls, remove = record_stage_calls(model)
    with torch.set_grad_enabled(train):
        _, trace = model.trace_tokens(images(3))
    remove()
    assert len(calls) == len(METHODS[method]["at"])
    for _, args, (out, _, state) in calls:
        assert torch.equal(out[:, :count], args[0][:, :count])  # CLS features pass unchanged
        assert (state.index[:, :count] == torch.arange(count)).all()
        assert (state.source[:, :count] == torch.arange(count)).all()
        if state.policy is not None:
            assert (state.policy[:, :count] == 1).all()
        if state.size is not None:
            assert (state.size[:, :count] == 1).all()
        assert (state.index[:, count:] != torch.arange(count)[:, None, None]).all()
    for record in trace.stages:
        assert record.n_cls == count
        assert (record.index[:, :count] == torch.arange(count)).all()
        assert trace.kept(record).shape == (3, PATCHES)


# -------------------------------------------------------------------------------------- gradients


def predictor_parameters(model: CompiledModel) -> dict[str, dict[str, Tensor]]:
    out: dict[str, dict[str, Tensor]] = {}
    for name, p in model.named_parameters():
        if ".predictor." in name:
            stage = name.split(".predictor.")[0]
            out.setdefault(stage, {})[name] = p
    return out


@pytest.mark.parametrize("with_ratio", [True, False], ids=["ratio-term", "logits-only"])
def test_gradients_reach_every_predictor(with_ratio: bool) -> None:
    """With only the classification loss, the gradient reaches the predictors through the
    policy-weighted softmax of the attentions after them (a -inf mask would pass none)."""
    model = build(vit(DYNAMIC), train=True)
    torch.manual_seed(1)
    logits, trace = model.trace_tokens(images(4))
    loss = logits.sum()
    if with_ratio:
        loss = loss + sum(r.policy[:, 1:].mean() for r in trace.stages)
    loss.backward()
    stages = predictor_parameters(model)
    assert sorted(stages) == ["encoder.prune.1", "encoder.prune.2"]
    for params in stages.values():
        assert len(params) == 10
        for name, p in params.items():
            assert p.grad is not None, name
            assert torch.isfinite(p.grad).all(), name
            assert p.grad.abs().max() > 0, name


def test_the_ratio_term_alone_reaches_the_predictors() -> None:
    model = build(vit(DYNAMIC), train=True)
    torch.manual_seed(2)
    _, trace = model.trace_tokens(images(4))
    sum((r.policy[:, 1:].mean() - r.target) ** 2 for r in trace.stages).backward()
    for params in predictor_parameters(model).values():
        for name, p in params.items():
            assert p.grad is not None and p.grad.abs().max() > 0, name


# ----------------------------------------------------------------------- dropped tokens stay gone


def test_keep_predictor_global_feature_averages_the_live_tokens_only() -> None:
    predictor = DynamicPrune(DIM, keep=0.5, n_cls=1, name="s").predictor.eval()
    x = torch.randn(2, 8, DIM)
    policy = torch.ones(2, 8)
    policy[:, 5:] = 0
    with torch.no_grad():
        out = predictor(x, policy)
        assert out.shape == (2, 8, 2)
        torch.testing.assert_close(out.exp().sum(-1), torch.ones(2, 8))
        moved = x.clone()
        moved[:, 5:] += 10.0 * torch.randn(2, 3, DIM)
        torch.testing.assert_close(predictor(moved, policy)[:, :5], out[:, :5], rtol=0, atol=0)
        moved = x.clone()
        moved[:, 4] += 10.0 * torch.randn(2, DIM)  # a live token moves everyone's global feature
        assert (predictor(moved, policy)[:, :4] - out[:, :4]).abs().max() > 1e-4


def test_a_token_dropped_in_training_never_influences_the_others() -> None:
    """Perturb, right after stage 1, a token it dropped: with the Gumbel noise fixed by the seed,
    every other token's output and the logits stay as they were; perturbing a kept token does not."""
    model = build(vit(DYNAMIC), train=True)
    x = images(2)
    stage1, stage2 = model.encoder.prune["1"], model.encoder.prune["2"]
    delta = 10.0 * torch.randn(DIM)  # drawn here: the hook must not move the Gumbel noise

    def run(token: int | None) -> tuple[Tensor, Tensor, list[Tensor], Tensor]:
        def perturb(module: nn.Module, args: tuple, out: tuple) -> tuple:
            if token is None:
                return out
            y = out[0].clone()
            y[0, token] += delta
            return (y, *out[1:])

        scores: list[Tensor] = []
        handles = [
            stage1.register_forward_hook(perturb),
            stage2.predictor.register_forward_hook(lambda m, a, o: scores.append(o)),
        ]
        torch.manual_seed(7)
        with torch.no_grad():
            logits, trace = model.trace_tokens(x)
        for handle in handles:
            handle.remove()
        policies = [r.policy for r in trace.stages]
        return logits, trace.features["encoder"], policies, scores[0]

    logits, feats, policies, scores = run(None)
    again = run(None)
    torch.testing.assert_close(again[0], logits, rtol=0, atol=0)  # the seed fixes the decisions
    dropped = (policies[0][0, 1:] == 0).nonzero().flatten() + 1
    kept = (policies[0][0, 1:] > 0).nonzero().flatten() + 1
    assert len(dropped) and len(kept)
    token = int(dropped[0])
    p_logits, p_feats, p_policies, p_scores = run(token)
    # stage 2's predictor: the other tokens' scores ignore the dropped one (global feature too)
    patches = [t - 1 for t in range(1, 1 + PATCHES) if t != token]
    torch.testing.assert_close(p_scores[0, patches], scores[0, patches], rtol=0, atol=1e-6)
    for p_policy, policy in zip(p_policies, policies, strict=True):
        torch.testing.assert_close(p_policy, policy, rtol=0, atol=0)
    others = [t for t in range(1 + PATCHES) if t != token]
    torch.testing.assert_close(p_feats[0, others], feats[0, others], rtol=0, atol=1e-6)
    torch.testing.assert_close(p_feats[1], feats[1], rtol=0, atol=1e-6)
    torch.testing.assert_close(p_logits, logits, rtol=0, atol=1e-6)
    # a kept token does move the others (and the logits)
    k_logits, k_feats, _, _ = run(int(kept[0]))
    assert (k_logits[0] - logits[0]).abs().max() > 1e-3
    assert (k_feats[0, 0] - feats[0, 0]).abs().max() > 1e-3


def test_stack_under_a_fixed_policy_ignores_dropped_tokens() -> None:
    dense = build(vit(depth=3), train=True)
    stack = Stack(list(dense.encoder.layers)).train()
    x = torch.randn(2, 1 + PATCHES, DIM)
    policy = (torch.rand(2, 1 + PATCHES) > 0.4).float()
    policy[:, 0] = 1
    policy[:, 1] = 0
    policy[:, 2] = 1
    state = TokenState(policy=policy)
    with torch.no_grad():
        out = stack.forward_tokens(x, state=state)[0]
        for b in range(2):
            dropped = (policy[b] == 0).nonzero().flatten()
            kept = (policy[b] > 0).nonzero().flatten()
            moved = x.clone()
            moved[b, dropped] += 5.0 * torch.randn(len(dropped), DIM)
            after = stack.forward_tokens(moved, state=state)[0]
            torch.testing.assert_close(after[b, kept], out[b, kept], rtol=0, atol=1e-6)
            torch.testing.assert_close(after[1 - b], out[1 - b], rtol=0, atol=0)
            # a dropped token still attends to the kept ones and to itself
            assert (after[b, dropped] - out[b, dropped]).abs().amax(-1).min() > 1e-3
            moved = x.clone()
            moved[b, 2] += 5.0 * torch.randn(DIM)
            after = stack.forward_tokens(moved, state=state)[0]
            assert (after[b, 0] - out[b, 0]).abs().max() > 1e-3


# --------------------------------------------------------------- masked equals gathered attention


def test_policy_attention_equals_attention_over_the_kept_keys() -> None:
    B, H, T, E = 3, 2, 9, 8
    q, k, v = (torch.randn(B, H, T, E) for _ in range(3))
    policy = (torch.rand(B, T) > 0.5).float()
    policy[:, 0] = 1
    policy[0, 1:] = 0  # only the CLS key left
    scale = E**-0.5
    out = policy_attention(q, k, v, policy, scale=scale)
    assert out.shape == (B, H, T, E)
    for b in range(B):
        kept = (policy[b] > 0).nonzero().flatten()
        expected = softmax_attention(q[b][:, kept], k[b][:, kept], v[b][:, kept], scale)
        torch.testing.assert_close(out[b][:, kept], expected, rtol=0, atol=1e-5)
        for i in (policy[b] == 0).nonzero().flatten().tolist():  # dropped: kept keys and itself
            keys = torch.cat([kept, torch.tensor([i])])
            expected = softmax_attention(q[b][:, [i]], k[b][:, keys], v[b][:, keys], scale)
            torch.testing.assert_close(out[b][:, [i]], expected, rtol=0, atol=1e-5)


def test_policy_attention_with_a_mask_and_a_bias() -> None:
    B, H, T, E = 2, 2, 7, 4
    q, k, v = (torch.randn(B, H, T, E) for _ in range(3))
    policy = torch.ones(B, T)
    policy[:, 3] = 0
    allowed = torch.ones(B, 1, 1, T, dtype=torch.bool)
    allowed[1, ..., 5:] = False  # padding
    bias = torch.randn(H, T, T)
    out = policy_attention(q, k, v, policy, scale=0.5, allowed=allowed, bias=bias)
    for b in range(B):
        keys = [j for j in range(T) if j != 3 and allowed[b, 0, 0, j]]
        s = q[b] @ k[b][:, keys].transpose(-2, -1) * 0.5 + bias[:, :, keys]
        expected = s.softmax(-1) @ v[b][:, keys]
        rows = [i for i in range(T) if i != 3]
        torch.testing.assert_close(out[b][:, rows], expected[:, rows], rtol=0, atol=1e-5)


class HardKeep(nn.Module):
    """Wraps a keep predictor: the same top-k choice among the live tokens, as certain decisions
    (log-probabilities 0 / -100), so that the Gumbel sample cannot change them."""

    def __init__(self, real: nn.Module, keep: float) -> None:
        super().__init__()
        self.real, self.keep = real, keep

    def forward(self, x: Tensor, policy: Tensor) -> Tensor:
        score = self.real(x, policy)[..., 0]  # (B, N)
        live = policy > 0
        counts = live.sum(1)
        assert (counts == counts[0]).all()
        k = kept_count(self.keep, int(counts[0]))
        chosen = score.masked_fill(~live, float("-inf")).topk(k, dim=1).indices
        keep = torch.zeros_like(live).scatter(1, chosen, True)
        sure = torch.tensor([0.0, -100.0])
        return torch.where(keep[..., None], sure, sure.flip(0))


def test_training_with_the_inference_decisions_gives_the_inference_output() -> None:
    """DynamicViT in training, whose Gumbel decisions are forced to the inference top-k, computes
    the same logits and CLS feature as inference, which really removes the tokens."""
    model = build(vit(DYNAMIC))
    for stage in model.encoder.prune.values():
        stage.predictor = HardKeep(stage.predictor, stage.keep)
    x = images(3)
    with torch.no_grad():
        model.eval()
        logits, trace = model.trace_tokens(x)
        model.train()
        t_logits, t_trace = model.trace_tokens(x)
    assert t_trace.features["encoder"].shape[1] == 1 + PATCHES
    assert trace.features["encoder"].shape[1] == 1 + 9
    for record, t_record in zip(trace.stages, t_trace.stages, strict=True):
        assert torch.equal(trace.kept(record), t_trace.kept(t_record))
    torch.testing.assert_close(t_logits, logits, rtol=0, atol=1e-5)
    cls, t_cls = trace.features["encoder"][:, 0], t_trace.features["encoder"][:, 0]
    torch.testing.assert_close(t_cls, cls, rtol=0, atol=1e-5)
    # and every kept token's feature, found through the trace's index
    index = trace.stages[-1].index  # (B, 10) original positions
    t_kept = t_trace.features["encoder"].gather(1, index[..., None].expand(-1, -1, DIM))
    torch.testing.assert_close(t_kept, trace.features["encoder"], rtol=0, atol=1e-5)


def test_explicit_dynamic_node_between_stacks_trains_like_it_infers() -> None:
    """The spec-language example: a `dynamic` token_prune node between two stacks. In training the
    next stack gets the full sequence and the policy; with the decisions forced to the inference
    top-k it computes what inference does."""
    spec = dynamic_between_stacks()
    model = build(spec)
    model.tp.predictor = HardKeep(model.tp.predictor, model.tp.keep)
    x = images(3)
    with torch.no_grad():
        logits, trace = model.trace_tokens(x)
        assert trace.features["enc2"].shape[1] == 1 + 8
        model.train()
        t_logits, t_trace = model.trace_tokens(x)  # the training forward must run
    assert t_trace.features["enc2"].shape[1] == 1 + PATCHES
    assert t_trace.states["enc2"].policy is not None  # the policy reached the second stack
    torch.testing.assert_close(t_logits, logits, rtol=0, atol=1e-5)


# explicit `token_prune` nodes of every method: the stacks after them, in training and inference

NODE_SETTINGS: dict[str, Doc] = {
    "dynamic": {"keep": 0.5},  # 16 -> 8 patches
    "attention_topk": {"keep": 0.5, "fuse": True},  # 16 -> 8 + 1 fused
    "merge": {"r": 4},  # 16 -> 12
}
NODE_PATCHES = {"dynamic": 8, "attention_topk": 9, "merge": 12}
ENC1: Doc = {"op": "encoder", "depth": 1, "block": {"attention": {"heads": HEADS}}}
#: what follows the node `tp`: the nodes (each reading the previous one) up to the head's input
TAILS: dict[str, list[tuple[str, Doc]]] = {
    "stack": [("enc2", ENC1)],
    "two-stacks": [("enc2", ENC1), ("enc3", ENC1)],
    "norm-between": [("enc2", ENC1), ("ln", {"op": "norm"}), ("enc3", ENC1)],
    "dynamic-between": [
        ("enc2", ENC1),
        ("tp2", {"op": "token_prune", "method": "dynamic", "keep": 0.5}),
        ("enc3", ENC1),
    ],
}


def explicit_node(method: str, tail: str) -> Doc:
    """encoder (2 layers) -> `tp`, a `token_prune` node of `method` -> the nodes of TAILS[tail]
    -> the head (CLS pooling)."""
    spec = vit(depth=2)
    nodes = spec["nodes"]
    nodes["tp"] = {"op": "token_prune", "input": "encoder", "method": method}
    nodes["tp"].update(NODE_SETTINGS[method])
    previous = "tp"
    for node_id, node in TAILS[tail]:
        nodes[node_id] = {**copy.deepcopy(node), "input": previous}
        previous = node_id
    nodes["head"]["input"] = previous
    return spec


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


@pytest.mark.parametrize("tail", ["two-stacks", "norm-between", "dynamic-between"])
def test_explicit_dynamic_node_trains_like_it_infers_through_every_later_stack(
    tail: str,
) -> None:
    """With the training decisions forced to the inference top-k, every stack after the node
    (not only the first) computes in training, over the full sequence under the policy, what
    inference computes over the kept tokens: the policy reaches each of their attentions, so a
    dropped token weighs nothing there."""
    model = build(explicit_node("dynamic", tail))
    for stage in [m for m in model.modules() if isinstance(m, DynamicPrune)]:
        stage.predictor = HardKeep(stage.predictor, stage.keep)
    x = images(3)
    with torch.no_grad():
        logits, trace = model.trace_tokens(x)
        model.train()
        t_logits, t_trace = model.trace_tokens(x)
    assert t_trace.features["enc3"].shape[1] == 1 + PATCHES > trace.features["enc3"].shape[1]
    torch.testing.assert_close(t_logits, logits, rtol=0, atol=1e-5)
    cls, t_cls = trace.features["enc3"][:, 0], t_trace.features["enc3"][:, 0]
    torch.testing.assert_close(t_cls, cls, rtol=0, atol=1e-5)


@pytest.mark.parametrize("pool", ["mean", "max"])
@pytest.mark.parametrize("form", ["node", "shorthand"])
def test_pooling_after_a_dynamic_stage_trains_like_it_infers(form: str, pool: str) -> None:
    """Mean and max pooling over a sequence a dynamic stage pruned skip, in training, the tokens
    its policy dropped, as inference (which removed them) does: with the decisions forced to the
    inference top-k, training and inference give the same logits."""
    spec = explicit_node("dynamic", "stack") if form == "node" else vit(DYNAMIC)
    spec["nodes"]["head"]["pool"] = pool
    model = build(spec)
    for stage in [m for m in model.modules() if isinstance(m, DynamicPrune)]:
        stage.predictor = HardKeep(stage.predictor, stage.keep)
    x = images(3)
    with torch.no_grad():
        logits = model(x)
        t_logits = model.train()(x)
    torch.testing.assert_close(t_logits, logits, rtol=0, atol=1e-5)


SEQUENCE_AFTER_DYNAMIC: dict[str, tuple[Doc, str]] = {
    "add": ({"op": "add", "inputs": ["tp", "tp"]}, "nodes.x.inputs"),
    "concat": ({"op": "concat", "inputs": ["tp", "tp"]}, "nodes.x.inputs"),
    "cls_token": ({"op": "cls_token", "input": "tp"}, "nodes.x.input"),
    "memory": (
        {"op": "decoder", "input": "pos", "memory": "tp", "depth": 1, "block": ENC1["block"]},
        "nodes.x.memory",
    ),
}


@pytest.mark.parametrize("case", sorted(SEQUENCE_AFTER_DYNAMIC))
def test_nodes_that_would_drop_a_dynamic_policy_are_refused(case: str) -> None:
    """Only norm, dropout, stacks and token_prune nodes carry DynamicViT's training policy: any
    other node combining or extending the sequence would let the dropped tokens count again in
    training (and in the next stack's attention), so the compiler refuses it."""
    node, path = SEQUENCE_AFTER_DYNAMIC[case]
    spec = explicit_node("dynamic", "stack")
    spec["nodes"]["x"] = node
    spec["nodes"]["enc2"]["input"] = "x"
    check_spec_error(spec, path, "'tp' passed a dynamic pruning stage", "policy")


@pytest.mark.parametrize("method", sorted(NODE_SETTINGS))
def test_a_position_node_after_a_pruning_stage_is_refused(method: str) -> None:
    spec = explicit_node(method, "stack")
    spec["nodes"]["pos2"] = {"op": "position", "input": "tp", "encoding": "learned"}
    spec["nodes"]["enc2"]["input"] = "pos2"
    check_spec_error(spec, "nodes.pos2.input", "'tp' passed a token pruning stage", "positions")


@pytest.mark.parametrize(
    "stage",
    [
        AttentionTopK(0.5, n_cls=1, fuse=True, name="e"),
        AttentionTopK(0.5, n_cls=1, fuse=False, name="e"),
        TokenMerge(4, n_cls=1, name="m"),
    ],
    ids=["evit-fused", "evit", "tome"],
)
def test_later_stages_refuse_a_dynamicvit_training_policy(stage: nn.Module) -> None:
    """An EViT or ToMe stage handed a DynamicViT training policy (which the compiler never
    builds) refuses it rather than letting dropped tokens reach live ones."""
    dense = build(vit(depth=3), train=True)
    stack = Stack(list(dense.encoder.layers), stages={1: stage}).train()
    x = torch.randn(2, 1 + PATCHES, DIM)
    policy = torch.ones(2, 1 + PATCHES)
    policy[:, 1:9] = 0
    with pytest.raises(ValueError, match="cannot follow a dynamic stage"):
        stack.forward_tokens(x, state=TokenState(policy=policy))


# ------------------------------------------------------------------------------ numeric stability


def test_policy_attention_is_stable_under_huge_scores() -> None:
    B, H, T = 2, 2, 6
    q = torch.randn(B, H, T, 4) * 1e3
    k = torch.randn(B, H, T, 4) * 1e3
    v = torch.eye(T).expand(B, H, T, T)  # one-hot values: the output rows are the weights
    policy = torch.ones(B, T, requires_grad=True)
    gate = torch.tensor([1.0, 1, 0, 1, 0, 1])
    weights = policy_attention(q, k, v, policy * gate, scale=0.5)
    assert torch.isfinite(weights).all()
    torch.testing.assert_close(weights.sum(-1), torch.ones(B, H, T))
    for i in range(T):
        for j in (2, 4):
            if i != j:
                assert (weights[:, :, i, j] == 0).all()  # dropped keys weigh exactly 0
    weights.square().sum().backward()
    assert torch.isfinite(policy.grad).all()


def test_a_dropped_key_far_above_the_kept_ones_weighs_nothing() -> None:
    q = torch.ones(1, 1, 3, 1)
    k = torch.tensor([0.0, 1e4, 1.0]).view(1, 1, 3, 1)
    v = torch.eye(3).view(1, 1, 3, 3)
    policy = torch.tensor([[1.0, 0.0, 1.0]])
    weights = policy_attention(q, k, v, policy, scale=1.0)[0, 0]
    assert torch.isfinite(weights).all()
    torch.testing.assert_close(weights[0], torch.tensor([1.0, 0.0, math.e]) / (1 + math.e))
    torch.testing.assert_close(weights[1], torch.tensor([0.0, 1.0, 0.0]))  # itself only


# ----------------------------------------------------------------------------------------- EViT


def test_attention_topk_fuses_the_dropped_tokens_by_cls_attention() -> None:
    B, T, D = 2, 1 + 6, 5
    x = torch.randn(B, T, D)
    cls_attention = torch.softmax(torch.randn(B, T), dim=-1)
    stage = AttentionTopK(keep=0.5, n_cls=1, fuse=True, name="s")
    out, mask, state = stage(x, None, None, cls_attention, trace=True)
    assert out.shape == (B, 1 + 3 + 1, D) and mask is None
    for b in range(B):
        order = cls_attention[b, 1:].argsort(descending=True) + 1
        kept, dropped = order[:3], order[3:]
        assert state.index[b, 1:4].tolist() == kept.tolist()
        torch.testing.assert_close(out[b, 1:4], x[b, kept], rtol=0, atol=0)
        fused = (cls_attention[b, dropped, None] * x[b, dropped]).sum(0)
        torch.testing.assert_close(out[b, 4], fused)
        assert state.index[b, 4] == -1
        assert (state.source[b, dropped] == 4).all()
        assert state.source[b, kept].tolist() == [1, 2, 3]
    plain = AttentionTopK(keep=0.5, n_cls=1, fuse=False, name="s")
    out2, _, _ = plain(x, None, None, cls_attention)
    torch.testing.assert_close(out2, out[:, :4], rtol=0, atol=0)


def test_evit_in_a_model_fuses_by_the_layers_own_cls_attention() -> None:
    model = build(vit({"method": "attention_topk", "at": [1], "keep": 0.5, "fuse": True}))
    layer = model.encoder.layers[1]
    seen: dict[str, Any] = {}
    h0 = model.encoder.layers[0].register_forward_hook(lambda m, a, o: seen.update(x_in=o))
    h1 = model.encoder.prune["1"].register_forward_hook(lambda m, a, o: seen.update(args=a, out=o))
    with torch.no_grad():
        model.trace_tokens(images(2))
        h0.remove()
        h1.remove()
        x_in = seen["x_in"]  # (B, 17, D) entering layer 1
        B, T, E = 2, 1 + PATCHES, DIM // HEADS
        q, k, v = (
            t.view(B, T, HEADS, E).transpose(1, 2)
            for t in layer.attention.qkv(layer.norm1(x_in)).split(DIM, dim=-1)
        )
        attn = ((q @ k.transpose(-2, -1)) * E**-0.5).softmax(dim=-1)  # (B, H, T, T)
        x_post = x_in + layer.attention.out((attn @ v).transpose(1, 2).reshape(B, T, DIM))
        a = attn.mean(dim=1)[:, 0]  # (B, T): CLS row, head-averaged
        stream, _, _, given, _ = seen["args"]
        torch.testing.assert_close(given, a, rtol=0, atol=1e-6)
        torch.testing.assert_close(stream, x_post, rtol=0, atol=1e-5)
        out, _, state = seen["out"]
        assert out.shape == (B, 1 + 8 + 1, DIM)
        for b in range(B):
            order = a[b, 1:].argsort(descending=True) + 1
            kept, dropped = order[:8], order[8:]
            assert sorted(state.index[b, 1:9].tolist()) == sorted(kept.tolist())
            fused = (a[b, dropped, None] * x_post[b, dropped]).sum(0)
            torch.testing.assert_close(out[b, -1], fused, rtol=0, atol=1e-5)
            torch.testing.assert_close(out[b, 0], x_post[b, 0], rtol=0, atol=1e-5)


# ----------------------------------------------------------------------------------------- ToMe


def test_token_merge_is_bipartite_matching_with_size_weighted_means() -> None:
    B, N, D, E, r = 2, 10, 6, 4, 3
    x = torch.randn(B, 1 + N, D)
    keys = torch.randn(B, 1 + N, E)
    size = torch.randint(1, 4, (B, 1 + N)).float()
    size[:, 0] = 1
    stage = TokenMerge(r, n_cls=1, name="m")
    out, _, state = stage(x, None, TokenState(size=size), keys, trace=True)
    assert out.shape == (B, 1 + N - r, D)
    metric = F.normalize(keys[:, 1:], dim=-1)
    for b in range(B):
        a, bb = metric[b, 0::2], metric[b, 1::2]
        best, dst = (a @ bb.T).max(dim=-1)
        merged_a = set(best.argsort(descending=True)[:r].tolist())
        src = state.source[b]
        assert (src >= 0).all() and (src < out.shape[1]).all()
        members = [(src == t).nonzero().flatten() for t in range(out.shape[1])]
        for t, group in enumerate(members):
            w = size[b, group]
            torch.testing.assert_close(out[b, t], (w[:, None] * x[b, group]).sum(0) / w.sum())
            torch.testing.assert_close(state.size[b, t], w.sum())
            assert int(state.index[b, t]) in group.tolist()
        for i in range(N // 2):  # A token i (patch 2i): merged into its best B token, or kept
            p = 1 + 2 * i
            if i in merged_a:
                assert int(src[p]) == int(src[1 + 2 * int(dst[i]) + 1])
            else:
                assert len(members[int(src[p])]) == 1
        assert sum(len(g) > 1 for g in members) <= r
        assert len(merged_a) == r


@pytest.mark.parametrize("r", [4, 6])
def test_tome_keeps_the_token_mass_and_a_consistent_source_map(r: int) -> None:
    model = build(vit({**MERGE, "r": r}, count=2))
    with torch.no_grad():
        _, trace = model.trace_tokens(images(3))
    for record in trace.stages:
        T = record.index.shape[1]
        torch.testing.assert_close(record.size.sum(1), torch.full((3,), 2.0 + PATCHES))
        assert (record.source >= 0).all() and (record.source < T).all()
        for b in range(3):
            counts = torch.bincount(record.source[b], minlength=T).float()
            torch.testing.assert_close(counts, record.size[b], rtol=0, atol=0)
            # each token's index is one of the patches it stands for
            assert (record.source[b, record.index[b]] == torch.arange(T)).all()
        assert trace.kept(record).all()  # merged, never dropped
    # the features follow: the output equals the size-weighted mean (checked per stage above for a
    # module); here the last stage's tokens together still stand for every patch once
    assert trace.stages[-1].size[:, 2:].sum(1).eq(PATCHES).all()


def test_tome_with_r_zero_is_the_dense_model() -> None:
    x = images()
    dense = build(vit())
    model = build(vit(MERGE))
    for stage in model.encoder.prune.values():
        stage.r = 0
    with torch.no_grad():
        expected = dense(x)
        out, trace = model.trace_tokens(x)
    torch.testing.assert_close(out, expected, rtol=0, atol=0)
    assert trace.features["encoder"].shape[1] == 1 + PATCHES


def test_proportional_attention_equals_attending_to_copies() -> None:
    """ToMe's log(size) bias: a key of size s weighs as s copies of it."""
    attention = Attention(8, 2, max_len=16, kernel=KernelChoice("sdpa", "test")).eval()
    x = torch.randn(1, 4, 8)
    size = torch.tensor([[1.0, 3.0, 1.0, 2.0]])
    repeats = size[0].long()
    copies = x.repeat_interleave(repeats, dim=1)  # (1, 7, 8)
    with torch.no_grad():
        out, _ = attention.attend(x, hook=PrunedAttention(None, size, None))
        expected = attention(copies)
    first = torch.cumsum(repeats, 0) - repeats  # the first copy of each token
    torch.testing.assert_close(out[0], expected[0, first], rtol=0, atol=1e-5)


def test_merged_duplicates_with_proportional_attention_match_the_dense_stack() -> None:
    """Patch pairs (2i, 2i + 1) identical: ToMe merges r of them, and with proportional attention
    (log size added to the scores in every later layer) the CLS output is the dense one."""
    dense = build(vit(depth=3))
    layers = list(dense.encoder.layers)
    merged = Stack(layers, stages={0: TokenMerge(6, n_cls=1, name="m")}).eval()
    plain = Stack(layers).eval()
    x = torch.randn(2, 1 + PATCHES // 2, DIM)
    x = torch.cat([x[:, :1], x[:, 1:].repeat_interleave(2, dim=1)], dim=1)  # (2, 17, D)
    with torch.no_grad():
        out, _, state, _ = merged.forward_tokens(x, trace=True)
        expected = plain(x)
    assert out.shape[1] == 1 + PATCHES - 6
    assert sorted(state.size[0].tolist()) == [1.0] * 5 + [2.0] * 6
    torch.testing.assert_close(out[:, 0], expected[:, 0], rtol=0, atol=1e-5)
    index = state.index  # each remaining token: the feature of (any) one it stands for
    torch.testing.assert_close(
        out, expected.gather(1, index[..., None].expand(-1, -1, DIM)), rtol=0, atol=1e-5
    )


# -------------------------------------------------------------------------------------- padding


def test_dynamic_inference_drops_the_padding_first() -> None:
    stage = DynamicPrune(DIM, keep=0.5, n_cls=1, name="s").eval()
    x = torch.randn(2, 1 + 8, DIM)
    mask = torch.ones(2, 1 + 8, dtype=torch.bool)
    mask[0, 4:] = False  # 3 real patches < k = 4
    mask[1, 7:] = False  # 6 real patches
    with torch.no_grad():
        out, new_mask, state = stage(x, mask, None, trace=True)
    assert out.shape == (2, 1 + 4, DIM)
    assert new_mask is not None
    assert torch.equal(new_mask, mask.gather(1, state.index))
    assert new_mask[0].tolist() == [True] * 4 + [False]
    assert new_mask[1].all()
    assert set(state.index[0, 1:4].tolist()) == {1, 2, 3}
    assert set(state.index[1, 1:].tolist()) <= set(range(1, 7))
    torch.testing.assert_close(out, x.gather(1, state.index[..., None].expand(-1, -1, DIM)))
    # the padded tokens do not enter the predictor's global feature
    moved = x.clone()
    moved[1, 7:] += 100.0
    with torch.no_grad():
        again = stage(moved, mask, None, trace=True)[2]
    assert torch.equal(again.index[1], state.index[1])


def test_dynamic_training_starts_with_the_padding_dropped() -> None:
    stage = DynamicPrune(DIM, keep=0.5, n_cls=1, name="s").train()
    x = torch.randn(2, 1 + 8, DIM)
    mask = torch.ones(2, 1 + 8, dtype=torch.bool)
    mask[0, 5:] = False
    out, new_mask, state = stage(x, mask, None)
    assert out is x and new_mask is mask
    assert (state.policy[0, 5:] == 0).all()
    assert state.policy[:, 0].eq(1).all()


@pytest.mark.parametrize(
    "prune",
    [
        {"method": "dynamic", "at": [1], "keep": 0.5},
        {"method": "attention_topk", "at": [1], "keep": 0.5, "fuse": True},
    ],
    ids=["dynamic", "attention_topk"],
)
def test_padded_models_keep_the_real_tokens(prune: Doc) -> None:
    model = build(features_model(prune))
    x = torch.randn(2, 12, DIM)
    mask = torch.ones(2, 12, dtype=torch.bool)
    mask[0, 4:] = False  # 4 real tokens < k = 6
    mask[1, 9:] = False  # 9 real tokens
    with torch.no_grad():
        out, trace = model.trace_tokens(x=x, x_mask=mask)
        plain = model(x=x, x_mask=mask)
    torch.testing.assert_close(out, plain, rtol=0, atol=0)
    assert torch.isfinite(out).all()
    (record,) = trace.stages
    real = set(range(1, 5))
    index = record.index[:, 1 : 1 + 6]
    assert real <= set(index[0].tolist())
    assert set(index[1].tolist()) <= set(range(1, 10))
    # a padded token's features cannot change the output
    moved = x.clone()
    moved[0, 4:] += 50.0
    moved[1, 9:] -= 50.0
    with torch.no_grad():
        torch.testing.assert_close(model(x=moved, x_mask=mask), out, rtol=0, atol=1e-5)


def test_merging_refuses_padded_sequences() -> None:
    model = build(features_model({"method": "merge", "at": [1], "r": 2}))
    x = torch.randn(2, 12, DIM)
    mask = torch.ones(2, 12, dtype=torch.bool)
    mask[0, 8:] = False
    with torch.no_grad(), pytest.raises(ValueError, match="does not take padded sequences"):
        model(x=x, x_mask=mask)
    with torch.no_grad():
        assert model(x=x).shape == (2, 3)


# ---------------------------------------------------------------------------------- validation


@pytest.mark.parametrize("position", ["rotary", "alibi", "relative_bias"])
def test_positions_in_layers_that_see_pruned_tokens_are_refused(position: str) -> None:
    spec = vit(DYNAMIC, attention={"position": position})
    with pytest.raises(SpecError) as exc:
        compile_spec(spec)
    messages = [m for p, m in exc.value.errors if p == "nodes.encoder.block.attention"]
    for layer in (1, 2, 3):  # dynamic runs before layer 1: it and every later layer see pruned
        assert any(m.startswith(f"layer {layer} sees pruned tokens") for m in messages), messages
        assert any(position in m for m in messages)
    assert not any(m.startswith("layer 0 ") for m in messages)


def test_a_position_in_one_late_layer_is_refused_at_its_override() -> None:
    spec = vit({"method": "attention_topk", "at": [1], "keep": 0.5})
    spec["nodes"]["encoder"]["overrides"] = [{"layers": [3], "attention": {"position": "alibi"}}]
    check_spec_error(spec, "nodes.encoder.overrides.0.attention", "layer 3", "alibi")


def test_positions_before_the_pruned_layers_are_fine() -> None:
    # EViT/ToMe act inside layer 1, after its attention: layers 0 and 1 see every token in place
    spec = vit({"method": "attention_topk", "at": [1], "keep": 0.5})
    spec["nodes"]["encoder"]["overrides"] = [{"layers": "0-1", "attention": {"position": "rotary"}}]
    build(spec)
    # DynamicViT runs before layer 1: layer 1 already sees pruned tokens
    spec = vit({"method": "dynamic", "at": [1], "keep": 0.5})
    spec["nodes"]["encoder"]["overrides"] = [{"layers": "0-1", "attention": {"position": "rotary"}}]
    check_spec_error(spec, "nodes.encoder.overrides.0.attention", "layer 1", "rotary")


@pytest.mark.parametrize("mask", ["causal", {"kind": "sliding_window", "window": 4}])
def test_structural_masks_after_pruning_are_refused(mask: Any) -> None:
    spec = vit(MERGE, attention={"mask": mask})
    kind = mask if isinstance(mask, str) else mask["kind"]
    check_spec_error(spec, "nodes.encoder.block.attention", "layer 1", f"{kind} mask")


def test_a_stack_after_a_token_prune_node_is_checked_from_its_first_layer() -> None:
    spec = dynamic_between_stacks(block={"attention": {"heads": HEADS, "position": "rotary"}})
    check_spec_error(spec, "nodes.enc2.block.attention", "layer 0 sees pruned tokens", "rotary")
    spec["nodes"]["enc2"]["block"]["attention"] = {"heads": HEADS, "mask": "causal"}
    check_spec_error(spec, "nodes.enc2.block.attention", "layer 0 sees pruned tokens", "causal")


def test_attention_topk_without_a_cls_token_is_refused() -> None:
    spec = vit({"method": "attention_topk", "at": [1], "keep": 0.5})
    del spec["nodes"]["cls"]
    spec["nodes"]["pos"]["input"] = "patches"
    spec["nodes"]["head"]["pool"] = "mean"
    check_spec_error(spec, "nodes.encoder.prune.method", "no cls_token is upstream")
    spec["nodes"]["encoder"].pop("prune")
    spec["nodes"]["tp"] = {
        "op": "token_prune",
        "input": "encoder",
        "method": "attention_topk",
        "keep": 0.5,
    }
    spec["nodes"]["head"]["input"] = "tp"
    check_spec_error(spec, "nodes.tp.method", "no cls_token is upstream")


@pytest.mark.parametrize(
    "prune",
    [
        {"method": "dynamic", "at": [1, 2], "keep": 0.7},
        {"method": "attention_topk", "at": [1], "keep": 0.5, "fuse": True},
        {"method": "merge", "at": [0, 1, 2], "r": 2},
    ],
    ids=["dynamic", "evit", "tome"],
)
def test_pruned_models_trace_without_graph_breaks(prune: Doc) -> None:
    """torch.compile sees one graph: static keep counts, no host synchronisation."""
    model = build(vit(prune))
    x = images(2)
    for training in (False, True):
        model.train(training)
        torch._dynamo.reset()
        explained = torch._dynamo.explain(model)(x, **{"__trace": True})
        assert explained.graph_break_count == 0, explained.break_reasons
