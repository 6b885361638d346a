"""``arch train``: train a spec with cross-validation and mixup, recorded in the registry."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from archlab.cli.formatting import dumps
from archlab.cli.options import DEVICE, device_option, parse_tags, registry_option, threads_option

# (flag, config field, click options); flags left out keep the config file's (or default) value.
# Each flag shows the configuration's default, or the "default" text given here.
_FLAGS: list[tuple[str, str, dict[str, Any]]] = [
    (
        "--data",
        "data",
        {
            "metavar": "SOURCE",
            "help": "digits, npz:PATH, imagefolder:PATH, text:PATH or seq2seq:copy|reverse|sort.",
        },
    ),
    ("--epochs", "epochs", {"type": int, "help": "Passes over the training data."}),
    ("--batch-size", "batch_size", {"type": int, "help": "Examples per micro-batch."}),
    ("--lr", "lr", {"type": float, "help": "Peak learning rate (AdamW), reached after --warmup."}),
    (
        "--min-lr",
        "min_lr",
        {"type": float, "help": "The learning rate the cosine decays to (at most --lr)."},
    ),
    ("--weight-decay", "weight_decay", {"type": float, "help": "AdamW's decoupled weight decay."}),
    (
        "--warmup",
        "warmup",
        {
            "type": float,
            "help": "Epochs of linear learning-rate warm-up (fractions allowed), shorter than "
            "--epochs. A run of a few epochs spends much of itself in the warm-up, below the "
            "peak --lr.",
            "default": "2, or a tenth of --epochs when that is shorter",
        },
    ),
    ("--seed", "seed", {"type": int, "help": "Initialisation, data-order and augmentation seed."}),
    (
        "--grad-clip",
        "grad_clip",
        {"type": float, "help": "Clip the gradient norm to this value ('null' in --config: off)."},
    ),
    (
        "--accumulate",
        "accumulate",
        {"type": int, "help": "Gradient accumulation: micro-batches per optimiser step."},
    ),
    (
        "--folds",
        "folds",
        {
            "type": int,
            "help": "K-fold cross-validation (K >= 2).",
            "default": "off: one hold-out split",
        },
    ),
    ("--repeats", "repeats", {"type": int, "help": "Repeated K-fold: R repeats (needs --folds)."}),
    (
        "--cv-seed",
        "cv_seed",
        {"type": int, "help": "Seed of the splits (fixed while --seed varies)."},
    ),
    ("--val-size", "val_size", {"type": float, "help": "Hold-out fraction without --folds."}),
    (
        "--test-size",
        "test_size",
        {"type": float, "help": "Held-out test fraction.", "default": "no test set"},
    ),
    (
        "--fold",
        "fold",
        {"type": int, "help": "Run only this fold (0-based).", "default": "every fold"},
    ),
    (
        "--cv-group",
        "cv_group",
        {"metavar": "ID", "help": "Join this existing CV group.", "default": "a new group"},
    ),
    (
        "--mixup",
        "mixup",
        {"type": float, "metavar": "ALPHA", "help": "Mixup's Beta alpha; 0: off."},
    ),
    (
        "--cutmix",
        "cutmix",
        {"type": float, "metavar": "ALPHA", "help": "CutMix's Beta alpha; 0: off."},
    ),
    (
        "--cutmix-minmax",
        "cutmix_minmax",
        {
            "type": float,
            "nargs": 2,
            "metavar": "MIN MAX",
            "help": "CutMix box-size ratio range, used instead of --cutmix's alpha.",
            "default": "off",
        },
    ),
    ("--mix-prob", "mix_prob", {"type": float, "help": "Chance a batch is mixed at all."}),
    (
        "--switch-prob",
        "switch_prob",
        {"type": float, "help": "Chance of CutMix rather than mixup when both are on."},
    ),
    (
        "--mix-mode",
        "mix_mode",
        {
            "type": click.Choice(["batch", "pair", "elem"]),
            "help": "Mix parameters drawn per batch, per pair or per element.",
        },
    ),
    (
        "--label-smoothing",
        "label_smoothing",
        {"type": float, "help": "Label smoothing of the class targets."},
    ),
    (
        "--mixup-off-epoch",
        "mixup_off_epoch",
        {"type": int, "help": "Stop mixing from this epoch on.", "default": "never"},
    ),
    (
        "--early-stop",
        "early_stop_metric",
        {
            "metavar": "METRIC",
            "help": "Stop when METRIC (val_loss, val_acc, ...) has not improved for --patience "
            "epochs.",
            "default": "train every epoch",
        },
    ),
    (
        "--patience",
        "patience",
        {"type": int, "help": "Epochs without improvement for --early-stop."},
    ),
    (
        "--init",
        "init",
        {
            "metavar": "WEIGHTS|RUN",
            "help": "Start from these weights: a .safetensors file (arch compile -o, arch import, "
            "a checkpoint) or a run's checkpoint; heads and pruning stages may start fresh.",
            "default": "the spec's own initialisation",
        },
    ),
    (
        "--teacher",
        "teacher",
        {
            "metavar": "RUN|WEIGHTS",
            "help": "DynamicViT: the dense teacher, a run, a CV group (fold i teaches fold i) or a "
            "weights file (a pretrained model from arch import).",
            "default": "train the spec without pruning first",
        },
    ),
    ("--ratio-weight", "ratio_weight", {"type": float, "help": "DynamicViT keep-ratio loss."}),
    ("--distill-weight", "distill_weight", {"type": float, "help": "KL to the teacher."}),
    (
        "--token-distill-weight",
        "token_distill_weight",
        {"type": float, "help": "DynamicViT: distillation loss on the kept tokens."},
    ),
    ("--keep-warmup", "keep_warmup", {"type": int, "help": "EViT: epochs at keep 1.0."}),
    ("--keep-ramp", "keep_ramp", {"type": int, "help": "EViT: epochs of cosine keep decay."}),
    (
        "--device",
        "device",
        {"type": DEVICE, "help": "auto (CUDA when there is one), cpu, cuda or cuda:N."},
    ),
    (
        "--amp",
        "amp",
        {
            "type": click.Choice(["auto", "bf16", "off"]),
            "help": "bf16 autocast: auto (on CUDA), bf16 (any device) or off.",
        },
    ),
    ("--workers", "workers", {"type": int, "help": "Data-loading worker processes."}),
]


def _default_text(name: str, options: dict[str, Any]) -> str:
    """What a flag left out gives: the configuration's default, unless the flag says."""
    from archlab.runners.config import TrainConfig

    if "default" in options:
        return str(options["default"])
    value = TrainConfig.model_fields[name].default
    return f"{value:g}" if isinstance(value, float) else str(value)


def _flags(f: Any) -> Any:
    for flag, name, options in reversed(_FLAGS):
        given = {k: v for k, v in options.items() if k not in ("default", "help")}
        # the default goes into the help text (left out, the flag keeps --config's value)
        text = f"{options['help']}  [default: {_default_text(name, options)}]"
        f = click.option(flag, name, default=None, help=text, **given)(f)
    return f


@click.command("train")
@click.argument("spec", type=click.Path(dir_okay=False, path_type=Path), required=False)
@click.option("--config", "config_file", type=click.Path(dir_okay=False, path_type=Path),
              help="A training config (JSON); flags override it.")  # fmt: skip
@_flags
@click.option("--fold-seeds/--same-init", default=None,
              help="Seed each fold's initialisation with seed + fold [default: same init].")  # fmt: skip
@click.option("--compile/--no-compile", "compile_model", default=None,
              help="Train through torch.compile [default: no-compile].")  # fmt: skip
@threads_option
@click.option("--name", "run_name", metavar="NAME",
              help="Name the runs (recorded as the tag name on every run and with the CV group).")  # fmt: skip
@click.option("--tag", "tag_pairs", metavar="KEY=VALUE", multiple=True,
              help="Tag every run of this training (repeatable).")  # fmt: skip
@click.option("--quiet", is_flag=True, help="Only the final summary.")
@click.option("--json", "as_json", is_flag=True,
              help="No display; print one JSON object: the run ids, the CV group and the "
              "summary metrics.")  # fmt: skip
@click.option("--resume", "resume_id", metavar="RUN",
              help="Continue an interrupted run from its last finished epoch (no SPEC, no flags).")  # fmt: skip
@click.option("--rerun", "rerun_id", metavar="RUN",
              help="Train a completed run again from what the registry recorded (spec, "
              "configuration, data hash, split, seeds, threads, determinism), as a new run "
              "tagged reruns=RUN, on the recorded CPU thread count unless --threads says (no "
              "SPEC, no other flags).")  # fmt: skip
@registry_option
def train_command(
    spec: Path | None,
    config_file: Path | None,
    fold_seeds: bool | None,
    compile_model: bool | None,
    threads: int | None,
    run_name: str | None,
    tag_pairs: tuple[str, ...],
    quiet: bool,
    as_json: bool,
    resume_id: str | None,
    rerun_id: str | None,
    registry_url: str | None,
    **flags: Any,
) -> None:
    """Train SPEC and record every run in the registry.

    The learning rate rises linearly for --warmup epochs (2, or a tenth of --epochs when that is
    shorter), then follows a cosine from --lr down to --min-lr: a run of only a few epochs, or
    one with a --warmup close to --epochs, spends most of its steps warming up, below the peak
    --lr. Every flag left out keeps the --config file's value, else the default shown.

    \b
    arch train specs/vit-tiny-digits.json --data digits --folds 5 --mixup 0.2
    arch train specs/gpt-tiny.json --data text:README.md --epochs 5
    arch train specs/vit-tiny-digits.json --epochs 1 --json | jq .group.id
    arch train --rerun RUN             # the same training again, bit for bit on one machine
    """
    from archlab.errors import UserInputError
    from archlab.registry import Registry
    from archlab.runners.config import load_train_config
    from archlab.runners.distributed import is_main_process
    from archlab.runners.progress import make_progress
    from archlab.runners.rerun import rerun
    from archlab.runners.threads import configure_threads
    from archlab.runners.train import resume, train
    from archlab.textsafe import printable

    given = [x for x in (spec, resume_id, rerun_id) if x is not None]
    if len(given) != 1:
        raise UserInputError(
            "give a SPEC to train, or --resume RUN to continue an interrupted run, or --rerun "
            "RUN to train a recorded run again (only one: not both)"
        )
    overrides = {
        k: (tuple(v) if isinstance(v, list | tuple) and v else v) for k, v in flags.items()
    }
    overrides = {k: v for k, v in overrides.items() if v not in (None, ())}
    if fold_seeds is not None:
        overrides["fold_seeds"] = fold_seeds
    if compile_model is not None:
        overrides["compile"] = compile_model
    if run_name is not None:
        overrides["name"] = run_name
    if tag_pairs:
        overrides["tags"] = parse_tags(tag_pairs)
    if resume_id is not None and (overrides or config_file is not None):
        raise UserInputError(
            "--resume continues a run with the configuration it recorded: drop the other flags"
        )
    if rerun_id is not None and (overrides or config_file is not None):
        raise UserInputError(
            "--rerun trains a run again with the configuration it recorded: drop the other "
            "flags (--threads, --quiet, --json and --registry may stay)"
        )
    config = load_train_config(config_file, overrides)
    if rerun_id is None:  # a re-run trains on the recorded thread count unless --threads says
        configure_threads(threads)

    with Registry(registry_url) as registry:
        # a live display on a terminal, plain lines in logs and pipes, nothing with --quiet
        main = is_main_process()  # under torchrun, rank 0 alone shows and records
        try:
            with make_progress(quiet or as_json or not main) as progress:
                if resume_id is not None:
                    report = resume(resume_id, registry, progress=progress)
                elif rerun_id is not None:
                    report = rerun(rerun_id, registry, progress=progress, threads=threads)
                else:
                    report = train(spec, config, registry, progress=progress)
        except KeyboardInterrupt as exc:  # Ctrl-C or SIGTERM: recorded, one line, 130 / 143
            _interrupted(exc)
        if not main:
            return
        if as_json:
            click.echo(dumps(_train_json(report, registry)))
            return
        click.echo(printable(f"{report.spec.name}: {report.data.description}"))
        if rerun_id is not None:
            click.echo(f"re-run of run {rerun_id}: run {report.runs[0]} (tag reruns={rerun_id})")
        if report.init is not None:
            fresh = ", ".join(report.init.fresh) or "none"
            click.echo(
                printable(
                    f"--init {report.init.source}: {len(report.init.loaded)} tensors loaded; "
                    f"started fresh: {fresh}"
                )
            )
        for line in _summary_lines(report, registry):
            click.echo(line)


def _interrupted(exc: KeyboardInterrupt) -> None:
    """One line for an interrupted training (the run is recorded as interrupted), then exit
    128 + the signal: 130 after Ctrl-C, 143 after SIGTERM."""
    from archlab.runners.lifecycle import interrupted_by

    code = interrupted_by(exc)
    cause = "Ctrl-C" if code == 130 else str(exc).removeprefix("interrupted by ")
    run = getattr(exc, "run", None)
    if run is None:
        click.echo(f"interrupted by {cause} before a run started: nothing to continue", err=True)
    else:
        click.echo(
            f"interrupted: run {run} stopped by {cause} and recorded as interrupted; "
            f"continue with: arch train --resume {run}",
            err=True,
        )
    raise SystemExit(code)


def _summary_lines(report: Any, registry: Any) -> list[str]:
    """The end-of-training summary, every value labelled with what it is: each run's best
    epoch (by the metric that chose it) and final values, and a CV group's mean (± sample std)
    of its folds' final values."""
    lines = []
    monitor = (report.config and report.config.early_stop_metric) or "val_loss"
    for run_id, result in zip(report.runs, report.results, strict=True):
        best = "  ".join(f"{k} {v:.4g}" for k, v in result.best.items() if k.startswith("val"))
        final = "  ".join(f"{k} {v:.4g}" for k, v in result.final.items() if k.startswith("val"))
        lines.append(
            f"  run {run_id}: best epoch {result.best_epoch + 1} by {monitor}: {best}; "
            f"final (epoch {result.epochs_run}): {final}"
        )
    if report.group is not None:
        group = registry.group(report.group)
        n = max((a.n for a in group.aggregates.values()), default=0)
        lines.append(
            f"CV group {group.id} ({group.k} folds x {group.repeats}): mean of final values "
            f"over {n} of {group.k * group.repeats} folds"
        )
        for name, agg in group.aggregates.items():
            if name.startswith(("val", "test")):
                if agg.std is None:  # one fold: its sample std is undefined
                    lines.append(f"  {name}: {agg.mean:.4f} ({agg.n} fold)")
                else:
                    lines.append(f"  {name}: {agg.mean:.4f} ± {agg.std:.4f} (n={agg.n})")
    return lines


def _train_json(report: Any, registry: Any) -> dict[str, Any]:
    """``train --json``: the spec, the data, each run's best epoch (1-based, as printed) and
    metrics, and the CV group with each metric's mean, std and n over its completed folds."""
    import torch

    group = registry.group(report.group) if report.group is not None else None
    return {
        "spec": {"name": report.spec.name, "hash": _spec_hash(report.spec)},
        "data": report.data.description,
        "task": report.data.task,
        "threads": torch.get_num_threads(),
        "runs": [
            {
                "id": run_id,
                "best_epoch": result.best_epoch + 1,
                "epochs_run": result.epochs_run,
                "stopped_early": result.stopped_early,
                "best": result.best,
                "test": result.test,
            }
            for run_id, result in zip(report.runs, report.results, strict=True)
        ],
        "group": None
        if group is None
        else {
            "id": group.id,
            "k": group.k,
            "repeats": group.repeats,
            "runs": list(group.runs),
            "aggregates": {
                name: {"mean": a.mean, "std": a.std if a.n > 1 else None, "n": a.n}
                for name, a in group.aggregates.items()
            },
        },
    }


def _spec_hash(spec: Any) -> str:
    from archlab.specs import spec_hash

    return spec_hash(spec)


@click.command("eval")
@click.argument("run_id", metavar="RUN")
@click.option("--data", "data_source", metavar="SOURCE",
              help="Evaluate on all of this data [default: the run's own validation split].")  # fmt: skip
@device_option(None, "auto (CUDA when there is one), cpu, cuda or cuda:N [default: the device "
               "the run recorded].")  # fmt: skip
@threads_option
@click.option("--no-freeze", is_flag=True,
              help="Run the model as trained rather than frozen (by default it is frozen on the "
              "CPU in float32: packed oneDNN linears, equal to float32 rounding).")  # fmt: skip
@click.option("--json", "as_json", is_flag=True,
              help="Print one JSON object: the eval run, the run it evaluates, the metrics.")  # fmt: skip
@registry_option
def eval_command(
    run_id: str,
    data_source: str | None,
    device: str | None,
    threads: int | None,
    no_freeze: bool,
    as_json: bool,
    registry_url: str | None,
) -> None:
    """Evaluate RUN's best checkpoint and record an eval run linked to it.

    \b
    arch eval RUN                      # on the run's own validation split
    arch eval RUN --data npz:test.npz  # on every example of other data
    """
    from archlab.registry import Registry
    from archlab.runners.threads import configure_threads
    from archlab.runners.train import evaluate_run

    configure_threads(threads)
    with Registry(registry_url, create=False) as registry:  # the run to evaluate must exist
        report = evaluate_run(
            run_id, registry, data_source=data_source, device=device, freeze=not no_freeze
        )
    if as_json:
        doc = {
            "run": report.run,
            "evaluates": report.evaluates,
            "data": report.data.description,
            "examples": report.examples,
            "metrics": report.metrics,
            "inference": report.inference,
        }
        click.echo(dumps(doc))
        return
    shown = "  ".join(f"{k} {v:.4g}" for k, v in report.metrics.items())
    click.echo(f"eval run {report.run} of {report.evaluates} on {report.examples} examples")
    click.echo(f"  {shown}")
    click.echo(f"  model {report.inference}")


COMMANDS = [train_command, eval_command]
