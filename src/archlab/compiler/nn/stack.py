"""A stack of blocks sharing one padding mask, one memory and one relative position table."""

from __future__ import annotations

from torch import Tensor, nn

from archlab.compiler.nn.bias import RelativePositionBias
from archlab.compiler.nn.block import Block


class Stack(nn.Module):
    """`layers` (an `nn.ModuleList` of `Block`s) applied in order.

    With `relative_bias` (T5), the `(H, T, T)` table is computed once per forward and handed to
    the layers flagged in `relative_bias_layers` (all of them when the flags are omitted).
    """

    def __init__(
        self,
        layers: list[Block],
        relative_bias: RelativePositionBias | None = None,
        relative_bias_layers: list[bool] | None = None,
    ) -> None:
        super().__init__()
        if relative_bias_layers is None:
            relative_bias_layers = [relative_bias is not None] * len(layers)
        if len(relative_bias_layers) != len(layers):
            raise ValueError(
                f"relative_bias_layers has {len(relative_bias_layers)} flags "
                f"for {len(layers)} layers"
            )
        if relative_bias is None and any(relative_bias_layers):
            raise ValueError("relative_bias_layers flags layers but the stack has no relative_bias")
        self.layers = nn.ModuleList(layers)
        self.relative_bias = relative_bias
        self.bias_layers = tuple(relative_bias_layers)

    def forward(
        self,
        x: Tensor,
        mask: Tensor | None = None,
        memory: Tensor | None = None,
        memory_mask: Tensor | None = None,
    ) -> Tensor:
        """Run the layers; `mask` marks the real tokens of `x`, `memory_mask` those of `memory`.

        Shape:
            x `(B, T, D)`, mask `(B, T)`, memory `(B, S, Dm)`, memory_mask `(B, S)` -> `(B, T, D)`.
        """
        T = x.shape[1]
        bias = self.relative_bias(T, T) if self.relative_bias is not None else None  # (H, T, T)
        for index, layer in enumerate(self.layers):
            x, mask = self.before_layer(index, x, mask)
            x = layer(x, mask, memory, memory_mask, bias if self.bias_layers[index] else None)
        return x

    def before_layer(
        self, index: int, x: Tensor, mask: Tensor | None
    ) -> tuple[Tensor, Tensor | None]:
        """PRUNING SEAM: where a token_prune stage placed before layer `index` will run.

        DynamicViT-style stages will plug in here, returning fewer tokens and their mask (CLS
        kept). Nothing is installed yet, so this returns its inputs. A stage that shortens the
        sequence must also recompute the relative position table for the new length.
        """
        return x, mask
