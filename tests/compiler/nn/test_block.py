"""Block against PyTorch's own encoder and decoder layers, and its residual options."""

from __future__ import annotations

import pytest
import torch
from nn_testing import CPU_KERNELS, kernel
from torch import Tensor, nn

from archlab.compiler.nn import NO_MASK, Attention, Block, MaskPattern, Mlp

D, H, F = 32, 4, 64


def attention(kernel_name: str, mask: MaskPattern = NO_MASK, **options: object) -> Attention:
    return Attention(D, H, mask=mask, max_len=32, kernel=kernel(kernel_name), **options)  # type: ignore[arg-type]


def copy_attention(ours: Attention, theirs: nn.MultiheadAttention) -> None:
    with torch.no_grad():
        if hasattr(ours, "qkv"):
            ours.qkv.weight.copy_(theirs.in_proj_weight)
            ours.qkv.bias.copy_(theirs.in_proj_bias)
        else:
            q, k, v = theirs.in_proj_weight.chunk(3)
            qb, kb, vb = theirs.in_proj_bias.chunk(3)
            ours.q.weight.copy_(q)
            ours.q.bias.copy_(qb)
            ours.kv.weight.copy_(torch.cat([k, v]))
            ours.kv.bias.copy_(torch.cat([kb, vb]))
        ours.out.load_state_dict(theirs.out_proj.state_dict())


def inputs() -> tuple[Tensor, Tensor]:
    x = torch.randn(2, 10, D, dtype=torch.float64)
    padding = torch.ones(2, 10, dtype=torch.bool)
    padding[0, 7:] = False
    return x, padding


@pytest.mark.parametrize("kernel_name", CPU_KERNELS)
@pytest.mark.parametrize("placement", ["pre", "post"])
@torch.no_grad()
def test_matches_transformer_encoder_layer(placement: str, kernel_name: str) -> None:
    theirs = nn.TransformerEncoderLayer(
        D, H, F, dropout=0.0, activation="gelu", batch_first=True, norm_first=placement == "pre"
    )
    block = Block(
        attention(kernel_name),
        Mlp(D, F, "gelu"),
        nn.LayerNorm(D, eps=1e-5),
        nn.LayerNorm(D, eps=1e-5),
        placement=placement,  # type: ignore[arg-type]
        dim=D,
    )
    copy_attention(block.attention, theirs.self_attn)  # type: ignore[arg-type]
    block.mlp.fc1.load_state_dict(theirs.linear1.state_dict())
    block.mlp.fc2.load_state_dict(theirs.linear2.state_dict())
    block.norm1.load_state_dict(theirs.norm1.state_dict())
    block.norm2.load_state_dict(theirs.norm2.state_dict())
    theirs, block = theirs.double().eval(), block.double().eval()
    x, padding = inputs()
    torch.testing.assert_close(block(x), theirs(x))
    expected = theirs(x, src_key_padding_mask=~padding)
    torch.testing.assert_close(block(x, padding)[padding], expected[padding])


@pytest.mark.parametrize("kernel_name", ["reference", "sdpa"])
@pytest.mark.parametrize("placement", ["pre", "post"])
@torch.no_grad()
def test_cross_attending_block_matches_transformer_decoder_layer(
    placement: str, kernel_name: str
) -> None:
    theirs = nn.TransformerDecoderLayer(
        D, H, F, dropout=0.0, activation="gelu", batch_first=True, norm_first=placement == "pre"
    )
    block = Block(
        attention(kernel_name, MaskPattern("causal")),
        Mlp(D, F, "gelu"),
        nn.LayerNorm(D, eps=1e-5),
        nn.LayerNorm(D, eps=1e-5),
        cross_attention=attention(kernel_name, kv_dim=D),
        norm_cross=nn.LayerNorm(D, eps=1e-5),
        placement=placement,  # type: ignore[arg-type]
        dim=D,
    )
    copy_attention(block.attention, theirs.self_attn)  # type: ignore[arg-type]
    copy_attention(block.cross_attention, theirs.multihead_attn)  # type: ignore[arg-type]
    block.mlp.fc1.load_state_dict(theirs.linear1.state_dict())
    block.mlp.fc2.load_state_dict(theirs.linear2.state_dict())
    for ours, name in [(block.norm1, "norm1"), (block.norm_cross, "norm2"), (block.norm2, "norm3")]:
        ours.load_state_dict(getattr(theirs, name).state_dict())
    theirs, block = theirs.double().eval(), block.double().eval()
    x, _ = inputs()
    memory = torch.randn(2, 6, D, dtype=torch.float64)
    memory_padding = torch.tensor([[True] * 6, [True] * 4 + [False] * 2])
    expected = theirs(
        x,
        memory,
        tgt_mask=nn.Transformer.generate_square_subsequent_mask(10, dtype=torch.float64),
        memory_key_padding_mask=~memory_padding,
    )
    torch.testing.assert_close(block(x, None, memory, memory_padding), expected)


def test_layer_scale_and_residual_options() -> None:
    block = Block(
        attention("sdpa"),
        Mlp(D, F, "gelu"),
        nn.LayerNorm(D),
        nn.LayerNorm(D),
        layer_scale=0.0,
        drop_path=0.1,
        dropout=0.1,
        dim=D,
    ).eval()
    assert {"ls1.gamma", "ls2.gamma"} <= set(block.state_dict())
    assert not any(name.startswith("ls_cross") for name in block.state_dict())
    x = torch.randn(2, 5, D)
    torch.testing.assert_close(block(x), x)  # zero-initialised scales: the identity
    plain = Block(attention("sdpa"), Mlp(D, F, "gelu"), nn.LayerNorm(D), nn.LayerNorm(D), dim=D)
    assert isinstance(plain.ls1, nn.Identity) and isinstance(plain.drop_path, nn.Identity)
    assert plain.cross_attention is None


def test_dropout_and_drop_path_act_in_training() -> None:
    block = Block(
        attention("sdpa"), Mlp(D, F, "gelu"), nn.LayerNorm(D), nn.LayerNorm(D), dropout=0.5, dim=D
    )
    x = torch.randn(2, 5, D)
    assert not torch.allclose(block.train()(x), block.eval()(x))


def test_block_checks_its_parts() -> None:
    with pytest.raises(ValueError, match="unknown norm placement 'sandwich'"):
        Block(
            attention("sdpa"),
            nn.Identity(),
            nn.Identity(),
            nn.Identity(),
            placement="sandwich",
            dim=D,
        )  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="cross_attention and norm_cross come together"):
        Block(
            attention("sdpa"),
            nn.Identity(),
            nn.Identity(),
            nn.Identity(),
            cross_attention=attention("sdpa", kv_dim=D),
            dim=D,
        )
    decoder = Block(
        attention("sdpa"),
        nn.Identity(),
        nn.Identity(),
        nn.Identity(),
        cross_attention=attention("sdpa", kv_dim=D),
        norm_cross=nn.Identity(),
        dim=D,
    )
    with pytest.raises(ValueError, match="this block cross-attends and needs memory"):
        decoder(torch.randn(1, 3, D))


@torch.no_grad()
def test_block_without_positions_is_permutation_equivariant() -> None:
    block = Block(attention("sdpa"), Mlp(D, F, "swiglu"), nn.RMSNorm(D), nn.RMSNorm(D), dim=D)
    block = block.double().eval()
    x, padding = inputs()
    order = torch.randperm(10)
    torch.testing.assert_close(block(x[:, order], padding[:, order]), block(x, padding)[:, order])
