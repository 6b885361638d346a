"""EViT (``pruning.evit``): the top-k by CLS attention and the fused token of the dropped ones."""

from __future__ import annotations

from typing import Any

import torch
from pruning_testing import DIM, HEADS, PATCHES, build, images, vit

from archlab.compiler.nn.pruning import AttentionTopK

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
