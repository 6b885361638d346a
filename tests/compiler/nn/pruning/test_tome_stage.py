"""ToMe (``pruning.tome``): bipartite merging, token sizes and source maps, proportional attention,
and padded sequences refused."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from pruning_testing import DIM, MERGE, PATCHES, build, features_model, images, vit

from archlab.compiler.nn import Stack
from archlab.compiler.nn.pruning import TokenMerge, TokenState

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


def test_merging_refuses_padded_sequences() -> None:
    model = build(features_model({"method": "merge", "at": [1], "r": 2}))
    x = torch.randn(2, 12, DIM)
    mask = torch.ones(2, 12, dtype=torch.bool)
    mask[0, 8:] = False
    with torch.no_grad(), pytest.raises(ValueError, match="does not take padded sequences"):
        model(x=x, x_mask=mask)
    with torch.no_grad():
        assert model(x=x).shape == (2, 3)
