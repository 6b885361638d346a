"""``archlab.explain``: attention, rollout and the generic (ICCV 2021) relevance, batched, equal
to the same formulas computed from an imported Hugging Face ViT's eager attention; a batch gives
what its samples give alone; the plain forward keeps its kernels."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from explain_testing import split, z_plus

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


def _hf_vit() -> Any:
    """A small Hugging Face ViT classifier with eager attention (its matrices are returned)."""
    config = transformers.ViTConfig(
        image_size=16, patch_size=4, num_channels=3, hidden_size=48, num_hidden_layers=3,
        num_attention_heads=3, intermediate_size=64, num_labels=5, attn_implementation="eager",
    )  # fmt: skip
    return transformers.ViTForImageClassification(config).eval()


def test_the_methods_equal_their_formulas_on_hugging_face_attention(tmp_path: Path) -> None:
    torch.manual_seed(0)
    source = _hf_vit()
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
    doc = json.loads((ROOT / "specs/vit-tiny-digits.json").read_text())
    doc["nodes"]["head"]["pool"] = "max"
    with pytest.raises(ExplainError, match="chefer has no rule for max pooling"):
        archlab.explain(archlab.compile_spec(doc), "chefer", image=x)


@pytest.mark.parametrize("causal", [True, False])
def test_linear_attention_is_explained_through_its_materialised_matrix(causal: bool) -> None:
    from archlab.compiler.nn.linear_attention import LinearAttention

    torch.manual_seed(0)
    layer = LinearAttention(32, 4, causal=causal).eval()
    x = torch.randn(2, 7, 32)
    padding = torch.ones(2, 7, dtype=torch.bool)
    padding[1, 5:] = False
    plain = layer(x, None if causal else padding)
    layer.record = []
    try:
        written_out = layer(x, None if causal else padding)
    finally:
        weights = layer.record[0][0]
        layer.record = None
    torch.testing.assert_close(written_out, plain, rtol=1e-5, atol=1e-6)  # A V = the sums
    torch.testing.assert_close(weights.sum(-1), torch.ones(2, 4, 7), rtol=1e-5, atol=1e-5)
    if causal:
        assert torch.all(weights.triu(1) == 0)
    else:
        assert torch.all(weights[1, :, :, 5:] == 0)
    doc = small_version(json.loads((ROOT / "specs/linear-attention-decoder.json").read_text()))
    model = archlab.compile_spec(doc)
    ids = torch.randint(0, 100, (3, 8))
    for method in ("attention", "rollout", "generic"):
        batch = archlab.explain(model, method, ids=ids)
        alone = archlab.explain(model, method, ids=ids[1:2])
        torch.testing.assert_close(batch.scores[1:2], alone.scores, rtol=1e-5, atol=1e-7)


def _chefer_one_sample(source: Any, x: torch.Tensor, target: int) -> torch.Tensor:
    """Chefer's relevance for one image, from the Hugging Face ViT's own modules and attention,
    with the rules written out per head and per token: an independent computation."""
    out = source(pixel_values=x[None], output_attentions=True, output_hidden_states=True)
    A = list(out.attentions)
    grads = torch.autograd.grad(out.logits[0, target], A)
    hidden = [h[0].detach() for h in out.hidden_states]
    layers = source.vit.layers
    pooled = source.vit.layernorm(out.hidden_states[-1])[0, 0].detach()
    one_hot = torch.zeros(source.config.num_labels)
    one_hot[target] = 1.0
    R = torch.zeros_like(hidden[-1])
    R[0] = z_plus(pooled[None], source.classifier.weight.detach(), one_hot[None])[0]
    H = source.config.num_attention_heads
    maps = []
    with torch.no_grad():
        for i in reversed(range(len(layers))):
            layer, x_in, z = layers[i], hidden[i], hidden[i + 1]
            attn = layer.attention
            h1 = layer.layernorm_before(x_in)
            q, k, v = (m(h1).view(len(h1), H, -1).transpose(0, 1) for m in (attn.q_proj, attn.k_proj, attn.v_proj))  # fmt: skip
            probs = A[i][0].detach()
            ctx = (probs @ v).transpose(0, 1).reshape(len(h1), -1)
            y = x_in + attn.o_proj(ctx)
            inner = layer.mlp.activation_fn(layer.mlp.fc1(layer.layernorm_after(y)))
            r_y, r_m = split(y, z - y, R)
            r_inner = z_plus(inner, layer.mlp.fc2.weight, r_m)
            r_y = r_y + z_plus(layer.layernorm_after(y), layer.mlp.fc1.weight, r_inner)
            r_x, r_o = split(x_in, y - x_in, r_y)
            r_ctx = z_plus(ctx, attn.o_proj.weight, r_o).view(len(h1), H, -1).transpose(0, 1)
            r_q, r_k, r_v, cams = [], [], [], []
            for h in range(H):
                S = r_ctx[h] / (probs[h] @ v[h] + 1e-9) * ((probs[h] @ v[h]) != 0)
                r_a = probs[h] * (S @ v[h].T) / 2
                r_v.append(v[h] * (probs[h].T @ S) / 2)
                qk = q[h] @ k[h].T
                S2 = r_a / (qk + 1e-9) * (qk != 0)
                r_q.append(q[h] * (S2 @ k[h]) / 2)
                r_k.append(k[h] * (S2.T @ q[h]) / 2)
                cams.append((grads[i][0, h] * r_a).clamp(min=0))
            maps.insert(0, torch.stack(cams).mean(0))
            for parts, module in ((r_q, attn.q_proj), (r_k, attn.k_proj), (r_v, attn.v_proj)):
                r_x = r_x + z_plus(h1, module.weight, torch.cat(parts, dim=-1))
            R = r_x
    relevance = torch.eye(len(hidden[0]))
    for m in maps:
        relevance = relevance + m @ relevance
    return relevance[0, 1:]


def test_chefer_equals_its_rules_computed_per_sample_on_hugging_face_modules(tmp_path) -> None:
    torch.manual_seed(0)
    source = _hf_vit()
    with torch.no_grad():  # non-trivial norms and biases
        for name, p in source.named_parameters():
            if "layernorm" in name or name.endswith("bias"):
                p.add_(0.1 * torch.randn_like(p))
    source.save_pretrained(tmp_path / "vit")
    model = archlab.import_pretrained(tmp_path / "vit")
    x = torch.randn(3, 3, 16, 16, generator=torch.Generator().manual_seed(2))
    ours = archlab.explain(model, method="chefer", image=x)
    for b in range(3):
        expected = _chefer_one_sample(source, x[b], int(ours.target[b]))
        torch.testing.assert_close(ours.scores[b], expected, rtol=1e-4, atol=1e-7)


def test_the_lrp_rules_keep_each_samples_total_relevance() -> None:
    from archlab.runners.explain_lrp import linear_relevance, product_relevance, sum_relevance

    g = torch.Generator().manual_seed(0)
    x, w = torch.rand(2, 5, 8, generator=g), torch.rand(6, 8, generator=g)  # positive: Z > 0
    R = torch.rand(2, 5, 6, generator=g)
    torch.testing.assert_close(linear_relevance(x, w, R).sum((1, 2)), R.sum((1, 2)))
    a, b = torch.randn(2, 5, 8, generator=g), torch.randn(2, 5, 8, generator=g)
    ra, rb = sum_relevance(a, b, R[..., :1].expand(2, 5, 8))
    torch.testing.assert_close((ra + rb).sum((1, 2)), R[..., :1].expand(2, 5, 8).sum((1, 2)))
    A, V = torch.rand(2, 3, 5, 5, generator=g), torch.rand(2, 3, 5, 4, generator=g)
    RA, RV = product_relevance(A, V, torch.ones(2, 3, 5, 4))
    torch.testing.assert_close(RA.sum((2, 3)), torch.full((2, 3), 10.0))  # half of 20 each
    torch.testing.assert_close(RV.sum((2, 3)), torch.full((2, 3), 10.0))


@pytest.mark.parametrize("name", ["bert-base", "gpt2-small"])
def test_chefer_explains_mean_pooling_and_a_language_models_next_token(name: str) -> None:
    torch.manual_seed(0)
    model = archlab.compile_spec(
        small_version(json.loads((ROOT / f"specs/{name}.json").read_text()))
    )
    inputs = model.example_inputs(batch=3, length=9)
    batch = archlab.explain(model, method="chefer", **inputs)
    assert batch.scores.shape == (3, 9)
    for i in range(3):
        alone = archlab.explain(model, method="chefer", **{k: v[i : i + 1] for k, v in inputs.items()})  # fmt: skip
        torch.testing.assert_close(batch.scores[i : i + 1], alone.scores, rtol=1e-5, atol=1e-7)


def test_the_heads_relevance_is_the_one_hot_targets_total() -> None:
    from archlab.runners.explain_lrp import head_relevance, taping

    torch.manual_seed(0)
    for name in ("vit-tiny-digits", "bert-base"):
        model = archlab.compile_spec(small_version(json.loads((ROOT / f"specs/{name}.json").read_text())))  # fmt: skip
        head = getattr(model, model.spec.outputs[0])
        blocks = list(next(m for m in model.modules() if hasattr(m, "layers")).layers)
        with taping(blocks, head) as tape, torch.no_grad():
            logits = model(**model.example_inputs(batch=4)).clamp(min=-50)
        one_hot = torch.nn.functional.one_hot(logits.argmax(-1), logits.shape[-1]).float()
        R = head_relevance(head, tape, one_hot, -1)
        torch.testing.assert_close(R.sum((1, 2)), torch.ones(4), rtol=1e-4, atol=1e-4)


def _pruned(name: str) -> CompiledModel:
    torch.manual_seed(0)
    if name == "tome":
        doc = small_version(json.loads((ROOT / "specs/deit-small-16.json").read_text()))
        doc["nodes"]["encoder"]["prune"] = {"method": "merge", "at": [0, 1], "r": 2}
    else:
        doc = small_version(json.loads((ROOT / f"specs/{name}.json").read_text()))
    return archlab.compile_spec(doc)


@pytest.mark.parametrize("name", ["dynamicvit-tiny-digits", "evit-deit-s", "tome"])
@pytest.mark.parametrize("method", ["attention", "rollout", "generic"])
def test_pruned_models_explain_over_the_full_patch_grid(name: str, method: str) -> None:
    model = _pruned(name)
    inputs = model.example_inputs(batch=3)
    batch = archlab.explain(model, method=method, **inputs)
    assert batch.scores.shape == (3, 16) and batch.grid == (4, 4)
    for i in range(3):
        alone = archlab.explain(model, method=method, **{k: v[i : i + 1] for k, v in inputs.items()})  # fmt: skip
        torch.testing.assert_close(batch.scores[i : i + 1], alone.scores, rtol=1e-5, atol=1e-7)


def test_a_dropped_patch_gets_nothing_from_the_last_attention() -> None:
    model = _pruned("dynamicvit-tiny-digits").eval()
    inputs = model.example_inputs(batch=4)
    with torch.no_grad():
        _, trace = model.trace_tokens(**inputs)
    kept = trace.kept(trace.stages[-1])  # (B, 16): patches present after the last stage
    assert not kept.all()
    scores = archlab.explain(model, method="attention", **inputs).scores
    assert torch.all(scores[~kept] == 0) and torch.all(scores[kept] > 0)


@pytest.mark.parametrize("method", ["rollout", "generic", "chefer"])
def test_start_layer_leaves_the_blocks_below_out(vit, method: str) -> None:
    x = torch.rand(2, 1, 8, 8, generator=torch.Generator().manual_seed(3))
    all_blocks = archlab.explain(vit, method=method, image=x)
    last_only = archlab.explain(
        vit, method=method, image=x, start_layer=len(vit.encoder.layers) - 1
    )
    assert not torch.allclose(all_blocks.scores, last_only.scores)
    if method == "generic":  # from the last block alone: I + its map, read on the CLS row
        probabilities = []
        attention = vit.encoder.layers[-1].attention
        attention.record = probabilities
        try:
            with torch.enable_grad():
                logits = vit(image=x)
                grad = torch.autograd.grad(logits.gather(1, last_only.target[:, None]).sum(), probabilities[0][0])[0]  # fmt: skip
        finally:
            attention.record = None
        expected = (grad * probabilities[0][0]).clamp(min=0).mean(1)[:, 0, 1:]
        torch.testing.assert_close(last_only.scores, expected.detach(), rtol=1e-5, atol=1e-7)
    with pytest.raises(ExplainError, match=r"start_layer 9 is not a block of `encoder`"):
        archlab.explain(vit, method=method, image=x, start_layer=9)
