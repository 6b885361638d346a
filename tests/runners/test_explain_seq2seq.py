"""An encoder-decoder's next token explained by the generic rules (Chefer et al., ICCV 2021):
equal to the rules written out per sample on a Hugging Face T5's eager attention; a batch
gives what its samples give alone."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import archlab

ROOT = Path(__file__).parents[2]


def test_a_batch_explains_as_its_samples_alone() -> None:
    torch.manual_seed(0)
    model = archlab.compile_spec(ROOT / "specs/transformer-tiny.json")
    src, tgt = torch.randint(3, 16, (3, 6)), torch.randint(3, 16, (3, 4))
    for method in ("attention", "rollout", "generic"):
        batch = archlab.explain(model, method=method, src=src, tgt=tgt)
        assert batch.scores.shape == (3, 6) and batch.decoder_scores is not None
        assert batch.decoder_scores.shape == (3, 4)
        for i in range(3):
            alone = archlab.explain(model, method=method, src=src[i : i + 1], tgt=tgt[i : i + 1])
            torch.testing.assert_close(batch.scores[i : i + 1], alone.scores, rtol=1e-5, atol=1e-7)


transformers = pytest.importorskip("transformers")


def _bar(A: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    return (g * A).clamp(min=0).mean(0)


def _normalised(R: torch.Tensor) -> torch.Tensor:
    excess = R - torch.eye(len(R))
    rows = []
    for row in excess:
        total = row.sum()
        rows.append(row / total if total != 0 else torch.zeros_like(row))
    return torch.stack(rows) + torch.eye(len(R))


def test_generic_equals_its_rules_on_hugging_face_t5(tmp_path: Path) -> None:
    torch.manual_seed(0)
    config = transformers.T5Config(
        vocab_size=40, d_model=32, d_kv=8, d_ff=48, num_layers=2, num_heads=4,
        attn_implementation="eager",
    )  # fmt: skip
    source = transformers.T5ForConditionalGeneration(config).eval()
    source.save_pretrained(tmp_path / "t5")
    model = archlab.import_pretrained(tmp_path / "t5")
    src, tgt = torch.randint(1, 40, (2, 7)), torch.randint(1, 40, (2, 5))
    ours = archlab.explain(model, method="generic", src=src, tgt=tgt)
    for b in range(2):
        out = source(input_ids=src[b : b + 1], decoder_input_ids=tgt[b : b + 1], output_attentions=True)  # fmt: skip
        logit = out.logits[0, -1, int(ours.target[b])]
        enc, dec, cross = out.encoder_attentions, out.decoder_attentions, out.cross_attentions
        grads = torch.autograd.grad(logit, [*enc, *dec, *cross])
        g_enc, g_dec, g_cross = (
            grads[: len(enc)],
            grads[len(enc) : 2 * len(enc)],
            grads[2 * len(enc) :],
        )
        R_ss = torch.eye(7)
        for A, g in zip(enc, g_enc, strict=True):
            R_ss = R_ss + _bar(A[0], g[0]) @ R_ss
        R_tt, R_ts = torch.eye(5), torch.zeros(5, 7)
        for A, g, C, gc in zip(dec, g_dec, cross, g_cross, strict=True):
            a = _bar(A[0], g[0])
            R_tt, R_ts = R_tt + a @ R_tt, R_ts + a @ R_ts
            R_ts = R_ts + _normalised(R_tt).T @ _bar(C[0], gc[0]) @ _normalised(R_ss)
        torch.testing.assert_close(ours.scores[b], R_ts[-1].detach(), rtol=1e-4, atol=1e-7)
        torch.testing.assert_close(ours.decoder_scores[b], R_tt[-1].detach(), rtol=1e-4, atol=1e-7)
