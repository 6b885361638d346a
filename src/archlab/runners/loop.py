"""One model's training on one split: the loop behind every fold of ``arch train``.

``Trainer.fit`` builds the spec's module from an explicit seed, trains it with AdamW and a
warm-up + cosine schedule over the split's training indices (mixup / CutMix on training batches
only, gradient accumulation and clipping, bf16 autocast on CUDA), evaluates it on the validation
indices after every epoch, keeps the best weights (by the early-stopping metric, else
``val_loss``), stops early when asked, and finally evaluates the best weights once on the test
indices. Every random number comes from generators seeded from the configuration, so on the CPU
a run reproduces bit for bit.
"""

from __future__ import annotations

import contextlib
import difflib
import functools
import math
import pickle
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from archlab.compiler import compile_spec
from archlab.compiler.devices import resolve_device
from archlab.compiler.model import CompiledModel, tensor_mismatches, tensor_table
from archlab.compiler.nn.embeddings import TokenEmbedding
from archlab.errors import UserInputError
from archlab.files import replace_atomically
from archlab.metrics import Direction, default_direction
from archlab.runners import lifecycle
from archlab.runners.config import TrainConfig
from archlab.runners.data import TaskData
from archlab.runners.distributed import Distributed
from archlab.runners.mixup import Mixer, MixParams, soft_target_cross_entropy
from archlab.runners.optim import build_optimizer, warmup_cosine
from archlab.runners.progress import TrainProgress
from archlab.runners.pruning import (
    OBJECTIVE_METRICS,
    Distiller,
    has_dynamic,
    init_from_teacher,
    set_keep_rates,
)
from archlab.specs.models import Spec

Log = Callable[[int, dict[str, float]], None]  # (epoch, metrics) after every epoch
STATE_FILE = "state.pt"  # the training state after the last finished epoch, for --resume

#: The accuracy-like metric ``evaluate`` reports for each task, after ``{prefix}_loss``.
TASK_METRIC = {"classify": "acc", "lm": "ppl", "seq2seq": "token_acc"}


def evaluation_metrics(task: str, prefix: str) -> tuple[str, str]:
    """The names ``Trainer.evaluate`` gives its two metrics for ``task``."""
    return f"{prefix}_loss", f"{prefix}_{TASK_METRIC[task]}"


def epoch_metrics(task: str, *, dynamic: bool = False) -> tuple[str, ...]:
    """The metrics every epoch of a fit logs for ``task`` (``dynamic``: a spec with DynamicViT
    stages, which adds its objectives): the names ``--early-stop`` can watch."""
    objectives = OBJECTIVE_METRICS if dynamic else ()
    return ("train_loss", *objectives, *evaluation_metrics(task, "val"), "lr", "samples_per_s")


def check_monitor(metric: str | None, task: str, *, dynamic: bool = False) -> None:
    """Refuse an early-stopping metric the fit never logs: it would stop training while the
    model still improves and keep the first epoch as the best one."""
    if metric is None:
        return
    known = epoch_metrics(task, dynamic=dynamic)
    if metric in known:
        return
    from archlab.errors import UserInputError

    close = difflib.get_close_matches(metric, known, n=1, cutoff=0.6)
    hint = f"did you mean {close[0]!r}? " if close else ""
    raise UserInputError(
        f"--early-stop {metric}: a {task} run never logs {metric!r}, so early stopping would "
        f"watch nothing; {hint}the metrics logged every epoch are {', '.join(known)}"
    )


@dataclass(frozen=True)
class FitResult:
    """What one fit produced: the best epoch's metrics (``best_epoch`` counts from 0), test
    metrics, the best weights' file, the last epoch's metrics."""

    best_epoch: int
    best: dict[str, float]
    epochs_run: int
    stopped_early: bool
    checkpoint: Path | None
    test: dict[str, float] = field(default_factory=dict)
    final: dict[str, float] = field(default_factory=dict)
    """The last epoch's metrics (what a CV group's aggregates average)."""


def uses_autocast(amp: str, device: torch.device) -> bool:
    """bf16 autocast: ``bf16`` on any device (the CPU has bf16 kernels too), ``auto`` on CUDA."""
    return amp == "bf16" or (amp == "auto" and device.type == "cuda")


class Trainer:
    """Trains ``spec`` on ``data`` under ``config``; one instance per fold."""

    def __init__(
        self,
        spec: Spec,
        data: TaskData,
        config: TrainConfig,
        *,
        init_seed: int,
        data_seed: int,
        out_dir: Path | None = None,
        log: Log | None = None,
        progress: TrainProgress | None = None,
        distributed: Distributed | None = None,
        teacher: CompiledModel | None = None,
        teacher_name: str = "",
        monitor_direction: Direction | None = None,
    ) -> None:
        self.spec, self.data, self.config = spec, data, config
        self.teacher, self.teacher_name = teacher, teacher_name
        self.device = resolve_device(config.device)
        self.distributed = distributed
        if distributed is not None and self.device.type == "cuda":
            self.device = torch.device("cuda", distributed.local_rank)
        self.init_seed, self.data_seed = init_seed, data_seed
        self.out_dir = out_dir
        self.log = log
        self.progress = progress  # told every training batch's loss
        self.amp = uses_autocast(config.amp, self.device)
        self.monitor = config.early_stop_metric or "val_loss"
        # which way the monitored metric improves: as the registry records it (the caller
        # passes it), else its name's default
        self.monitor_low = (monitor_direction or default_direction(self.monitor)) == "min"

    # -- the loop ---------------------------------------------------------------------------------

    def fit(
        self,
        train: np.ndarray,
        val: np.ndarray,
        test: np.ndarray | None = None,
        *,
        resume: Path | dict[str, Any] | None = None,
    ) -> FitResult:
        """Train, evaluating every epoch; with ``resume`` (a ``state.pt`` an earlier fit of the
        same split wrote, or what ``load_state`` read from it), continue after its last finished
        epoch exactly as if never stopped."""
        config = self.config
        model = compile_spec(self.spec, device=self.device, seed=self.init_seed)
        distiller = None
        if has_dynamic(model):  # DynamicViT: start from the dense teacher, add its objectives
            teacher = self.teacher.to(self.device) if self.teacher is not None else None
            if teacher is not None and resume is None:
                init_from_teacher(model, teacher, self.teacher_name)
            distiller = Distiller(
                model,
                teacher,
                ratio_weight=config.ratio_weight,
                distill_weight=config.distill_weight,
                token_distill_weight=config.token_distill_weight,
            )
        step_model: Any = model
        if self.distributed is not None:
            from torch.nn.parallel import DistributedDataParallel

            ids = [self.device.index] if self.device.type == "cuda" else None
            step_model = DistributedDataParallel(model, device_ids=ids)
        if config.compile:
            step_model = torch.compile(step_model)
        shard = self.distributed.shard if self.distributed is not None else (lambda order: order)
        batches = math.ceil(len(shard(train)) / config.batch_size)
        steps_per_epoch = math.ceil(batches / config.accumulate)
        optimizer = build_optimizer(model, lr=config.lr, weight_decay=config.weight_decay)
        schedule = warmup_cosine(
            optimizer,
            warmup_steps=round(config.warmup * steps_per_epoch),
            total_steps=config.epochs * steps_per_epoch,
            lr=config.lr,
            min_lr=config.min_lr,
        )
        order = torch.Generator().manual_seed(self.data_seed)
        setting = config.mixup_setting()
        mixer = None
        if setting is not None and self.data.task == "classify":
            mixer = Mixer(
                setting, self.data.classes or 0, torch.Generator().manual_seed(self.data_seed + 1)
            )
        image_input = self._image_input()
        hook_state: dict[str, MixParams | None] = {"params": None}
        hooks = []
        if mixer is not None and image_input is None:
            # token inputs: mixup acts on the embeddings (CutMix was refused by the config check)
            for module in model.modules():
                if isinstance(module, TokenEmbedding):
                    hooks.append(
                        module.register_forward_hook(
                            lambda _m, _i, out: (
                                mixer.mix_features(out, hook_state["params"])
                                if hook_state["params"] is not None
                                else out
                            )
                        )
                    )
        best: dict[str, float] = {}
        metrics: dict[str, float] = {}
        best_epoch, bad_epochs, stopped = -1, 0, False
        best_path = self.out_dir / "best.safetensors" if self.out_dir else None
        best_state: dict[str, Tensor] | None = None
        state_path = self.out_dir / STATE_FILE if self.out_dir else None
        start = 0
        if resume is not None:
            saved = load_state(resume) if isinstance(resume, Path) else resume
            for key in ("model", "best_state"):
                if key == "model" or saved[key] is not None:
                    _check_weights(model, saved[key])
            try:
                model.load_state_dict(saved["model"])
                optimizer.load_state_dict(saved["optimizer"])
                schedule.load_state_dict(saved["schedule"])
                order.set_state(saved["order"])
                if mixer is not None and saved["mix"] is not None:
                    mixer.generator.set_state(saved["mix"])
                torch.set_rng_state(saved["torch_rng"])
                start = int(saved["epoch"]) + 1
                best = {str(name): float(value) for name, value in saved["best"].items()}
                best_epoch, bad_epochs = int(saved["best_epoch"]), int(saved["bad_epochs"])
            except (KeyError, TypeError, ValueError, RuntimeError, AttributeError) as exc:
                raise StateError(
                    f"the training state does not fit this run ({type(exc).__name__}: {exc}); "
                    "it belongs to another run or was altered: start the run again instead"
                ) from None
            best_state = saved["best_state"]
            metrics = saved.get("metrics", {})
        epoch = start - 1
        try:
            for epoch in range(start, config.epochs):
                model.train()
                set_keep_rates(model, epoch, config.keep_warmup, config.keep_ramp)
                started = time.perf_counter()
                perm = shard(train[torch.randperm(len(train), generator=order).numpy()])
                total, seen = 0.0, 0
                terms: dict[str, float] = {}
                optimizer.zero_grad(set_to_none=True)
                for i, chunk in enumerate(_chunks(perm, config.batch_size)):
                    if mixer is not None and config.mix_mode == "pair" and len(chunk) % 2:
                        # pair mode mixes element i with B-1-i: an odd last example sits out
                        chunk = chunk[:-1]
                        if not len(chunk):
                            continue
                    inputs, target = self._batch(chunk)
                    params = None
                    if mixer is not None and mixer.active(epoch):
                        hw = tuple(inputs[image_input].shape[-2:]) if image_input else None
                        params = mixer.sample(len(chunk), hw, epoch)  # type: ignore[arg-type]
                        if image_input is not None:
                            inputs[image_input] = mixer.mix_images(inputs[image_input], params)
                    hook_state["params"] = params if image_input is None else None
                    with self._autocast():
                        if distiller is None:
                            logits = step_model(**inputs)
                            loss = self._loss(logits, target, mixer, params, epoch)
                        else:
                            logits, traced = step_model(**inputs, **{"__trace": True})
                            loss = self._loss(logits, target, mixer, params, epoch)
                            extra, parts = distiller(logits, traced, inputs)
                            loss = loss + extra
                            for name, part in parts.items():
                                terms[name] = terms.get(name, 0.0) + part * len(chunk)
                    (loss / config.accumulate).backward()
                    last = (i + 1) % config.accumulate == 0 or (i + 1) == batches
                    if last:
                        if config.grad_clip is not None:
                            torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
                        optimizer.step()
                        schedule.step()
                        optimizer.zero_grad(set_to_none=True)
                    value = float(loss.detach())
                    total += value * len(chunk)
                    seen += len(chunk)
                    if self.progress is not None:
                        self.progress.batch(value)
                    lifecycle.check()
                hook_state["params"] = None
                if self.distributed is not None:
                    total, seen_all = self.distributed.sum(total, seen)
                    seen = int(seen_all)
                elapsed = time.perf_counter() - started
                if self.distributed is not None and terms:
                    names = sorted(terms)
                    summed = self.distributed.sum(*(terms[n] for n in names))
                    terms = dict(zip(names, summed, strict=True))
                metrics = {
                    "train_loss": total / max(seen, 1),
                    **{name: value / max(seen, 1) for name, value in terms.items()},
                    **self.evaluate(model, val, prefix="val"),
                    "lr": optimizer.param_groups[0]["lr"],
                    "samples_per_s": seen / elapsed if elapsed > 0 else 0.0,
                }
                if self.log is not None:
                    self.log(epoch, metrics)
                value = metrics.get(self.monitor, math.nan)
                if best_epoch < 0 or _better(
                    value, best.get(self.monitor, math.nan), self.monitor_low
                ):
                    best, best_epoch, bad_epochs = metrics, epoch, 0
                    best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
                    if best_path is not None:
                        best_path.parent.mkdir(parents=True, exist_ok=True)
                        replace_atomically(best_path, model.write_safetensors, write_through=False)
                else:
                    bad_epochs += 1
                if state_path is not None:  # what a resumed fit needs to go on exactly
                    state = {  # tensors, numbers and plain containers: read back weights-only
                        "epoch": epoch,
                        "model": model.state_dict(),
                        "optimizer": optimizer.state_dict(),
                        "schedule": schedule.state_dict(),
                        "order": order.get_state(),
                        "mix": mixer.generator.get_state() if mixer is not None else None,
                        "torch_rng": torch.get_rng_state(),
                        "best": {name: float(value) for name, value in best.items()},
                        "best_epoch": best_epoch,
                        "bad_epochs": bad_epochs,
                        "best_state": best_state,
                        "metrics": metrics,
                    }
                    state_path.parent.mkdir(parents=True, exist_ok=True)
                    replace_atomically(
                        state_path, functools.partial(_save_state, state), write_through=False
                    )
                if config.early_stop_metric is not None and bad_epochs >= config.patience:
                    stopped = True
                    break
        finally:
            for hook in hooks:
                hook.remove()
        lifecycle.check()  # a signal during the last batch's bookkeeping
        tested: dict[str, float] = {}
        if test is not None and len(test) and best_state is not None:
            model.load_state_dict(best_state)
            tested = self.evaluate(model, test, prefix="test")
        return FitResult(best_epoch, best, epoch + 1, stopped, best_path, tested, metrics)

    # -- pieces -----------------------------------------------------------------------------------

    def _image_input(self) -> str | None:
        images = self.spec.image_inputs()
        return images[0] if images else None

    def _batch(self, indices: np.ndarray) -> tuple[dict[str, Tensor], Tensor]:
        rows = torch.tensor(indices, dtype=torch.int64)  # (split arrays are read-only)
        inputs = {
            name: tensor[rows].to(self.device, non_blocking=True)
            for name, tensor in self.data.inputs.items()
        }
        return inputs, self.data.targets[rows].to(self.device, non_blocking=True)

    def _autocast(self) -> contextlib.AbstractContextManager[Any]:
        if self.amp:
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def _loss(
        self,
        logits: Tensor,
        target: Tensor,
        mixer: Mixer | None,
        params: MixParams | None,
        epoch: int,
    ) -> Tensor:
        logits = logits.float()
        if self.data.task == "classify":
            if mixer is not None and params is not None:
                return soft_target_cross_entropy(logits, mixer.targets(target, params))
            return F.cross_entropy(logits, target, label_smoothing=self.config.label_smoothing)
        return F.cross_entropy(logits.flatten(0, -2), target.flatten(), ignore_index=-100)

    @torch.no_grad()
    def evaluate(
        self, model: torch.nn.Module, indices: np.ndarray, prefix: str
    ) -> dict[str, float]:
        """Loss and accuracy on ``indices``, never mixed: ``{prefix}_loss`` and, by task,
        ``_acc`` (classify), ``_ppl`` (language modelling), ``_token_acc`` (seq2seq)."""
        was_training = model.training
        model.eval()
        loss_sum, right, count = 0.0, 0, 0
        for chunk in _chunks(indices, max(1, 2 * self.config.batch_size)):
            lifecycle.check()
            inputs, target = self._batch(chunk)
            with self._autocast():
                logits = model(**inputs).float()
            if self.data.task == "classify":
                loss_sum += float(F.cross_entropy(logits, target, reduction="sum"))
                right += int((logits.argmax(-1) == target).sum())
                count += len(chunk)
            else:
                flat, goal = logits.flatten(0, -2), target.flatten()
                keep = goal != -100
                loss_sum += float(F.cross_entropy(flat, goal, ignore_index=-100, reduction="sum"))
                right += int((flat.argmax(-1)[keep] == goal[keep]).sum())
                count += int(keep.sum())
        model.train(was_training)
        loss = loss_sum / max(count, 1)
        loss_name, metric_name = evaluation_metrics(self.data.task, prefix)
        if self.data.task == "lm":
            return {loss_name: loss, metric_name: math.exp(min(loss, 700.0))}
        return {loss_name: loss, metric_name: right / max(count, 1)}


def _save_state(state: dict[str, Any], path: str) -> None:
    torch.save(state, path)


class StateError(UserInputError):
    """A training state file (``state.pt``) that cannot be resumed from."""


_STATE_KEYS = frozenset(
    {"epoch", "model", "optimizer", "schedule", "order", "mix", "torch_rng", "best",
     "best_epoch", "bad_epochs", "best_state"}
)  # fmt: skip


def load_state(path: Path) -> dict[str, Any]:
    """The training state ``Trainer.fit`` wrote to ``path``, read weights-only: tensors, numbers,
    strings and plain containers. A file holding any other object is refused unread, since
    unpickling an object can run code of the file's choosing."""
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        found = re.search(r"GLOBAL ([\w.]+)", str(exc))
        raise StateError(
            f"the training state {path} holds more than tensors, numbers and plain containers "
            f"({f'it calls {found[1]}' if found else 'an object archlab never writes'}); archlab "
            "refuses to load it, since unpickling it could run code. It was not written by "
            "archlab: remove it, and start the run again instead of resuming it"
        ) from None
    except (OSError, RuntimeError, EOFError, ValueError) as exc:
        raise StateError(
            f"the training state {path} cannot be read ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0] if str(exc) else 'no detail'}): it is damaged or "
            "truncated; start the run again instead of resuming it"
        ) from None
    lacking = sorted(_STATE_KEYS - saved.keys()) if isinstance(saved, dict) else ["a mapping"]
    if lacking:
        raise StateError(
            f"{path} is not a training state archlab wrote (it lacks {', '.join(lacking)}); "
            "start the run again instead of resuming it"
        )
    return saved


def _check_weights(model: torch.nn.Module, weights: Any) -> None:
    """Check a training state's weights (names, shapes, dtypes) before they are loaded, so a
    mismatch names the tensor instead of raising torch's RuntimeError."""
    if not isinstance(weights, dict) or not all(isinstance(v, Tensor) for v in weights.values()):
        raise StateError("the training state's model weights are not a mapping of names to tensors")
    problems = tensor_mismatches(tensor_table(model.state_dict()), tensor_table(weights))
    if problems:
        raise StateError(
            f"the training state's weights do not fit the run's spec ({problems}): it belongs "
            "to another run or was altered; start the run again instead of resuming it"
        )


def _chunks(indices: np.ndarray, size: int) -> Iterator[np.ndarray]:
    for start in range(0, len(indices), size):
        yield indices[start : start + size]


def _better(value: float, best: float, low: bool) -> bool:
    """Whether ``value`` improves on ``best`` (``low``: lower is better); NaN never does."""
    if math.isnan(value):
        return False
    if math.isnan(best):
        return True
    return value < best if low else value > best
