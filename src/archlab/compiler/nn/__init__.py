"""Torch building blocks for compiled specs, one concept per file.

Modules take plain Python arguments and built submodules; the compiler's builders connect the
spec to them. Padding masks are bool `(B, S)` tensors, True for real tokens, or None for no
padding. A query that may see no key outputs zeros on every kernel.

Shape legend (used in every `Shape:` section and `# (...)` comment):
    B  batch                      H  query heads
    T  query length               K  key/value heads (K divides H; K < H is grouped-query)
    S  key length                 E  head dim
    D  model width                V  vocabulary size
    N  tokens (patches, pooled)   C  image channels
Letters local to one file are defined there: Dm memory width, Ev value head dim, F MLP hidden
width, R rotated channels, L table length, Gh x Gw patch grid, n x c linear-attention chunks.
"""

from archlab.compiler.nn.attention import (
    KERNELS,
    Attention,
    AttentionHook,
    KernelChoice,
    choose_kernel,
)
from archlab.compiler.nn.attention_position import (
    AlibiPosition,
    AttentionPosition,
    NoPosition,
    RelativeBiasPosition,
    RotaryPosition,
)
from archlab.compiler.nn.bias import AlibiBias, RelativePositionBias, alibi_slopes
from archlab.compiler.nn.block import Block
from archlab.compiler.nn.combine import Add, Average, Concat
from archlab.compiler.nn.drop import DropPath, LayerScale
from archlab.compiler.nn.embeddings import ClsToken, PatchEmbedding, TokenEmbedding
from archlab.compiler.nn.heads import Classify, LMHead, Pool
from archlab.compiler.nn.linear_attention import LinearAttention
from archlab.compiler.nn.masks import NO_MASK, MaskPattern, dense_mask
from archlab.compiler.nn.mlp import Mlp
from archlab.compiler.nn.norms import make_norm
from archlab.compiler.nn.positions import (
    LearnedPosition,
    SinCos2dPosition,
    SinusoidalPosition,
    sincos_2d_table,
    sinusoidal_table,
)
from archlab.compiler.nn.rotary import RotaryEmbedding
from archlab.compiler.nn.stack import Stack

__all__ = [
    "KERNELS",
    "NO_MASK",
    "Add",
    "AlibiBias",
    "AlibiPosition",
    "Attention",
    "AttentionHook",
    "AttentionPosition",
    "Average",
    "Block",
    "Classify",
    "ClsToken",
    "Concat",
    "DropPath",
    "KernelChoice",
    "LMHead",
    "LayerScale",
    "LearnedPosition",
    "LinearAttention",
    "MaskPattern",
    "Mlp",
    "NoPosition",
    "PatchEmbedding",
    "Pool",
    "RelativeBiasPosition",
    "RelativePositionBias",
    "RotaryEmbedding",
    "RotaryPosition",
    "SinCos2dPosition",
    "SinusoidalPosition",
    "Stack",
    "TokenEmbedding",
    "alibi_slopes",
    "choose_kernel",
    "dense_mask",
    "make_norm",
    "sincos_2d_table",
    "sinusoidal_table",
]
