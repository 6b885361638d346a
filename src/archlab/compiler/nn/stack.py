"""A stack of blocks sharing one padding mask, one memory and one relative position table."""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from archlab.compiler.nn.bias import RelativePositionBias
from archlab.compiler.nn.block import Block
from archlab.compiler.nn.pruning.stage import NeedKind, TokenStage
from archlab.compiler.nn.pruning.state import TokenState


class Stack(nn.Module):
    """`layers` (an `nn.ModuleList` of `Block`s) applied in order.

    With `relative_bias` (T5), the `(H, T, T)` table is computed once per forward and handed to
    the layers flagged in `relative_bias_layers` (all of them when the flags are omitted).
    `stages` maps layer indices to token pruning stages (`archlab.compiler.nn.pruning`), each
    called through its hook by its layer (`Block.forward_tokens`), whatever its method. Layers
    from the first stage on take no relative table (the compiler refuses such specs: pruning
    reorders tokens).
    """

    def __init__(
        self,
        layers: list[Block],
        relative_bias: RelativePositionBias | None = None,
        relative_bias_layers: list[bool] | None = None,
        stages: dict[int, TokenStage] | None = None,
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
        stages = stages or {}
        outside = [i for i in stages if not 0 <= i < len(layers)]
        if outside:
            raise ValueError(f"pruning stages at {outside}, outside the {len(layers)} layers")
        self.layers = nn.ModuleList(layers)
        self.relative_bias = relative_bias
        self.bias_layers = tuple(relative_bias_layers)
        # state-dict keys read like the expanded graph: encoder.prune.3.predictor...
        self.prune = nn.ModuleDict({str(i): stages[i] for i in sorted(stages)}) if stages else None
        self.stage_at: tuple[str | None, ...] = tuple(
            str(i) if i in stages else None for i in range(len(layers))
        )
        #: while decoding, an encoder whose output the decoder's steps reuse keeps it here
        #: (`kv_cache.Memo`); None otherwise
        self.memo: Any = None

    @property
    def pruned(self) -> bool:
        return self.prune is not None

    def forward(
        self,
        x: Tensor,
        mask: Tensor | None = None,
        memory: Tensor | None = None,
        memory_mask: Tensor | None = None,
    ) -> Tensor:
        """Run the layers; `mask` marks the real tokens of `x`, `memory_mask` those of `memory`.

        Shape:
            x `(B, T, D)`, mask `(B, T)`, memory `(B, S, Dm)`, memory_mask `(B, S)` -> `(B, T', D)`
            (T' < T when the stack prunes tokens).
        """
        if self.memo is not None:  # decoding: the prefill computes, the steps reuse
            if self.memo.value is None:
                self.memo.value = self.run(x, mask, memory, memory_mask)
            return self.memo.value
        return self.run(x, mask, memory, memory_mask)

    def run(
        self,
        x: Tensor,
        mask: Tensor | None = None,
        memory: Tensor | None = None,
        memory_mask: Tensor | None = None,
    ) -> Tensor:
        """`forward` itself, whether or not a decoding keeps the output."""
        if self.prune is not None:
            return self.forward_tokens(x, mask, memory, memory_mask)[0]
        T = x.shape[1]
        bias = self.relative_bias(T, T) if self.relative_bias is not None else None  # (H, T, T)
        for index, layer in enumerate(self.layers):
            x = layer(x, mask, memory, memory_mask, bias if self.bias_layers[index] else None)
        return x

    def forward_tokens(
        self,
        x: Tensor,
        mask: Tensor | None = None,
        memory: Tensor | None = None,
        memory_mask: Tensor | None = None,
        state: TokenState | None = None,
        trace: bool = False,
        need: NeedKind | None = None,
    ) -> tuple[Tensor, Tensor | None, TokenState | None, Tensor | None]:
        """`forward` for pruned sequences: runs the stack's own stages and carries their state.

        Args:
            state: what pruning before this stack did (a DynamicViT policy to apply, ToMe sizes).
            trace: carry the kept-token indices and source map (`TokenState.index`, `.source`).
            need: also return the last layer's `"cls"` attention or `"keys"` (for a
                `token_prune` node after the stack).

        Returns: the output, its padding mask, the state after the stack, and what `need` asked.
        """
        T = x.shape[1]
        bias = self.relative_bias(T, T) if self.relative_bias is not None else None  # (H, T, T)
        seen = None
        last = len(self.layers) - 1
        for index, module in enumerate(self.layers):
            layer: Block = module  # type: ignore[assignment]
            key = self.stage_at[index]
            stage = self.prune[key] if self.prune is not None and key is not None else None
            x, mask, state, seen = layer.forward_tokens(
                x,
                mask,
                memory,
                memory_mask,
                bias if self.bias_layers[index] else None,
                state=state,
                stage=stage,  # type: ignore[arg-type]
                need=need if index == last else None,
                trace=trace,
            )
        return x, mask, state, seen
