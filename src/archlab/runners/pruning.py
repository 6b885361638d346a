"""What ``arch train`` adds for specs with token pruning stages.

DynamicViT's objectives (Rao et al., 2021), used when a spec has ``dynamic`` stages:
- the keep-ratio loss: for each stage, the squared difference between the batch's mean keep rate
  and the rate inference keeps there, averaged over stages (``ratio_weight``);
- KL distillation of the logits to a dense teacher's (``distill_weight``);
- token distillation: the mean squared difference between the student's and the teacher's final
  patch tokens, over the tokens the student keeps (``token_distill_weight``). Both sides are
  layer-normalised first (without affine), so the term does not depend on the residual stream's
  scale.
The teacher is the same spec with its pruning stages removed (``dense_spec``): a registry run or a
CV group (``--teacher``; fold i of the student learns from fold i's teacher, which was validated
on the same examples), or, when none is named, trained first by ``arch train`` itself. The student
starts from the teacher's weights; only the keep predictors start fresh.

EViT's keep-rate warm-up: ``keep_warmup`` epochs at keep 1.0, then ``keep_ramp`` epochs of a cosine
down to each ``attention_topk`` stage's keep (``keep_schedule``).
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from archlab.compiler.model import CompiledModel
from archlab.compiler.nn.pruning import AttentionTopK, DynamicPrune, TokenMerge, TokenState
from archlab.compiler.pruning import dense_spec, pruned_stacks
from archlab.errors import UserInputError
from archlab.specs.analysis import analyze, graph_prune_methods
from archlab.specs.models import Spec

#: The metrics a DynamicViT student logs every epoch (means over the epoch's batches).
OBJECTIVE_METRICS = ("train_ratio_loss", "train_distill_loss", "train_token_distill_loss")


def has_dynamic(model: nn.Module) -> bool:
    return any(isinstance(m, DynamicPrune) for m in model.modules())


def spec_has_dynamic(spec: Spec) -> bool:
    """Whether ``spec`` has a DynamicViT stage (a student trained with its ratio objective)."""
    return "dynamic" in graph_prune_methods(analyze(spec))


def init_from_teacher(student: nn.Module, teacher: nn.Module, teacher_name: str) -> list[str]:
    """Copy the teacher's weights into the student; returns the student keys left as built.

    Every teacher tensor must exist in the student with the same shape, and only pruning
    parameters (keep predictors) may be missing from the teacher.
    """
    theirs = teacher.state_dict()
    ours = student.state_dict()
    foreign = [k for k in theirs if k not in ours]
    wrong = [
        f"{k} {tuple(theirs[k].shape)} vs {tuple(ours[k].shape)}"
        for k in theirs
        if k in ours and theirs[k].shape != ours[k].shape
    ]
    fresh = [k for k in ours if k not in theirs]
    # a stack's stages (encoder.prune.3.predictor...) and token_prune nodes (cut.predictor...)
    stages = tuple(
        f"{name}."
        for name, module in student.named_modules()
        if isinstance(module, DynamicPrune | AttentionTopK | TokenMerge)
    )
    extra = [k for k in fresh if not k.startswith(stages)]
    if foreign or wrong or extra:
        details = "; ".join(
            part
            for part in (
                f"tensors the student lacks: {', '.join(foreign[:4])}" if foreign else "",
                f"shapes differ: {', '.join(wrong[:4])}" if wrong else "",
                f"student tensors the teacher lacks: {', '.join(extra[:4])}" if extra else "",
            )
            if part
        )
        raise UserInputError(
            f"teacher {teacher_name} is not the dense version of this spec ({details}); train "
            "the spec without its pruning stages as the teacher, or leave --teacher out to have "
            "arch train do it first"
        )
    student.load_state_dict(theirs, strict=False)
    return fresh


def keep_schedule(keep: float, epoch: int, warmup: int, ramp: int) -> float:
    """EViT's keep rate for ``epoch``: 1.0 for ``warmup`` epochs, then a cosine down to ``keep``
    over ``ramp`` epochs, then ``keep``."""
    if epoch < warmup:
        return 1.0
    if ramp <= 0 or epoch >= warmup + ramp:
        return keep
    progress = (epoch - warmup) / ramp
    return keep + (1.0 - keep) * 0.5 * (1.0 + math.cos(math.pi * progress))


def set_keep_rates(model: nn.Module, epoch: int, warmup: int, ramp: int) -> None:
    """Apply EViT's warm-up schedule to every ``attention_topk`` stage for ``epoch``."""
    for module in model.modules():
        if isinstance(module, AttentionTopK):
            scheduled = warmup > 0 or ramp > 0
            module.keep_now = keep_schedule(module.keep, epoch, warmup, ramp) if scheduled else None


class Distiller:
    """DynamicViT's extra loss terms for one student, with its optional frozen teacher."""

    def __init__(
        self,
        student: CompiledModel,
        teacher: CompiledModel | None,
        *,
        ratio_weight: float,
        distill_weight: float,
        token_distill_weight: float,
    ) -> None:
        self.ratio_weight = ratio_weight
        self.distill_weight = distill_weight if teacher is not None else 0.0
        self.token_weight = token_distill_weight if teacher is not None else 0.0
        self.teacher = teacher
        # the token-distillation point: the last stack that prunes or follows a pruning stage
        # (a token_prune node between stacks included), its output in student and teacher
        stacks = pruned_stacks(student.graph)
        self.token_node = stacks[-1] if stacks else None
        self._captured: list[Tensor] = []
        if teacher is not None:
            teacher.eval()
            teacher.requires_grad_(False)
            if self.token_node is not None and hasattr(teacher, self.token_node):
                getattr(teacher, self.token_node).register_forward_hook(
                    lambda _m, _i, out: self._captured.append(out)
                )
            else:
                self.token_weight = 0.0

    def __call__(
        self,
        logits: Tensor,
        traced: tuple[dict[str, TokenState | None], dict[str, Tensor]],
        inputs: Any,
    ) -> tuple[Tensor, dict[str, float]]:
        """The weighted sum of the extra terms and each unweighted term's value."""
        states, features = traced
        total = logits.new_zeros((), dtype=torch.float32)
        parts: dict[str, float] = {}
        rates = []
        seen: set[str] = set()
        for state in states.values():
            for record in state.stages if state is not None else ():
                if record.name in seen or record.policy is None:
                    continue
                seen.add(record.name)
                kept = record.policy[:, record.n_cls :].float().mean(dim=1)  # (B,)
                rates.append(((kept - record.target) ** 2).mean())
        if rates:
            ratio = torch.stack(rates).mean()
            total = total + self.ratio_weight * ratio
            parts["train_ratio_loss"] = float(ratio.detach())
        if self.teacher is None:
            return total, parts
        self._captured.clear()
        with torch.no_grad():
            teacher_logits = self.teacher(**inputs).float()
        if self.distill_weight > 0:
            kl = F.kl_div(
                F.log_softmax(logits.float(), dim=-1),
                F.log_softmax(teacher_logits, dim=-1),
                reduction="batchmean",
                log_target=True,
            )
            total = total + self.distill_weight * kl
            parts["train_distill_loss"] = float(kl.detach())
        if self.token_weight > 0 and self.token_node in features and self._captured:
            token = self._token_loss(
                features[self.token_node], states.get(self.token_node), self._captured[-1]
            )
            if token is not None:
                total = total + self.token_weight * token
                parts["train_token_distill_loss"] = float(token.detach())
        return total, parts

    def _token_loss(
        self, student: Tensor, state: TokenState | None, teacher: Tensor
    ) -> Tensor | None:
        n_cls = state.stages[-1].n_cls if state is not None and state.stages else 0
        s = F.layer_norm(student.float(), student.shape[-1:])
        t = F.layer_norm(teacher.float(), teacher.shape[-1:])
        if s.shape[1] != t.shape[1]:  # tokens were really removed: follow them by index
            if state is None or state.index is None:
                return None
            index = state.index.clamp(min=0)
            t = t.gather(1, index[..., None].expand(-1, -1, t.shape[-1]))
            weight = (state.index >= 0).float()
        else:
            weight = torch.ones(s.shape[:2], device=s.device)
        if state is not None and state.policy is not None:  # as a mask: no gradient through it
            weight = weight * state.policy.detach().float()
        weight = weight[:, n_cls:]
        err = ((s[:, n_cls:] - t[:, n_cls:]) ** 2).mean(dim=-1)  # (B, N)
        return (err * weight).sum() / weight.sum().clamp_min(1.0)


__all__ = [
    "OBJECTIVE_METRICS",
    "Distiller",
    "dense_spec",
    "has_dynamic",
    "init_from_teacher",
    "keep_schedule",
    "set_keep_rates",
    "spec_has_dynamic",
]
