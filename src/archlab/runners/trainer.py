"""One model's training on one split: the loop behind every fold of ``arch train``.

``Trainer.fit`` builds the spec's module from an explicit seed, trains it with AdamW and a
warm-up + cosine schedule over the split's training indices (mixup / CutMix on training batches
only, gradient accumulation and clipping, bf16 autocast on CUDA), evaluates it on the validation
indices after every epoch, keeps the best weights (by the early-stopping metric, else
``val_loss``), stops early when asked, and finally evaluates the best weights once on the test
indices. Every random number comes from generators seeded from the configuration, so on the CPU
a run reproduces bit for bit.

``fit`` is a short sequence of steps, each usable (and tested) alone: ``setup`` (the model and
its distiller, the optimizer and schedule, the distributed / compiled wrap, mixup), ``run_epoch``
(``train_epoch``, then ``evaluate`` on the validation indices), ``record_epoch`` (the best epoch
and its checkpoint, ``write_checkpoint``), and the resume state: ``training_state`` is what
``state.pt`` holds, ``save_state`` / ``load_state`` write and read it, ``restore_state`` puts it
back into a fresh set-up.
"""

from __future__ import annotations

import contextlib
import difflib
import functools
import math
import pickle
import re
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.optim.lr_scheduler import LambdaLR

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
from archlab.runners.init import InitPlan, apply_init
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


class TokenMix:
    """Mixup on token embeddings, as a forward hook on every ``TokenEmbedding``: mixes their
    output with the current batch's ``params`` (``None``: no mixing, as in evaluation)."""

    def __init__(self, mixer: Mixer | None) -> None:
        self.mixer = mixer
        self.params: MixParams | None = None

    def __call__(self, _module: torch.nn.Module, _inputs: Any, out: Tensor) -> Tensor:
        if self.params is None or self.mixer is None:
            return out
        return self.mixer.mix_features(out, self.params)


@dataclass
class FitParts:
    """What ``Trainer.setup`` builds for one fit: the model and what trains it. ``step_model``
    is what training batches run through (the model, maybe wrapped for DDP or compiled);
    ``order`` draws each epoch's permutation; ``shard`` keeps this rank's share of it;
    ``batches`` is the number of training batches per epoch."""

    model: CompiledModel
    step_model: Any
    distiller: Distiller | None
    optimizer: torch.optim.Optimizer
    schedule: LambdaLR
    order: torch.Generator
    shard: Callable[[np.ndarray], np.ndarray]
    batches: int
    mixer: Mixer | None = None
    image_input: str | None = None
    hooks: list[torch.utils.hooks.RemovableHandle] = field(default_factory=list)
    token_mix: TokenMix = field(init=False)

    def __post_init__(self) -> None:
        self.token_mix = TokenMix(self.mixer)

    def remove_hooks(self) -> None:
        for hook in self.hooks:
            hook.remove()
        self.hooks = []


@dataclass
class Standing:
    """Where a fit stands: the first epoch still to run, the best epoch so far (``-1``: none)
    with its metrics and a copy of its weights, the epochs since it, the last epoch's metrics."""

    start: int = 0
    best: dict[str, float] = field(default_factory=dict)
    best_epoch: int = -1
    bad_epochs: int = 0
    best_state: dict[str, Tensor] | None = None
    metrics: dict[str, float] = field(default_factory=dict)


def _whole(order: np.ndarray) -> np.ndarray:
    """A single process's share of an epoch's order: all of it."""
    return order


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
        init: tuple[Mapping[str, Tensor], InitPlan] | None = None,
    ) -> None:
        self.spec, self.data, self.config = spec, data, config
        self.init = init  # --init: the weights and what of them the model takes
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
        parts = self.setup(train, resumed=resume is not None)
        standing = Standing()
        if resume is not None:
            standing = restore_state(
                parts, load_state(resume) if isinstance(resume, Path) else resume
            )
        epoch, stopped = standing.start - 1, False
        try:
            for epoch in range(standing.start, self.config.epochs):
                metrics = self.run_epoch(parts, train, val, epoch)
                if self.log is not None:
                    self.log(epoch, metrics)
                self.record_epoch(parts.model, standing, epoch, metrics)
                if self.out_dir is not None:  # what a resumed fit needs to go on exactly
                    save_state(self.out_dir / STATE_FILE, training_state(parts, standing, epoch))
                if self.out_of_patience(standing):
                    stopped = True
                    break
        finally:
            parts.remove_hooks()
        lifecycle.check()  # a signal during the last batch's bookkeeping
        tested: dict[str, float] = {}
        if test is not None and len(test) and standing.best_state is not None:
            parts.model.load_state_dict(standing.best_state)
            tested = self.evaluate(parts.model, test, prefix="test")
        return FitResult(
            standing.best_epoch,
            standing.best,
            epoch + 1,
            stopped,
            self.best_path,
            tested,
            standing.metrics,
        )

    def out_of_patience(self, standing: Standing) -> bool:
        """Whether early stopping ends the fit: ``patience`` epochs without a better one."""
        stop = self.config.early_stop_metric is not None
        return stop and standing.bad_epochs >= self.config.patience

    # -- set-up -----------------------------------------------------------------------------------

    @property
    def best_path(self) -> Path | None:
        """Where the best epoch's weights go (``best.safetensors`` in ``out_dir``), if anywhere."""
        return self.out_dir / "best.safetensors" if self.out_dir else None

    def setup(self, train: np.ndarray, *, resumed: bool = False) -> FitParts:
        """Everything one fit over ``train`` trains with, freshly seeded (``resumed``: the
        weights come from a training state, so the teacher's are not copied in)."""
        model, distiller = self.setup_model(resumed=resumed)
        shard = self.distributed.shard if self.distributed is not None else _whole
        batches = math.ceil(len(shard(train)) / self.config.batch_size)
        optimizer, schedule = self.setup_optimizer(model, batches)
        mixer = self.setup_mixer()
        parts = FitParts(
            model=model,
            step_model=self.wrap(model),
            distiller=distiller,
            optimizer=optimizer,
            schedule=schedule,
            order=torch.Generator().manual_seed(self.data_seed),
            shard=shard,
            batches=batches,
            mixer=mixer,
            image_input=self._image_input(),
        )
        if mixer is not None and parts.image_input is None:
            # token inputs: mixup acts on the embeddings (CutMix was refused by the config check)
            parts.hooks = [
                module.register_forward_hook(parts.token_mix)
                for module in model.modules()
                if isinstance(module, TokenEmbedding)
            ]
        return parts

    def setup_model(self, *, resumed: bool = False) -> tuple[CompiledModel, Distiller | None]:
        """The spec's module from the init seed (then ``--init``'s weights), and for DynamicViT
        stages the distiller that adds their objectives (the model starts from the dense teacher
        unless ``resumed``)."""
        config = self.config
        model = compile_spec(self.spec, device=self.device, seed=self.init_seed)
        if self.init is not None and not resumed:
            apply_init(model, *self.init)
        if not has_dynamic(model):
            return model, None
        teacher = self.teacher.to(self.device) if self.teacher is not None else None
        if teacher is not None and not resumed:
            init_from_teacher(model, teacher, self.teacher_name)
        distiller = Distiller(
            model,
            teacher,
            ratio_weight=config.ratio_weight,
            distill_weight=config.distill_weight,
            token_distill_weight=config.token_distill_weight,
        )
        return model, distiller

    def setup_optimizer(
        self, model: torch.nn.Module, batches: int
    ) -> tuple[torch.optim.Optimizer, LambdaLR]:
        """AdamW and its warm-up + cosine schedule, stepped once per ``accumulate`` batches of
        the ``batches`` an epoch has."""
        config = self.config
        steps_per_epoch = math.ceil(batches / config.accumulate)
        optimizer = build_optimizer(model, lr=config.lr, weight_decay=config.weight_decay)
        schedule = warmup_cosine(
            optimizer,
            warmup_steps=round(config.warmup * steps_per_epoch),
            total_steps=config.epochs * steps_per_epoch,
            lr=config.lr,
            min_lr=config.min_lr,
        )
        return optimizer, schedule

    def setup_mixer(self) -> Mixer | None:
        """Mixup / CutMix for a classifier's training batches, if configured."""
        setting = self.config.mixup_setting()
        if setting is None or self.data.task != "classify":
            return None
        generator = torch.Generator().manual_seed(self.data_seed + 1)
        return Mixer(setting, self.data.classes or 0, generator)

    def wrap(self, model: torch.nn.Module) -> Any:
        """What the training steps call: the model, under DistributedDataParallel when
        distributed and ``torch.compile`` when configured (evaluation uses the bare model)."""
        step_model: Any = model
        if self.distributed is not None:
            from torch.nn.parallel import DistributedDataParallel

            ids = [self.device.index] if self.device.type == "cuda" else None
            step_model = DistributedDataParallel(model, device_ids=ids)
        if self.config.compile:
            step_model = torch.compile(step_model)
        return step_model

    # -- one epoch --------------------------------------------------------------------------------

    def run_epoch(
        self, parts: FitParts, train: np.ndarray, val: np.ndarray, epoch: int
    ) -> dict[str, float]:
        """Train one epoch over ``train``, then evaluate on ``val``: the epoch's metrics, in
        the order they are logged."""
        started = time.perf_counter()
        trained, seen = self.train_epoch(parts, train, epoch)
        elapsed = time.perf_counter() - started
        return {
            **trained,
            **self.evaluate(parts.model, val, prefix="val"),
            "lr": parts.optimizer.param_groups[0]["lr"],
            "samples_per_s": seen / elapsed if elapsed > 0 else 0.0,
        }

    def train_epoch(
        self, parts: FitParts, train: np.ndarray, epoch: int
    ) -> tuple[dict[str, float], int]:
        """One pass over ``train`` in the order's next permutation: ``train_loss`` and the
        distiller's objectives (means over all ranks), and the examples seen."""
        config, model, mixer = self.config, parts.model, parts.mixer
        model.train()
        set_keep_rates(model, epoch, config.keep_warmup, config.keep_ramp)
        perm = parts.shard(train[torch.randperm(len(train), generator=parts.order).numpy()])
        total, seen = 0.0, 0
        terms: dict[str, float] = {}
        parts.optimizer.zero_grad(set_to_none=True)
        for i, chunk in enumerate(_chunks(perm, config.batch_size)):
            if mixer is not None and config.mix_mode == "pair" and len(chunk) % 2:
                # pair mode mixes element i with B-1-i: an odd last example sits out
                chunk = chunk[:-1]
                if not len(chunk):
                    continue
            loss = self._step_loss(parts, chunk, epoch, terms)
            (loss / config.accumulate).backward()
            if (i + 1) % config.accumulate == 0 or (i + 1) == parts.batches:
                if config.grad_clip is not None:
                    torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
                parts.optimizer.step()
                parts.schedule.step()
                parts.optimizer.zero_grad(set_to_none=True)
            value = float(loss.detach())
            total += value * len(chunk)
            seen += len(chunk)
            if self.progress is not None:
                self.progress.batch(value)
            lifecycle.check()
        parts.token_mix.params = None
        if self.distributed is not None:
            total, seen_all = self.distributed.sum(total, seen)
            seen = int(seen_all)
            if terms:
                names = sorted(terms)
                summed = self.distributed.sum(*(terms[n] for n in names))
                terms = dict(zip(names, summed, strict=True))
        return {
            "train_loss": total / max(seen, 1),
            **{name: value / max(seen, 1) for name, value in terms.items()},
        }, seen

    def _step_loss(
        self, parts: FitParts, chunk: np.ndarray, epoch: int, terms: dict[str, float]
    ) -> Tensor:
        """One training batch's forward pass and loss (mixed when mixup is on; with the
        distiller's objectives, whose sums ``terms`` gathers)."""
        inputs, target = self._batch(chunk)
        mixer, image_input = parts.mixer, parts.image_input
        params = None
        if mixer is not None and mixer.active(epoch):
            hw = tuple(inputs[image_input].shape[-2:]) if image_input else None
            params = mixer.sample(len(chunk), hw, epoch)  # type: ignore[arg-type]
            if image_input is not None:
                inputs[image_input] = mixer.mix_images(inputs[image_input], params)
        parts.token_mix.params = params if image_input is None else None
        with self._autocast():
            if parts.distiller is None:
                logits = parts.step_model(**inputs)
                return self._loss(logits, target, mixer, params, epoch)
            logits, traced = parts.step_model(**inputs, **{"__trace": True})
            loss = self._loss(logits, target, mixer, params, epoch)
            extra, named = parts.distiller(logits, traced, inputs)
            for name, part in named.items():
                terms[name] = terms.get(name, 0.0) + part * len(chunk)
            return loss + extra

    # -- the best epoch ---------------------------------------------------------------------------

    def record_epoch(
        self, model: CompiledModel, standing: Standing, epoch: int, metrics: dict[str, float]
    ) -> None:
        """Record ``epoch``'s ``metrics`` in ``standing``; when the monitored metric improves (or
        on the first epoch), keep a copy of the weights and checkpoint them to ``best_path``."""
        standing.metrics = metrics
        value = metrics.get(self.monitor, math.nan)
        best = standing.best.get(self.monitor, math.nan)
        if standing.best_epoch >= 0 and not _better(value, best, self.monitor_low):
            standing.bad_epochs += 1
            return
        standing.best, standing.best_epoch, standing.bad_epochs = metrics, epoch, 0
        standing.best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        if self.best_path is not None:
            write_checkpoint(model, self.best_path)

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


# -- checkpoints and resume state -----------------------------------------------------------------


def write_checkpoint(model: CompiledModel, path: Path) -> None:
    """Write ``model``'s weights to ``path`` (safetensors), atomically, making its folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    replace_atomically(path, model.write_safetensors, write_through=False)


def training_state(parts: FitParts, standing: Standing, epoch: int) -> dict[str, Any]:
    """What ``state.pt`` holds after ``epoch``: everything a resumed fit needs to go on
    exactly (tensors, numbers and plain containers, so it reads back weights-only)."""
    return {
        "epoch": epoch,
        "model": parts.model.state_dict(),
        "optimizer": parts.optimizer.state_dict(),
        "schedule": parts.schedule.state_dict(),
        "order": parts.order.get_state(),
        "mix": parts.mixer.generator.get_state() if parts.mixer is not None else None,
        "torch_rng": torch.get_rng_state(),
        "best": {name: float(value) for name, value in standing.best.items()},
        "best_epoch": standing.best_epoch,
        "bad_epochs": standing.bad_epochs,
        "best_state": standing.best_state,
        "metrics": standing.metrics,
    }


def save_state(path: Path, state: dict[str, Any]) -> None:
    """Write a ``training_state`` to ``path`` atomically, making its folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    replace_atomically(path, functools.partial(_save_state, state), write_through=False)


def restore_state(parts: FitParts, saved: dict[str, Any]) -> Standing:
    """Load a ``training_state`` into ``parts`` (weights, optimizer, schedule, generators, the
    global torch RNG) and return where the fit stood; a state that does not fit is refused
    with a ``StateError`` naming the problem."""
    for key in ("model", "best_state"):
        if key == "model" or saved[key] is not None:
            _check_weights(parts.model, saved[key])
    try:
        parts.model.load_state_dict(saved["model"])
        parts.optimizer.load_state_dict(saved["optimizer"])
        parts.schedule.load_state_dict(saved["schedule"])
        parts.order.set_state(saved["order"])
        if parts.mixer is not None and saved["mix"] is not None:
            parts.mixer.generator.set_state(saved["mix"])
        torch.set_rng_state(saved["torch_rng"])
        standing = Standing(
            start=int(saved["epoch"]) + 1,
            best={str(name): float(value) for name, value in saved["best"].items()},
            best_epoch=int(saved["best_epoch"]),
            bad_epochs=int(saved["bad_epochs"]),
        )
    except (KeyError, TypeError, ValueError, RuntimeError, AttributeError) as exc:
        raise StateError(
            f"the training state does not fit this run ({type(exc).__name__}: {exc}); "
            "it belongs to another run or was altered: start the run again instead"
        ) from None
    standing.best_state = saved["best_state"]
    standing.metrics = saved.get("metrics", {})
    return standing


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
