"""Chefer's LRP relevance (CVPR 2021) through an encoder-decoder: a batch gives what its samples
give alone, the relevance reaching the source and target tokens keeps each sample's total, and
an imported Hugging Face T5 (relative position bias, final norms, rescaled tied head) is
explained batched."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
import torch

import archlab
from archlab.compiler.model import CompiledModel
from archlab.runners import explain_lrp_seq2seq as lrp_seq2seq
from archlab.runners.explain import ExplainError

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


def test_chefer_refuses_what_its_rules_do_not_cover() -> None:
    doc = copy.deepcopy(TINY)
    doc["nodes"]["decoder"]["block"]["mlp"]["activation"] = "swiglu"
    model = archlab.compile_spec(doc)
    src, tgt = _batch()
    with pytest.raises(ExplainError, match="`decoder`: layer 0 has a gated MLP"):
        archlab.explain(model, method="chefer", src=src, tgt=tgt)


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
