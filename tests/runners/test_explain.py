"""``archlab.explain``: attention, rollout and the generic (ICCV 2021) relevance, batched, equal
to the same formulas computed from an imported Hugging Face ViT's eager attention; a batch gives
what its samples give alone; the plain forward keeps its kernels."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import archlab
from archlab.compiler.model import CompiledModel
from archlab.runners.explain import METHODS, ExplainError
from archlab.specs.shrink import small_version

ROOT = Path(__file__).parents[2]


@pytest.fixture(scope="module")
def vit() -> CompiledModel:
    torch.manual_seed(0)
    return archlab.compile_spec(ROOT / "specs/vit-tiny-digits.json")


@pytest.mark.parametrize("method", METHODS)
def test_a_batch_explains_as_its_samples_alone(vit, method: str) -> None:
    x = torch.rand(5, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    batch = archlab.explain(vit, method=method, image=x)
    assert batch.scores.shape == (5, 16) and batch.grid == (4, 4) and batch.method == method
    for i in range(5):
        alone = archlab.explain(vit, method=method, image=x[i : i + 1])
        torch.testing.assert_close(batch.scores[i : i + 1], alone.scores, rtol=1e-5, atol=1e-7)
        assert int(alone.target) == int(batch.target[i])
    assert batch.upsample(8, 8).shape == (5, 8, 8)


def test_explaining_leaves_the_plain_forward_as_it_was(vit) -> None:
    x = torch.rand(2, 1, 8, 8)
    kernels = [layer.attention.kernel for layer in vit.encoder.layers]
    with torch.no_grad():
        before = vit(image=x)
    archlab.explain(vit, method="generic", image=x)
    assert [layer.attention.kernel for layer in vit.encoder.layers] == kernels
    assert all(layer.attention.record is None for layer in vit.encoder.layers)
    assert all(p.grad is None for p in vit.parameters())  # no parameter gradient was left
    with torch.no_grad():
        torch.testing.assert_close(vit(image=x), before)


transformers = pytest.importorskip("transformers")


def test_the_methods_equal_their_formulas_on_hugging_face_attention(tmp_path: Path) -> None:
    torch.manual_seed(0)
    config = transformers.ViTConfig(
        image_size=16, patch_size=4, num_channels=3, hidden_size=48, num_hidden_layers=3,
        num_attention_heads=3, intermediate_size=64, num_labels=5, attn_implementation="eager",
    )  # fmt: skip
    source = transformers.ViTForImageClassification(config).eval()
    source.save_pretrained(tmp_path / "vit")
    model = archlab.import_pretrained(tmp_path / "vit")
    x = torch.randn(3, 3, 16, 16, generator=torch.Generator().manual_seed(2))
    out = source(pixel_values=x, output_attentions=True)
    A = list(out.attentions)  # (B, H, N, N) each, N = 1 + 16
    target = out.logits.argmax(-1)
    grads = torch.autograd.grad(out.logits.gather(1, target[:, None]).sum(), A)
    eye = torch.eye(17).expand(3, 17, 17)
    rollout, generic = eye, eye
    for a, g in zip(A, grads, strict=True):
        m = a.mean(1) + eye
        rollout = (m / m.sum(-1, keepdim=True)) @ rollout
        generic = generic + (g * a).clamp(min=0).mean(1) @ generic
    expected = {
        "attention": A[-1].mean(1)[:, 0, 1:],
        "rollout": rollout[:, 0, 1:],
        "generic": generic[:, 0, 1:],
    }
    for method, want in expected.items():
        got = archlab.explain(model, method=method, image=x)
        assert torch.equal(got.target, target)
        torch.testing.assert_close(got.scores, want.detach(), rtol=1e-4, atol=1e-6)


def test_a_language_model_explains_its_next_token() -> None:
    torch.manual_seed(0)
    doc = small_version(json.loads((ROOT / "specs/gpt-tiny.json").read_text()))
    model = archlab.compile_spec(doc)
    ids = torch.randint(0, 100, (2, 7))
    e = archlab.explain(model, method="generic", ids=ids)
    assert e.scores.shape == (2, 7) and e.grid is None
    assert (e.scores[:, :] >= 0).all()  # causal: the last position sees every token
    earlier = archlab.explain(model, method="attention", ids=ids, position=3)
    assert torch.all(earlier.scores[:, 4:] == 0)  # a causal row never reads later tokens


def test_bad_requests_name_what_is_wrong(vit) -> None:
    x = torch.rand(2, 1, 8, 8)
    with pytest.raises(ExplainError, match="unknown method 'lrp'; choose one of attention, rollout, generic"):  # fmt: skip
        archlab.explain(vit, method="lrp", image=x)
    with pytest.raises(
        ExplainError, match=r"target \[10, 10\] lies outside the output's 10 classes"
    ):
        archlab.explain(vit, target=10, image=x)
    doc = small_version(json.loads((ROOT / "specs/linear-attention-decoder.json").read_text()))
    with pytest.raises(ExplainError, match="linear attention, which has no attention matrix"):
        archlab.explain(archlab.compile_spec(doc), ids=torch.ones(1, 3, dtype=torch.long))
