"""DynamicViT's training attention (``pruning.policy``): the SDPA form equals the reference in
values and in the gradients of q, k, v, the policy and a learned bias, over masks, padding, empty
rows, the clamp corner, dtypes and whole training steps."""

from __future__ import annotations

import functools
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from pruning_testing import DIM, DYNAMIC, build, features_model, images, vit
from torch import Tensor

from archlab.compiler.nn.pruning import policy as policy_module
from archlab.compiler.nn.pruning.policy import fast_policy_attention, policy_attention

B, H, T, E = 3, 2, 11, 8


def random_policy(seed: int = 0) -> Tensor:
    """(B, T) hard policy with dropped keys: CLS kept, row 0 keeps only the CLS."""
    gen = torch.Generator().manual_seed(seed)
    policy = (torch.rand(B, T, generator=gen) > 0.4).float()
    policy[:, 0] = 1
    policy[0, 1:] = 0
    return policy


def both(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    policy: Tensor,
    *,
    bias: Tensor | None = None,
    may_be_empty: bool = True,
    **kw: Any,
) -> list[list[Tensor | None]]:
    """[reference, fast]: each [out, dq, dk, dv, dpolicy, dbias] for a random output gradient."""
    leaves = [t.detach().clone().requires_grad_() for t in (q, k, v, policy)]
    grad_out = torch.randn(q.shape, generator=torch.Generator().manual_seed(1)).to(q.dtype)
    results: list[list[Tensor | None]] = []
    fast = functools.partial(fast_policy_attention, may_be_empty=may_be_empty)
    for fn in (policy_attention, fast):
        table = None if bias is None else bias.detach().clone().requires_grad_()
        args = [t.detach().clone().requires_grad_() for t in leaves]
        out = fn(*args, scale=0.4, bias=table, **kw)
        (out * grad_out).sum().backward()
        grads = [a.grad for a in args] + [None if table is None else table.grad]
        results.append([out.detach(), *grads])
    return results


def assert_same(results: list[list[Tensor | None]], tol: float = 1e-5) -> None:
    names = ["out", "dq", "dk", "dv", "dpolicy", "dbias"]
    for name, ref, fast in zip(names, *results, strict=True):
        if ref is None:
            assert fast is None, name
            continue
        assert fast is not None, name
        assert torch.isfinite(fast).all(), name
        scale = ref.abs().max().clamp_min(1.0)  # relative to the tensor's largest entry
        torch.testing.assert_close(fast / scale, ref / scale, rtol=tol, atol=tol, msg=name)


def qkv(dtype: torch.dtype = torch.float32, spread: float = 1.0) -> tuple[Tensor, Tensor, Tensor]:
    gen = torch.Generator().manual_seed(2)
    return tuple(  # type: ignore[return-value]
        (torch.randn(B, H, T, E, generator=gen) * spread).to(dtype) for _ in range(3)
    )


# ----------------------------------------------------------------------- the attention alone


def test_dropped_keys_values_and_gradients_equal_the_reference() -> None:
    results = both(*qkv(), random_policy())
    assert_same(results)
    dpolicy = results[1][4]
    assert dpolicy is not None
    dropped = random_policy() == 0
    assert dpolicy[dropped].abs().max() > 1e-3  # the straight-through gradient is there


def test_a_soft_policy_equals_the_reference() -> None:
    policy = torch.rand(B, T, generator=torch.Generator().manual_seed(3))
    policy[:, 2] = 0
    assert_same(both(*qkv(), policy))


def test_a_float64_reference_agrees_too() -> None:
    q, k, v = qkv()
    policy = random_policy()
    ref = both(q.double(), k.double(), v.double(), policy.double())[0]
    fast = both(q, k, v, policy)[1]
    for r, f in zip(ref, fast, strict=True):
        if r is not None and f is not None:
            torch.testing.assert_close(f, r.to(f.dtype), rtol=1e-5, atol=1e-5)


def test_padding_with_an_all_padded_batch_row() -> None:
    allowed = torch.ones(B, 1, 1, T, dtype=torch.bool)
    allowed[1, ..., 7:] = False  # padded keys
    allowed[2] = False  # nothing to see: the reference outputs zeros
    results = both(*qkv(), random_policy(), allowed=allowed)
    assert_same(results)
    out = results[1][0]
    assert out is not None and out[2].eq(0).all()


def test_causal_and_left_padding_with_a_query_row_that_sees_nothing() -> None:
    causal = torch.ones(T, T, dtype=torch.bool).tril()[None, None]
    padding = torch.ones(B, 1, 1, T, dtype=torch.bool)
    padding[1, ..., :2] = False  # row 0 of image 1 sees no key
    assert_same(both(*qkv(), random_policy(), allowed=causal & padding))
    # no padding: every row sees itself, the check for empty rows may be skipped
    assert_same(both(*qkv(), random_policy(), allowed=causal, may_be_empty=False))


@pytest.mark.parametrize("shape", [(H, T, T), (B, H, T, T), (B, 1, 1, T)])
def test_a_learned_bias_gets_the_reference_gradient(shape: tuple[int, ...]) -> None:
    bias = torch.randn(shape, generator=torch.Generator().manual_seed(4))
    padding = torch.ones(B, 1, 1, T, dtype=torch.bool)
    padding[0, ..., 9:] = False
    results = both(*qkv(), random_policy(), bias=bias, allowed=padding)
    assert_same(results)
    assert results[1][5] is not None and results[1][5].shape == shape


def test_a_small_backward_chunk_changes_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    bias = torch.randn(H, T, T)
    whole = both(*qkv(), random_policy(), bias=bias)
    monkeypatch.setattr(policy_module, "CHUNK", 1)  # one image at a time
    assert_same([whole[1], both(*qkv(), random_policy(), bias=bias)[1]])


def test_a_dropped_key_far_above_the_kept_ones_takes_the_reference_clamp() -> None:
    q, k, v = qkv()
    policy = random_policy()
    policy[:, 4] = 0
    k[:, :, 4] = q.mean(dim=2) * 40  # its scores exceed every kept one by far more than 30
    results = both(q, k, v, policy)
    assert_same(results)
    dpolicy = results[0][4]
    assert dpolicy is not None and dpolicy[:, 4].abs().max() > 1e6  # clamped, still huge


def test_large_scores_agree() -> None:
    assert_same(both(*qkv(spread=10.0), random_policy()))  # scores in the hundreds


def test_without_gradients_only_the_kernel_runs() -> None:
    q, k, v = qkv()
    policy = random_policy()
    with torch.no_grad():
        out = fast_policy_attention(q, k, v, policy, scale=0.4)
    torch.testing.assert_close(out, policy_attention(q, k, v, policy, scale=0.4), rtol=0, atol=1e-5)
    out = fast_policy_attention(q, k, v, policy, scale=0.4)  # nothing requires grad
    assert not out.requires_grad
    q.requires_grad_()
    out = fast_policy_attention(q, k, v, policy, scale=0.4)  # the policy needs no gradient
    assert out.grad_fn is not None and "PolicyGradient" not in out.grad_fn.name()


def test_bfloat16_inputs_compute_in_float32_as_the_reference_does() -> None:
    results = both(*qkv(torch.bfloat16), random_policy())
    for ref, fast in zip(*results, strict=True):
        if ref is not None and fast is not None:
            assert fast.dtype == ref.dtype
            torch.testing.assert_close(fast.float(), ref.float(), rtol=2e-2, atol=2e-2)


def test_cross_attention_lengths_are_refused() -> None:
    q, k, v = qkv()
    with pytest.raises(ValueError, match="self-attention"):
        fast_policy_attention(q, k[:, :, :5], v[:, :, :5], random_policy()[:, :5], scale=0.4)


# ----------------------------------------------------------------------- whole training steps


def train_step(spec: dict[str, Any], fast: bool, **inputs: Tensor) -> tuple[Tensor, dict]:
    model = build(spec, train=True)
    torch.manual_seed(5)  # the same Gumbel draws
    before = policy_module.USE_FAST
    policy_module.USE_FAST = fast
    try:
        logits = model(**inputs)
    finally:
        policy_module.USE_FAST = before
    labels = torch.arange(logits.shape[0]) % logits.shape[-1]
    loss = F.cross_entropy(logits, labels)
    loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return loss.detach(), grads


def assert_same_step(spec: dict[str, Any], **inputs: Tensor) -> None:
    loss_ref, grads_ref = train_step(spec, False, **inputs)
    loss, grads = train_step(spec, True, **inputs)
    torch.testing.assert_close(loss, loss_ref, rtol=1e-5, atol=0)
    assert grads.keys() == grads_ref.keys()
    assert any("predictor" in n for n in grads)
    for name, ref in grads_ref.items():
        scale = ref.abs().max().clamp_min(1e-12)
        torch.testing.assert_close(grads[name] / scale, ref / scale, rtol=0, atol=1e-5, msg=name)


@pytest.mark.parametrize("attention", [{}, {"kv_heads": 1}], ids=["mha", "gqa"])
def test_a_dynamicvit_training_step_equals_the_reference(attention: dict[str, Any]) -> None:
    assert_same_step(vit(DYNAMIC, attention=attention), image=images(4))


def test_a_padded_dynamic_training_step_equals_the_reference() -> None:
    x = torch.randn(3, 12, DIM)
    mask = torch.ones(3, 12, dtype=torch.bool)
    mask[0, 5:] = False
    mask[2, 9:] = False
    assert_same_step(
        features_model({"method": "dynamic", "at": [1], "keep": 0.5}), x=x, x_mask=mask
    )


def test_attention_dropout_takes_the_reference() -> None:
    spec = vit(DYNAMIC, attention={"dropout": 0.1})
    x = images(2)
    loss_ref, _ = train_step(spec, False, image=x)
    loss, _ = train_step(spec, True, image=x)
    torch.testing.assert_close(loss, loss_ref, rtol=0, atol=0)
