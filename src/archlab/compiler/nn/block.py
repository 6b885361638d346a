"""One transformer layer: attention, optional cross-attention and MLP, each a residual branch."""

from __future__ import annotations

from typing import Any, Literal

from torch import Tensor, nn

from archlab.compiler.nn.attention import AttentionHook
from archlab.compiler.nn.drop import DropPath, LayerScale
from archlab.compiler.nn.pruning.hook import attention_hook
from archlab.compiler.nn.pruning.stage import NeedKind, TokenStage
from archlab.compiler.nn.pruning.state import TokenState

Placement = Literal["pre", "post"]


class Block(nn.Module):
    """A transformer layer assembled from built parts.

    Branches in order: `attention` (self), `cross_attention` (to a memory, when given) and `mlp`,
    each normalised by `norm1`, `norm_cross`, `norm2`. Pre-norm: x = x + branch(norm(x));
    post-norm: x = norm(x + branch(x)) (`nn.TransformerEncoderLayer` with norm_first True and
    False). Each branch output passes dropout, a layer scale (`ls1`, `ls_cross`, `ls2`) and
    stochastic depth before the residual sum; parts that are off are `nn.Identity`.

    The attentions are called as `attention(x, key_padding, memory, bias)` (`Attention` or
    `LinearAttention`); the MLP as `mlp(x)`. `forward_tokens` runs the layer on a pruned
    sequence: a pruning stage acts through its hook (`TokenStage`), before the layer or between
    `attend` and `feed`, without the block knowing its method.
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

    def forward_tokens(
        self,
        x: Tensor,
        key_padding: Tensor | None,
        memory: Tensor | None,
        memory_padding: Tensor | None,
        bias: Tensor | None,
        *,
        state: TokenState | None,
        stage: TokenStage | None = None,
        need: NeedKind | None = None,
        trace: bool = False,
    ) -> tuple[Tensor, Tensor | None, TokenState | None, Tensor | None]:
        """`forward` on a sequence that token pruning acts on (`archlab.compiler.nn.pruning`).

        The `stage` of this layer, if any, runs where it acts (`before_layer`, or
        `after_attention` with what it needs from the attention); the attention runs through
        the hook of the sequence's `state`. `need`: what to return from the attention for a
        stage after the layer.

        Returns: the output, its padding mask, the state after the layer, and what the
        attention gave (the stage's or `need`'s; None where nothing was asked).
        """
        if stage is not None:
            x, key_padding, state = stage.before_layer(x, key_padding, state, trace)
            need = stage.need or need
        hook = attention_hook(state, need)
        if hook is None:
            return self(x, key_padding, memory, memory_padding, bias), key_padding, state, None
        x, seen = self.attend(x, key_padding, memory, memory_padding, bias, hook)
        if stage is not None:
            x, key_padding, state = stage.after_attention(x, key_padding, state, seen, trace)
        return self.feed(x), key_padding, state, seen

    def attend(
        self,
        x: Tensor,
        key_padding: Tensor | None = None,
        memory: Tensor | None = None,
        memory_padding: Tensor | None = None,
        bias: Tensor | None = None,
        hook: AttentionHook | None = None,
    ) -> tuple[Tensor, Tensor | None]:
        """The attention branches (self, then cross), without the MLP.

        `hook` goes to the self-attention's `Attention.attend` (token pruning runs between this
        and `feed`); the second value is what the hook read, else None.
        """
        h = self.norm1(x) if self.pre_norm else x
        seen = None
        if hook is None:
            out = self.attention(h, key_padding, None, bias)
        else:
            attention: Any = self.attention  # an Attention: pruned layers are softmax
            out, seen = attention.attend(h, key_padding, None, bias, hook)
        x = self._residual(x, out, self.norm1, self.ls1)
        cross = self.cross_attention
        if cross is not None:
            if memory is None:
                raise ValueError("this block cross-attends and needs memory")
            h = self.norm_cross(x) if self.pre_norm else x
            x = self._residual(x, cross(h, memory_padding, memory), self.norm_cross, self.ls_cross)
        return x, seen

    def feed(self, x: Tensor) -> Tensor:
        """The MLP branch. Shape: `(B, T, D)` -> `(B, T, D)`."""
        h = self.norm2(x) if self.pre_norm else x
        return self._residual(x, self.mlp(h), self.norm2, self.ls2)

    def _residual(self, x: Tensor, y: Tensor, norm: nn.Module, scale: nn.Module) -> Tensor:
        """Add a branch's output `y` to `x`: pre-norm x + y', post-norm norm(x + y')."""
        y = self.drop_path(scale(self.dropout(y)))
        return x + y if self.pre_norm else norm(x + y)

    def extra_repr(self) -> str:
        return f"placement={'pre' if self.pre_norm else 'post'}"
