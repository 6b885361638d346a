"""One transformer layer: attention, optional cross-attention and MLP, each a residual branch."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

from torch import Tensor, nn

from archlab.compiler.nn.attention import NeedKind
from archlab.compiler.nn.drop import DropPath, LayerScale

Placement = Literal["pre", "post"]


class Block(nn.Module):
    """A transformer layer assembled from built parts.

    Branches in order: `attention` (self), `cross_attention` (to a memory, when given) and `mlp`,
    each normalised by `norm1`, `norm_cross`, `norm2`. Pre-norm: x = x + branch(norm(x));
    post-norm: x = norm(x + branch(x)) (`nn.TransformerEncoderLayer` with norm_first True and
    False). Each branch output passes dropout, a layer scale (`ls1`, `ls_cross`, `ls2`) and
    stochastic depth before the residual sum; parts that are off are `nn.Identity`.

    The attentions are called as `attention(x, key_padding, memory, bias)` (`Attention` or
    `LinearAttention`); the MLP as `mlp(x)`. `attend` and `feed` split the layer where EViT and
    ToMe stages act, between its attention and its MLP.
    """

    def __init__(
        self,
        attention: nn.Module,
        mlp: nn.Module,
        norm1: nn.Module,
        norm2: nn.Module,
        *,
        cross_attention: nn.Module | None = None,
        norm_cross: nn.Module | None = None,
        placement: Placement = "pre",
        dropout: float = 0.0,
        drop_path: float = 0.0,
        layer_scale: float | None = None,
        dim: int,
    ) -> None:
        super().__init__()
        if placement not in ("pre", "post"):
            raise ValueError(f"unknown norm placement {placement!r}; choose pre or post")
        if (cross_attention is None) != (norm_cross is None):
            raise ValueError("cross_attention and norm_cross come together")

        def scale() -> nn.Module:
            return LayerScale(dim, layer_scale) if layer_scale is not None else nn.Identity()

        self.pre_norm = placement == "pre"
        self.attention = attention
        self.norm1 = norm1
        self.ls1 = scale()
        self.cross_attention = cross_attention
        self.norm_cross = norm_cross if norm_cross is not None else nn.Identity()
        self.ls_cross = scale() if cross_attention is not None else nn.Identity()
        self.mlp = mlp
        self.norm2 = norm2
        self.ls2 = scale()
        self.dropout = nn.Dropout(dropout) if dropout > 0.0 else nn.Identity()
        self.drop_path = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()

    def forward(
        self,
        x: Tensor,
        key_padding: Tensor | None = None,
        memory: Tensor | None = None,
        memory_padding: Tensor | None = None,
        bias: Tensor | None = None,
    ) -> Tensor:
        """Run the branches.

        Args:
            x: the layer input.
            key_padding: True for real tokens of `x`.
            memory: what cross-attention reads; required when the block has cross-attention.
            memory_padding: True for real tokens of `memory`.
            bias: the stack's relative position table, for a relative_bias attention.

        Shape:
            x `(B, T, D)`, key_padding `(B, T)`, memory `(B, S, Dm)`, memory_padding `(B, S)`,
            bias `(H, T, T)` -> `(B, T, D)`.
        """
        x, _ = self.attend(x, key_padding, memory, memory_padding, bias)
        return self.feed(x)

    def attend(
        self,
        x: Tensor,
        key_padding: Tensor | None = None,
        memory: Tensor | None = None,
        memory_padding: Tensor | None = None,
        bias: Tensor | None = None,
        *,
        policy: Tensor | None = None,
        size: Tensor | None = None,
        need: NeedKind | None = None,
    ) -> tuple[Tensor, Tensor | None]:
        """The attention branches (self, then cross), without the MLP.

        `policy`, `size` and `need` go to the self-attention's `Attention.attend` (token pruning
        runs between this and `feed`); the second value is what `need` asked for, else None.
        """
        extra: list[Tensor | None] = [None]

        def self_attention(h: Tensor) -> Tensor:
            if policy is None and size is None and need is None:
                out: Tensor = self.attention(h, key_padding, None, bias)
                return out
            attention: Any = self.attention  # an Attention: pruned layers are softmax
            out, extra[0] = attention.attend(
                h, key_padding, None, bias, policy=policy, size=size, need=need
            )
            return out

        x = self._residual(x, self.norm1, self.ls1, self_attention)
        cross = self.cross_attention
        if cross is not None:
            if memory is None:
                raise ValueError("this block cross-attends and needs memory")
            x = self._residual(
                x, self.norm_cross, self.ls_cross, lambda h: cross(h, memory_padding, memory)
            )
        return x, extra[0]

    def feed(self, x: Tensor) -> Tensor:
        """The MLP branch. Shape: `(B, T, D)` -> `(B, T, D)`."""
        return self._residual(x, self.norm2, self.ls2, self.mlp)

    def _residual(
        self, x: Tensor, norm: nn.Module, scale: nn.Module, branch: Callable[[Tensor], Tensor]
    ) -> Tensor:
        if self.pre_norm:
            return x + self.drop_path(scale(self.dropout(branch(norm(x)))))
        return norm(x + self.drop_path(scale(self.dropout(branch(x)))))

    def extra_repr(self) -> str:
        return f"placement={'pre' if self.pre_norm else 'post'}"
