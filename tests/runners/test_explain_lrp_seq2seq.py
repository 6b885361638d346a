"""Chefer's LRP relevance (CVPR 2021) through an encoder-decoder: a batch gives what its samples
give alone, the relevance reaching the source and target tokens keeps each sample's total, and
on an imported Hugging Face T5 (relative position bias, final norms, rescaled tied head) it
equals the rules written out per sample and per head on T5's own modules."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
import torch
from explain_testing import split, z_plus

import archlab
from archlab.compiler.model import CompiledModel
from archlab.runners import explain_lrp_seq2seq as lrp_seq2seq

ROOT = Path(__file__).parents[2]
TINY = json.loads((ROOT / "specs/transformer-tiny.json").read_text())


def _variant(pre_norm: bool) -> dict[str, Any]:
    """transformer-tiny, or a pre-norm variant without biases, with grouped key-value heads and
    layer scales (the cross-attention's grouped rule and a scaled branch)."""
    doc = copy.deepcopy(TINY)
    if pre_norm:
        for stack in ("encoder", "decoder"):
            block = doc["nodes"][stack]["block"]
            block["norm"]["placement"] = "pre"
            block["mlp"]["bias"] = False
            block["attention"]["kv_heads"] = 2
            block["layer_scale"] = 0.5
    return doc


def _batch() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    src, tgt = torch.randint(3, 16, (3, 6), generator=g), torch.randint(3, 16, (3, 4), generator=g)
    src[1, 4:] = 0  # padding: the encoder's and the cross-attention's masked keys
    return src, tgt


@pytest.mark.parametrize("pre_norm", [False, True])
def test_chefer_explains_a_batch_as_its_samples_alone(pre_norm: bool) -> None:
    torch.manual_seed(0)
    model = archlab.compile_spec(_variant(pre_norm))
    src, tgt = _batch()
    for position in (-1, 1):
        batch = archlab.explain(model, method="chefer", position=position, src=src, tgt=tgt)
        assert batch.scores.shape == (3, 6) and batch.decoder_scores is not None
        assert batch.decoder_scores.shape == (3, 4)
        assert batch.scores.abs().sum() > 0 and torch.isfinite(batch.scores).all()
        assert (batch.scores[1, 4:] == 0).all()  # padded source tokens get nothing
        for i in range(3):
            one = {"src": src[i : i + 1], "tgt": tgt[i : i + 1]}
            alone = archlab.explain(model, method="chefer", position=position, **one)
            assert alone.decoder_scores is not None
            torch.testing.assert_close(batch.scores[i : i + 1], alone.scores, rtol=1e-5, atol=1e-7)
            torch.testing.assert_close(
                batch.decoder_scores[i : i + 1], alone.decoder_scores, rtol=1e-5, atol=1e-7
            )


def _lrp(model: CompiledModel, inputs: dict[str, torch.Tensor]) -> lrp_seq2seq.Relevance:
    """The LRP relevance of the next token at the last position, by the module's steps."""
    model.eval()
    encoder, decoder = list(model.encoder.layers), list(model.decoder.layers)
    head = model.lm_head
    attentions = [b.attention for b in encoder + decoder] + [b.cross_attention for b in decoder]
    for attention in attentions:
        attention.record = []
    try:
        with lrp_seq2seq.taping(encoder, decoder, head) as tapes:
            logits = model(**inputs)[:, -1]
            chosen = logits.argmax(dim=-1)
            records = [a.record[0] for a in attentions]
            picked = logits.gather(1, chosen[:, None]).sum()
            grads = torch.autograd.grad(picked, [r[0] for r in records])
    finally:
        for attention in attentions:
            attention.record = None
    with torch.no_grad():
        return lrp_seq2seq.relevance(encoder, decoder, head, tapes, records, grads, chosen, -1)


@pytest.mark.parametrize("pre_norm", [False, True])
def test_the_source_and_target_tokens_keep_each_samples_total_relevance(pre_norm: bool) -> None:
    torch.manual_seed(0)
    model = archlab.compile_spec(_variant(pre_norm))
    src, tgt = _batch()
    found = _lrp(model, {"src": src, "tgt": tgt})
    source, target = found.source.sum(dim=(1, 2)), found.target.sum(dim=(1, 2))
    torch.testing.assert_close(source + target, torch.ones(3), rtol=1e-4, atol=1e-4)
    assert (source > 0).all() and (target > 0).all()  # both sides get their share
    assert (found.source[1, 4:] == 0).all()  # nothing reaches padded source tokens
    assert [m.shape for m in found.cross] == [(3, 4, 6)] * 2
    assert [m.shape for m in found.encoder] == [(3, 6, 6)] * 2


def test_a_gated_decoder_keeps_each_samples_total_relevance() -> None:
    """A SwiGLU MLP (gated T5 variants, llama-style decoders): its product gives value and gate
    half each, and the total still reaches the tokens."""
    doc = _variant(True)
    doc["nodes"]["decoder"]["block"]["mlp"]["activation"] = "swiglu"
    torch.manual_seed(0)
    model = archlab.compile_spec(doc)
    src, tgt = _batch()
    found = _lrp(model, {"src": src, "tgt": tgt})
    total = found.source.sum(dim=(1, 2)) + found.target.sum(dim=(1, 2))
    torch.testing.assert_close(total, torch.ones(3), rtol=1e-4, atol=1e-4)


transformers = pytest.importorskip("transformers")


def test_chefer_explains_a_hugging_face_t5_batched(tmp_path: Path) -> None:
    torch.manual_seed(0)
    config = transformers.T5Config(
        vocab_size=40, d_model=32, d_kv=8, d_ff=48, num_layers=2, num_heads=4,
        feed_forward_proj="relu", attn_implementation="eager",
    )  # fmt: skip
    transformers.T5ForConditionalGeneration(config).eval().save_pretrained(tmp_path / "t5")
    model = archlab.import_pretrained(tmp_path / "t5")
    src, tgt = torch.randint(1, 40, (3, 7)), torch.randint(1, 40, (3, 5))
    batch = archlab.explain(model, method="chefer", src=src, tgt=tgt)
    assert batch.scores.shape == (3, 7) and batch.decoder_scores is not None
    assert batch.decoder_scores.shape == (3, 5) and batch.scores.abs().sum() > 0
    for i in range(3):
        alone = archlab.explain(model, method="chefer", src=src[i : i + 1], tgt=tgt[i : i + 1])
        torch.testing.assert_close(batch.scores[i : i + 1], alone.scores, rtol=1e-5, atol=1e-7)
    found = _lrp(model, {"src": src, "tgt": tgt})  # no biases in T5: the total is kept
    total = found.source.sum(dim=(1, 2)) + found.target.sum(dim=(1, 2))
    torch.testing.assert_close(total, torch.ones(3), rtol=1e-4, atol=1e-4)


def _heads(x: torch.Tensor, H: int) -> torch.Tensor:
    return x.view(len(x), H, -1).transpose(0, 1)  # (H, N, E)


def _attention(
    attn: Any, h: torch.Tensor, memory: torch.Tensor, probs: torch.Tensor, grad: torch.Tensor,
    R_out: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:  # fmt: skip
    """A T5Attention's rules per head, queries from ``h``, keys and values from ``memory``: the
    relevance of ``h`` and ``memory`` from that of the output, and the map E_h[(grad A R_A)^+]."""
    H = probs.shape[0]
    q, k, v = _heads(attn.q(h), H), _heads(attn.k(memory), H), _heads(attn.v(memory), H)
    ctx = (probs @ v).transpose(0, 1).reshape(len(h), -1)
    r_ctx = _heads(z_plus(ctx, attn.o.weight, R_out), H)
    r_q, r_k, r_v, cams = [], [], [], []
    for i in range(H):
        pv = probs[i] @ v[i]
        S = r_ctx[i] / (pv + 1e-9) * (pv != 0)
        r_a = probs[i] * (S @ v[i].T) / 2
        r_v.append(v[i] * (probs[i].T @ S) / 2)
        qk = q[i] @ k[i].T
        S2 = r_a / (qk + 1e-9) * (qk != 0)
        r_q.append(q[i] * (S2 @ k[i]) / 2)
        r_k.append(k[i] * (S2.T @ q[i]) / 2)
        cams.append((grad[i] * r_a).clamp(min=0))
    r_h = z_plus(h, attn.q.weight, torch.cat(r_q, -1))
    r_memory = z_plus(memory, attn.k.weight, torch.cat(r_k, -1))
    r_memory = r_memory + z_plus(memory, attn.v.weight, torch.cat(r_v, -1))
    return r_h, r_memory, torch.stack(cams).mean(0)


def _feed_forward(ff: Any, y: torch.Tensor, R: torch.Tensor) -> torch.Tensor:
    """From the relevance of y + wo(relu(wi(norm(y)))) to y's."""
    h = ff.layer_norm(y)
    inner = ff.DenseReluDense.act(ff.DenseReluDense.wi(h))
    m = ff.DenseReluDense.wo(inner)
    r_y, r_m = split(y, m, R)
    r_inner = z_plus(inner, ff.DenseReluDense.wo.weight, r_m)
    return r_y + z_plus(h, ff.DenseReluDense.wi.weight, r_inner)


def _self_attention(
    sa: Any, x: torch.Tensor, probs: torch.Tensor, grad: torch.Tensor, R: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(x + o(A v) of norm(x)) -> (R_x, the map, the output)."""
    h = sa.layer_norm(x)
    v = _heads(sa.SelfAttention.v(h), probs.shape[0])
    y = x + sa.SelfAttention.o((probs @ v).transpose(0, 1).reshape(len(x), -1))
    r_x, r_a = split(x, y - x, R)
    r_h, r_h2, cam = _attention(sa.SelfAttention, h, h, probs, grad, r_a)
    return r_x + r_h + r_h2, cam, y


def _normalised(R: torch.Tensor) -> torch.Tensor:
    excess = R - torch.eye(len(R))
    rows = [row / row.sum() if row.sum() != 0 else torch.zeros_like(row) for row in excess]
    return torch.stack(rows) + torch.eye(len(R))


def _t5_one_sample(
    source: Any, src: torch.Tensor, tgt: torch.Tensor, target: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Chefer's relevance of one sample's next token (source, target tokens), from the Hugging
    Face T5's own modules and attention, the rules written out per head: independent."""
    out = source(input_ids=src[None], decoder_input_ids=tgt[None], output_attentions=True, output_hidden_states=True)  # fmt: skip
    enc, dec, cross = out.encoder_attentions, out.decoder_attentions, out.cross_attentions
    grads = [g[0] for g in torch.autograd.grad(out.logits[0, -1, target], [*enc, *dec, *cross])]
    L = len(enc)
    enc_in = [h[0].detach() for h in out.encoder_hidden_states]
    dec_in = [h[0].detach() for h in out.decoder_hidden_states]
    memory = out.encoder_last_hidden_state[0].detach()
    one_hot = torch.zeros(source.config.vocab_size)
    one_hot[target] = 1.0
    with torch.no_grad():
        R = torch.zeros_like(dec_in[0])
        x = dec_in[-1][-1:] * source.config.d_model**-0.5
        R[-1] = z_plus(x, source.lm_head.weight, one_hot[None])[0]
        r_memory = torch.zeros_like(memory)
        dec_maps, cross_maps, enc_maps = [], [], []
        for i in reversed(range(L)):
            sa, ca, ff = source.decoder.block[i].layer
            _, _, y1 = _self_attention(sa, dec_in[i], dec[i][0], grads[L + i], R)
            h = ca.layer_norm(y1)
            v = _heads(ca.EncDecAttention.v(memory), cross[i].shape[1])
            c = ca.EncDecAttention.o((cross[i][0] @ v).transpose(0, 1).reshape(len(h), -1))
            R = _feed_forward(ff, y1 + c, R)
            r_y1, r_c = split(y1, c, R)
            r_h, r_m, cam = _attention(ca.EncDecAttention, h, memory, cross[i][0], grads[2 * L + i], r_c)  # fmt: skip
            r_memory, cross_maps = r_memory + r_m, [cam, *cross_maps]
            R, cam, _ = _self_attention(sa, dec_in[i], dec[i][0], grads[L + i], r_y1 + r_h)
            dec_maps.insert(0, cam)
        R = r_memory
        for i in reversed(range(L)):
            sa, ff = source.encoder.block[i].layer
            _, _, y = _self_attention(sa, enc_in[i], enc[i][0], grads[i], R)
            R, cam, _ = _self_attention(sa, enc_in[i], enc[i][0], grads[i], _feed_forward(ff, y, R))
            enc_maps.insert(0, cam)
    S, T = len(memory), len(dec_in[0])
    R_ss, R_tt, R_ts = torch.eye(S), torch.eye(T), torch.zeros(T, S)
    for m in enc_maps:
        R_ss = R_ss + m @ R_ss
    for a, c in zip(dec_maps, cross_maps, strict=True):
        R_tt, R_ts = R_tt + a @ R_tt, R_ts + a @ R_ts
        R_ts = R_ts + _normalised(R_tt).T @ c @ _normalised(R_ss)
    return R_ts[-1], R_tt[-1]


def test_chefer_equals_its_rules_computed_per_sample_on_hugging_face_t5(tmp_path: Path) -> None:
    torch.manual_seed(0)
    config = transformers.T5Config(
        vocab_size=40, d_model=32, d_kv=8, d_ff=48, num_layers=2, num_heads=4,
        feed_forward_proj="relu", attn_implementation="eager",
    )  # fmt: skip
    source = transformers.T5ForConditionalGeneration(config).eval()
    with torch.no_grad():  # non-trivial norms
        for name, p in source.named_parameters():
            if "layer_norm" in name:
                p.add_(0.1 * torch.randn_like(p))
    source.save_pretrained(tmp_path / "t5")
    model = archlab.import_pretrained(tmp_path / "t5")
    src, tgt = torch.randint(1, 40, (2, 7)), torch.randint(1, 40, (2, 5))
    ours = archlab.explain(model, method="chefer", src=src, tgt=tgt)
    assert ours.decoder_scores is not None
    for b in range(2):
        scores, decoder_scores = _t5_one_sample(source, src[b], tgt[b], int(ours.target[b]))
        torch.testing.assert_close(ours.scores[b], scores, rtol=1e-4, atol=1e-7)
        torch.testing.assert_close(ours.decoder_scores[b], decoder_scores, rtol=1e-4, atol=1e-7)
