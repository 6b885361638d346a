"""Softmax attention: every kernel against the plain formula, and the properties masks promise."""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F
from nn_testing import (
    CPU_KERNELS,
    MASKS,
    alibi_reference,
    dependency,
    kernel,
    plain_attention,
    rule_matrix,
    runs,
)
from torch import Tensor, nn
from torch.nn.attention import flex_attention as flex_module

from archlab.compiler.nn import (
    AlibiPosition,
    Attention,
    AttentionPosition,
    MaskPattern,
    NoPosition,
    RelativeBiasPosition,
    RotaryEmbedding,
    RotaryPosition,
    choose_kernel,
)

POSITIONS = (None, "rotary", "alibi", "relative_bias")
FAST_KERNELS = ("sdpa", "sdpa_mask", "flex")
D, H, T = 32, 4, 12


def cases(kernels: tuple[str, ...], positions: tuple[str | None, ...] = (None,)) -> list[object]:
    """(kernel, mask, position) for every combination the kernel can run."""
    return [
        pytest.param(name, mask, position, id=f"{name}-{mask_id}-{position}")
        for name in kernels
        for mask_id, mask in MASKS.items()
        for position in positions
        if runs(name, mask, position)
    ]


@pytest.fixture
def fast_flex(monkeypatch: pytest.MonkeyPatch) -> None:
    """Run eager FlexAttention's math directly instead of compiling it anew for each module.

    Same forward numerics, a tenth of the time; the tests without this fixture cover the
    default eager path.
    """
    monkeypatch.setattr(flex_module, "_FLEX_ATTENTION_DISABLE_COMPILE_DEBUG", True, raising=False)


def make(
    kernel_name: str,
    mask: MaskPattern = MASKS["none"],
    position: str | None = None,
    **options: object,
) -> Attention:
    head_dim = D // H
    parts: dict[str | None, Callable[[], AttentionPosition]] = {
        None: NoPosition,
        "rotary": lambda: RotaryPosition(RotaryEmbedding(head_dim, 64, fraction=0.5)),
        "alibi": lambda: AlibiPosition(H),
        "relative_bias": RelativeBiasPosition,
    }
    attention = Attention(
        D,
        H,
        mask=mask,
        position=parts[position](),
        max_len=64,
        kernel=kernel(kernel_name),
        **options,  # type: ignore[arg-type]
    )
    return attention.double().eval()


def twin(attention: Attention, kernel_name: str, position: str | None = None) -> Attention:
    """The same attention, weights included, on another kernel (and without dropout)."""
    other = make(kernel_name, attention.mask, position, kv_heads=attention.kv_heads)
    other.load_state_dict(attention.state_dict())
    return other


def inputs(batch: int = 2, length: int = T) -> tuple[Tensor, Tensor]:
    """Random tokens and a padding mask: the first sample left-padded by 3, the second by none."""
    x = torch.randn(batch, length, D, dtype=torch.float64)
    padding = torch.ones(batch, length, dtype=torch.bool)
    padding[0, :3] = False
    return x, padding


def position_bias(position: str | None, length: int = T) -> Tensor | None:
    """The bias a stack would hand in (relative_bias), or None."""
    if position == "relative_bias":
        return torch.randn(H, length, length, dtype=torch.float64)
    return None


@pytest.mark.parametrize("position", POSITIONS)
@pytest.mark.parametrize("mask", MASKS.values(), ids=MASKS.keys())
def test_reference_kernel_is_the_plain_formula(mask: MaskPattern, position: str | None) -> None:
    attention = make("reference", mask, position, kv_heads=2)
    x, padding = inputs()
    bias = position_bias(position)
    expected_bias = alibi_reference(H, T, T) if position == "alibi" else bias
    rotated = 4 if position == "rotary" else 0  # fraction 0.5 of head_dim 8
    for key_padding in (None, padding):
        expected = plain_attention(
            attention, x, key_padding=key_padding, bias=expected_bias, rotated=rotated
        )
        actual = attention(x, key_padding, bias=bias)
        torch.testing.assert_close(actual, expected)


@pytest.mark.parametrize(("kernel_name", "mask", "position"), cases(FAST_KERNELS, POSITIONS))
@pytest.mark.usefixtures("fast_flex")
@torch.no_grad()
def test_kernels_match_reference(kernel_name: str, mask: MaskPattern, position: str | None) -> None:
    reference = make("reference", mask, position, kv_heads=2)
    fast = twin(reference, kernel_name, position)
    x, padding = inputs()
    bias = position_bias(position)
    for key_padding in (None, padding):
        torch.testing.assert_close(
            fast(x, key_padding, bias=bias), reference(x, key_padding, bias=bias)
        )


@pytest.mark.parametrize("kernel_name", ["reference", "sdpa", "sdpa_mask"])
@torch.no_grad()
def test_scale_equals_queries_rescaled(kernel_name: str) -> None:
    """`scale` s scores like the default 1/sqrt(E) with queries multiplied by s * sqrt(E)."""
    scaled = make(kernel_name, scale=1.0)
    default = twin(scaled, kernel_name)
    default.qkv.weight[:D] *= math.sqrt(D // H)
    default.qkv.bias[:D] *= math.sqrt(D // H)
    x, padding = inputs()
    for key_padding in (None, padding):
        torch.testing.assert_close(scaled(x, key_padding), default(x, key_padding))


@pytest.mark.parametrize("kernel_name", CPU_KERNELS)
@pytest.mark.parametrize("padded", [False, True])
@torch.no_grad()
def test_matches_nn_multihead_attention(kernel_name: str, padded: bool) -> None:
    attention = make(kernel_name)
    torch_mha = nn.MultiheadAttention(D, H, batch_first=True, dtype=torch.float64).eval()
    torch_mha.in_proj_weight.copy_(attention.qkv.weight)
    torch_mha.in_proj_bias.copy_(attention.qkv.bias)
    torch_mha.out_proj.weight.copy_(attention.out.weight)
    torch_mha.out_proj.bias.copy_(attention.out.bias)
    x, padding = inputs()
    key_padding = padding if padded else None
    expected, _ = torch_mha(
        x, x, x, key_padding_mask=None if key_padding is None else ~key_padding, need_weights=False
    )
    torch.testing.assert_close(attention(x, key_padding), expected)


@pytest.mark.parametrize("kv_heads", [2, 1], ids=["gqa", "mqa"])
@pytest.mark.parametrize("kernel_name", CPU_KERNELS)
@torch.no_grad()
def test_grouped_query_equals_mha_with_repeated_kv_heads(kernel_name: str, kv_heads: int) -> None:
    mask = MASKS["causal"]
    grouped = make(kernel_name, mask, "rotary", kv_heads=kv_heads)
    full = make(kernel_name, mask, "rotary")
    E, groups = D // H, H // kv_heads
    q, k, v = grouped.qkv.weight.split([H * E, kv_heads * E, kv_heads * E])
    qb, kb, vb = grouped.qkv.bias.split([H * E, kv_heads * E, kv_heads * E])

    def repeat(t: Tensor) -> Tensor:  # (K*E, ...) -> (H*E, ...): head g serves heads g*groups..
        return t.unflatten(0, (kv_heads, E)).repeat_interleave(groups, dim=0).flatten(0, 1)

    full.qkv.weight.copy_(torch.cat([q, repeat(k), repeat(v)]))
    full.qkv.bias.copy_(torch.cat([qb, repeat(kb), repeat(vb)]))
    full.out.load_state_dict(grouped.out.state_dict())
    x, padding = inputs()
    for key_padding in (None, padding):
        torch.testing.assert_close(grouped(x, key_padding), full(x, key_padding))


@pytest.mark.parametrize("kernel_name", CPU_KERNELS)
@torch.no_grad()
def test_cross_attention_to_a_wider_padded_memory(kernel_name: str) -> None:
    attention = make(kernel_name, kv_dim=48, kv_heads=2)
    assert {"q.weight", "kv.weight", "out.weight"} <= set(attention.state_dict())
    x, _ = inputs()
    memory = torch.randn(2, 7, 48, dtype=torch.float64)
    memory_padding = torch.ones(2, 7, dtype=torch.bool)
    memory_padding[1, 5:] = False
    actual = attention(x, memory_padding, memory)
    expected = plain_attention(attention, x, key_padding=memory_padding, memory=memory)
    torch.testing.assert_close(actual, expected)
    noisy = memory.clone()
    noisy[1, 5:] = torch.randn(2, 48, dtype=torch.float64)
    torch.testing.assert_close(attention(x, memory_padding, noisy), actual)


@pytest.mark.parametrize(("kernel_name", "mask", "position"), cases(CPU_KERNELS))
@pytest.mark.usefixtures("fast_flex")
@torch.no_grad()
def test_each_query_depends_exactly_on_the_keys_its_mask_allows(
    kernel_name: str, mask: MaskPattern, position: None
) -> None:
    attention = make(kernel_name, mask)
    x = torch.randn(1, 10, D, dtype=torch.float64)
    seen = dependency(lambda t: attention(t), x)
    assert torch.equal(seen, rule_matrix(mask, 10, 10))
    if mask.kind == "prefix":  # bidirectional inside the prefix
        assert seen[:4, :4].all()


@pytest.mark.parametrize(("kernel_name", "mask", "position"), cases(CPU_KERNELS))
@pytest.mark.usefixtures("fast_flex")
@torch.no_grad()
def test_trailing_padding_changes_nothing_for_real_tokens(
    kernel_name: str, mask: MaskPattern, position: None
) -> None:
    attention = make(kernel_name, mask)
    x = torch.randn(1, 10, D, dtype=torch.float64)
    padding = torch.arange(10) < 7
    padded = attention(x, padding[None])
    torch.testing.assert_close(padded[:, :7], attention(x[:, :7]))


@pytest.mark.parametrize(
    ("kernel_name", "position"),
    [
        (name, position)
        for name in CPU_KERNELS
        for position in (None, "alibi")
        if runs(name, MASKS["causal"], position)
    ],
)
def test_queries_that_see_no_key_output_zeros(kernel_name: str, position: str | None) -> None:
    """Left padding plus a causal mask leaves the first queries nothing to see."""
    mask = MASKS["causal"]
    attention = make(kernel_name, mask, position, bias=False)
    x, padding = inputs()
    if kernel_name == "flex":  # FlexAttention has no backward on CPU
        with torch.no_grad():
            y = attention(x, padding)
    else:
        x.requires_grad_(True)
        y = attention(x, padding)
        y.sum().backward()
        assert x.grad is not None and x.grad.isfinite().all()
    assert torch.equal(y[0, :3], torch.zeros(3, D, dtype=torch.float64))
    assert y.isfinite().all()


@pytest.mark.parametrize("kernel_name", CPU_KERNELS)
@torch.no_grad()
def test_without_positions_attention_is_permutation_equivariant(kernel_name: str) -> None:
    attention = make(kernel_name)
    x, padding = inputs()
    order = torch.randperm(T)
    y = attention(x, padding)
    torch.testing.assert_close(attention(x[:, order], padding[:, order]), y[:, order])


@pytest.mark.parametrize("norm", ["layernorm", "rmsnorm"])
@pytest.mark.parametrize("kernel_name", CPU_KERNELS)
@torch.no_grad()
def test_qk_norm_normalises_each_head_over_e(kernel_name: str, norm: str) -> None:
    attention = make(kernel_name, qk_norm=norm)
    nn.init.normal_(attention.q_norm.weight)
    nn.init.normal_(attention.k_norm.weight)
    x, _ = inputs()
    E = D // H

    def normalise(t: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:  # t: (B, T, H*E)
        heads = t.unflatten(-1, (H, E))
        if norm == "rmsnorm":
            heads = heads * torch.rsqrt(heads.pow(2).mean(-1, keepdim=True) + 1e-6)
        else:
            heads = F.layer_norm(heads, (E,), eps=1e-6)
        heads = heads * weight + (0 if bias is None else bias)
        return heads.flatten(-2)

    q, k, v = attention.qkv(x).split(D, dim=-1)
    q = normalise(q, attention.q_norm.weight, getattr(attention.q_norm, "bias", None))
    k = normalise(k, attention.k_norm.weight, getattr(attention.k_norm, "bias", None))
    scores = q.unflatten(-1, (H, E)).transpose(1, 2) @ k.unflatten(-1, (H, E)).permute(0, 2, 3, 1)
    weights = (scores / E**0.5).softmax(-1)  # (B, H, T, T)
    y = (weights @ v.unflatten(-1, (H, E)).transpose(1, 2)).transpose(1, 2).flatten(2)
    torch.testing.assert_close(attention(x), attention.out(y))


@pytest.mark.parametrize("kernel_name", CPU_KERNELS)
@torch.no_grad()
def test_bfloat16_forward_runs(kernel_name: str) -> None:
    mask = MASKS["causal"] if kernel_name == "sdpa" else MASKS["window_causal"]
    position = "rotary" if kernel_name == "sdpa" else "alibi"
    attention = make(kernel_name, mask, position, kv_heads=2)
    x, padding = inputs()
    expected = attention(x, padding)
    y = attention.to(torch.bfloat16)(x.to(torch.bfloat16), padding)
    assert y.dtype == torch.bfloat16
    torch.testing.assert_close(y.double(), expected, atol=0.05, rtol=0.05)


@pytest.mark.parametrize("kernel_name", ["reference", "sdpa", "sdpa_mask"])
def test_attention_dropout_acts_in_training_only(kernel_name: str) -> None:
    attention = make(kernel_name, dropout=0.5)
    plain = twin(attention, kernel_name)
    x, _ = inputs()
    torch.testing.assert_close(attention(x), plain(x))
    assert not torch.allclose(attention.train()(x), plain(x))


def test_choose_kernel_decisions() -> None:
    causal, window = MASKS["causal"], MASKS["window_causal"]

    def choose(**given: object) -> tuple[str, str]:
        options: dict[str, object] = {
            "kind": "softmax",
            "mask": causal,
            "position": None,
            "device": "cpu",
            "dtype": torch.float32,
            "has_dropout": False,
        }
        options.update(given)
        choice = choose_kernel(**options)  # type: ignore[arg-type]
        return choice.name, choice.reason

    assert choose()[0] == "sdpa"
    assert choose(position="rotary", device=None)[0] == "sdpa"
    assert "padding" in choose()[1]
    name, reason = choose(mask=window)
    assert name == "sdpa_mask" and "FlexAttention needs CUDA" in reason
    assert choose(position="alibi", device="cuda", dtype=torch.bfloat16)[0] == "flex"
    assert choose(mask=window, device="cuda")[0] == "flex"
    name, reason = choose(mask=window, device="cuda", has_dropout=True)
    assert name == "sdpa_mask" and "dropout" in reason
    name, reason = choose(position="relative_bias", device="cuda", dtype=torch.float64)
    assert name == "sdpa_mask" and "float64" in reason
    assert choose(kind="linear")[0] == "linear"
    assert choose(override="reference", mask=window) == ("reference", "requested by override")
    assert choose(override="flex", mask=window)[0] == "flex"


@pytest.mark.parametrize(
    ("given", "message"),
    [
        (
            {"override": "sdpa", "mask": MASKS["prefix"]},
            "sdpa applies only the masks none and causal",
        ),
        ({"override": "sdpa", "position": "alibi"}, "sdpa takes no additive bias"),
        ({"override": "flex", "has_dropout": True}, "FlexAttention has no attention dropout"),
        ({"override": "fast"}, "unknown kernel 'fast'"),
        ({"override": "linear"}, "linear is the kernel of linear attention"),
        ({"kind": "linear", "override": "sdpa"}, "linear attention has only the kernel linear"),
        ({"kind": "sparse"}, "unknown attention kind 'sparse'"),
    ],
)
def test_choose_kernel_rejects_what_a_kernel_cannot_run(
    given: dict[str, object], message: str
) -> None:
    options: dict[str, object] = {
        "kind": "softmax",
        "mask": MASKS["causal"],
        "position": None,
        "device": "cpu",
        "dtype": None,
        "has_dropout": False,
    }
    options.update(given)
    with pytest.raises(ValueError, match=message):
        choose_kernel(**options)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"heads": 5}, r"heads \(5\) must divide dim \(32\)"),
        ({"kv_heads": 3}, r"kv_heads \(3\) must divide heads \(4\)"),
        (
            {"position": AlibiPosition(H), "kv_dim": 16},
            "cross-attention takes no in-attention position",
        ),
        ({"mask": MASKS["block"]}, "kernel 'sdpa' cannot run this attention"),
    ],
)
def test_attention_rejects_bad_arguments(options: dict[str, object], message: str) -> None:
    arguments: dict[str, object] = {"heads": H, "max_len": 16, "kernel": kernel("sdpa")}
    arguments.update(options)
    with pytest.raises(ValueError, match=message):
        Attention(D, **arguments)  # type: ignore[arg-type]


def test_forward_checks_memory_and_bias() -> None:
    x, _ = inputs()
    with pytest.raises(ValueError, match="cross-attention needs memory"):
        make("sdpa", kv_dim=16)(x)
    with pytest.raises(ValueError, match="relative_bias attention needs bias"):
        make("sdpa_mask", position="relative_bias")(x)
    with pytest.raises(ValueError, match="cross-attention needs memory; self-attention takes none"):
        make("sdpa")(x, memory=x)


def test_parameter_names() -> None:
    names = set(make("sdpa", qk_norm="rmsnorm").state_dict())
    assert names == {
        "qkv.weight",
        "qkv.bias",
        "out.weight",
        "out.bias",
        "q_norm.weight",
        "k_norm.weight",
    }
    assert make("sdpa", kv_heads=1).qkv.weight.shape == ((H + 2) * (D // H), D)
