"""DynamicViT (``pruning.dynamic``): the training policy, gradients to the keep predictors,
dropped tokens that stay dropped, ``policy_attention`` against attention over the kept keys,
training that matches inference under the same decisions, and padding."""

from __future__ import annotations

import math

import pytest
import torch
from pruning_testing import (
    DIM,
    DYNAMIC,
    PATCHES,
    build,
    dynamic_between_stacks,
    explicit_node,
    images,
    vit,
)
from torch import Tensor, nn

from archlab.compiler.model import CompiledModel
from archlab.compiler.nn.pruning import DynamicPrune, kept_count, policy_attention


def softmax_attention(q: Tensor, k: Tensor, v: Tensor, scale: float) -> Tensor:
    return ((q @ k.transpose(-2, -1)) * scale).softmax(dim=-1) @ v


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
