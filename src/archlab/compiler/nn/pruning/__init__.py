"""Token pruning: DynamicViT's learned keep predictor (`dynamic`), EViT's CLS-attention top-k
(`evit`), ToMe's merging (`tome`), one file per method.

A pruning stage takes a sequence whose first `n_cls` tokens are CLS-like (never dropped or merged)
and returns a shorter one, except DynamicViT in training, which keeps every token and records a
hard keep decision (the *policy*) that later attentions apply. What a stage changes travels with
the sequence in a `TokenState`:
- `policy` `(B, T)`: DynamicViT's running keep decision in training (1 kept, 0 dropped; it carries
  the straight-through gradient to the predictors); None outside training.
- `size` `(B, T)`: how many original tokens each token stands for (ToMe); None while all are 1.
- `index` `(B, T)`: the original position of each token (-1 for EViT's fused token);
  `source` `(B, N0)`: the current position of each original token (-1 once dropped). Both are
  carried only when a trace is asked for (`CompiledModel.trace_tokens`), for visualisation.
- `virtual`: the patch count an inference pass would have here (DynamicViT in training keeps the
  full length, yet its keep counts follow the inference schedule).
- `stages`: a `StageRecord` per stage run so far.

Keep counts are static (k = ceil(keep * patches present), at least 1), so batches stay rectangular
and no stage synchronises with the host.

`Block` and `Stack` see a stage only through its hook (`stage.TokenStage`: where it acts and what
it needs from its layer's attention) and give that attention `hook.attention_hook(state, need)`.
`state` holds the token state and what stages share; `trace` what one traced pass did.
"""

from archlab.compiler.nn.pruning.dynamic import DynamicPrune, KeepPredictor
from archlab.compiler.nn.pruning.evit import AttentionTopK
from archlab.compiler.nn.pruning.hook import attention_hook
from archlab.compiler.nn.pruning.policy import fast_policy_attention, policy_attention
from archlab.compiler.nn.pruning.stage import NeedKind, TokenStage
from archlab.compiler.nn.pruning.state import (
    StageRecord,
    TokenState,
    gather_tokens,
    kept_count,
    start_state,
)
from archlab.compiler.nn.pruning.tome import TokenMerge
from archlab.compiler.nn.pruning.trace import TokenTrace

#: The stage of every pruning method (a test checks it covers the spec's methods).
STAGES: dict[str, type[TokenStage]] = {
    "dynamic": DynamicPrune,
    "attention_topk": AttentionTopK,
    "merge": TokenMerge,
}

__all__ = [
    "STAGES",
    "AttentionTopK",
    "DynamicPrune",
    "KeepPredictor",
    "NeedKind",
    "StageRecord",
    "TokenMerge",
    "TokenStage",
    "TokenState",
    "TokenTrace",
    "attention_hook",
    "fast_policy_attention",
    "gather_tokens",
    "kept_count",
    "policy_attention",
    "start_state",
]
