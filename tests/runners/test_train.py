"""``arch train`` end to end on small data: what a run records, cross-validation, mixup only on
training batches, exact reproducibility on the CPU, every task, and bad input."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from archlab import load_compiled, load_spec
from archlab.cli.main import cli
from archlab.registry import Registry
from archlab.runners import mixup as mixup_module
from archlab.runners.config import TrainConfig
from archlab.runners.progress import NullProgress
from archlab.runners.train import evaluate_run, resume, train
from archlab.runners.trainer import STATE_FILE

ROOT = Path(__file__).resolve().parents[2]
VIT = ROOT / "specs" / "vit-tiny-digits.json"
SEQ2SEQ = ROOT / "specs" / "transformer-tiny.json"
Doc = dict[str, Any]


def config(**changes: Any) -> TrainConfig:
    base: dict[str, Any] = {"epochs": 2, "warmup": 0.5, "batch_size": 128, "lr": 2e-3}
    return TrainConfig(**{**base, **changes})


def test_a_hold_out_run_records_everything(registry: Registry) -> None:
    report = train(VIT, config(), registry)
    [run_id] = report.runs
    run = registry.get(run_id)
    assert run.status == "completed" and run.cv is None and run.mixup is None
    assert {"train_loss", "val_loss", "val_acc", "lr", "samples_per_s"} <= set(run.metrics)
    assert run.summaries["val_acc"].count == 2  # one point per epoch
    assert run.config["data"] == "digits" and run.config["task"] == "classify"
    assert run.config["data_sha256"] == report.data.content_sha256
    assert run.config["epochs"] == 2 and run.config["device"] == "cpu"
    assert run.tags["best_epoch"] in {"1", "2"}  # epochs count from 1, as on the console
    assert [a.kind for a in run.artifacts].count("training-state") == 1  # for --resume
    [checkpoint] = [a for a in run.artifacts if a.kind == "checkpoint"]
    model = load_compiled(registry.artifacts / checkpoint.path)
    assert model.spec_hash == run.spec_hash


def test_bench_and_train_record_one_device_name(registry: Registry) -> None:
    """One machine, one name: bench runs read the CPU's model name, and so do train runs."""
    from archlab.compiler.devices import device_name
    from archlab.runners.benchmark import benchmark, record_bench

    train_run = registry.get(train(VIT, config(epochs=1), registry).runs[0])
    bench_run = registry.get(
        record_bench(benchmark(VIT, device="cpu", warmup=0, iters=1), registry)
    )
    expected = device_name(torch.device("cpu"))
    assert train_run.config["device_name"] == bench_run.config["device_name"] == expected


def test_k_folds_share_a_group_with_aggregates(registry: Registry) -> None:
    report = train(VIT, config(epochs=1, folds=3), registry)
    assert report.group is not None and len(report.runs) == 3
    group = registry.group(report.group)
    assert (group.k, group.splitter, group.stratified) == (3, "StratifiedKFold", True)
    assert group.aggregates["val_acc"].n == 3
    runs = [registry.get(r) for r in report.runs]
    assert [r.cv.fold for r in runs if r.cv] == [0, 1, 2]
    assert sum(r.cv.n_val for r in runs if r.cv) == 1797  # the val sets partition the data
    vals = [set(f.val.tolist()) for f in report.plan.folds]
    assert not (vals[0] & vals[1]) and not (vals[1] & vals[2])


def test_mixup_touches_training_batches_only(
    registry: Registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    sizes: list[int] = []
    real = mixup_module.Mixer.mix_images

    def spy(self: Any, x: torch.Tensor, p: Any) -> torch.Tensor:
        sizes.append(len(x))
        return real(self, x, p)

    monkeypatch.setattr(mixup_module.Mixer, "mix_images", spy)
    report = train(VIT, config(epochs=2, mixup=0.2, cutmix=1.0), registry)
    n_train = len(report.plan.folds[0].train)
    assert sum(sizes) == 2 * n_train  # every training example, each epoch; never a val batch
    run = registry.get(report.runs[0])
    assert run.mixup is not None and run.mixup.alpha == 0.2 and run.mixup.cutmix_alpha == 1.0


def test_identical_seeds_give_identical_metrics(tmp_path: Path) -> None:
    histories = []
    for name in ("a", "b"):
        with Registry(f"sqlite:///{tmp_path / name}.db", artifacts=tmp_path / name) as reg:
            report = train(VIT, config(mixup=0.2), reg)
            histories.append(
                [reg.metric_history(report.runs[0], m) for m in ("train_loss", "val_acc")]
            )
    strip = [[[(s, v) for s, _e, v, _t in series] for series in h] for h in histories]
    assert strip[0] == strip[1]


def test_language_modelling_on_a_text_file(
    registry: Registry, tmp_path: Path, minimal_gpt: Callable[[], Doc]
) -> None:
    doc = minimal_gpt()
    text = tmp_path / "book.txt"
    text.write_text("the quick brown fox jumps over the lazy dog. " * 200)
    report = train(doc, config(data=f"text:{text}", epochs=1), registry)
    run = registry.get(report.runs[0])
    assert run.config["task"] == "lm" and "val_ppl" in run.metrics
    assert run.metrics["val_ppl"] == pytest.approx(np.exp(run.metrics["val_loss"]))
    # the char-level vocabulary (vocab_size 100 is not 256), for arch generate to read back
    chars = sorted(set("the quick brown fox jumps over the lazy dog. "))
    assert run.config["text_vocab"] == {"level": "char", "code_points": [ord(c) for c in chars]}


def test_sequence_to_sequence_on_a_synthetic_task(registry: Registry) -> None:
    report = train(SEQ2SEQ, config(data="seq2seq:reverse?n=300", epochs=1), registry)
    run = registry.get(report.runs[0])
    assert run.config["task"] == "seq2seq" and 0 <= run.metrics["val_token_acc"] <= 1


def test_mixup_is_refused_for_token_targets(
    registry: Registry, tmp_path: Path, minimal_gpt: Callable[[], Doc]
) -> None:
    text = tmp_path / "t.txt"
    text.write_text("abc " * 500)
    with pytest.raises(ValueError, match="drop --mixup"):
        train(minimal_gpt(), config(data=f"text:{text}", mixup=0.2), registry)
    assert registry.runs() == []  # nothing started


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--data", "nosuch:x"], "nosuch"),
        (["--epochs", "0"], "epochs"),
        (["--folds", "1"], "folds"),
        (["--data", "seq2seq:reverse"], "seq2seq"),
    ],
)
def test_bad_flags_and_data_exit_2_and_record_nothing(
    args: list[str], message: str, tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path / 'r.db'}"
    result = CliRunner().invoke(cli, ["train", str(VIT), "--registry", url, *args])
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output
    with Registry(url) as reg:
        assert reg.runs() == []


def test_the_cli_trains_and_reports(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'r.db'}"
    cfg = tmp_path / "train.json"
    cfg.write_text(json.dumps({"epochs": 3, "warmup": 0.5, "batch_size": 128}))
    result = CliRunner().invoke(
        cli, ["train", str(VIT), "--registry", url, "--config", str(cfg), "--epochs", "1",
              "--folds", "2", "--quiet"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "CV group" in result.output and "val_acc" in result.output
    with Registry(url) as reg:
        runs = reg.runs()
        assert len(runs) == 2 and all(r.config["epochs"] == 1 for r in runs)  # the flag wins
    assert load_spec(VIT).name == "vit-tiny-digits"


def test_folds_of_one_group_can_run_separately(registry: Registry) -> None:
    first = train(VIT, config(epochs=1, folds=3, fold=0), registry)
    assert first.group is not None and len(first.runs) == 1
    second = train(VIT, config(epochs=1, folds=3, fold=2, cv_group=first.group), registry)
    assert second.group == first.group
    group = registry.group(first.group)
    assert len(group.runs) == 2 and group.aggregates["val_acc"].n == 2
    with pytest.raises(ValueError, match=r"split differently: k 3 \(group\) vs 4"):
        train(VIT, config(epochs=1, folds=4, fold=1, cv_group=first.group), registry)
    with pytest.raises(ValueError, match=r"seed 0 \(group\) vs 5"):
        train(VIT, config(epochs=1, folds=3, fold=1, cv_seed=5, cv_group=first.group), registry)


def test_a_resumed_run_ends_exactly_like_an_uninterrupted_one(tmp_path: Path) -> None:
    """Interrupted after its second epoch's metrics (the state on disk is the first epoch's),
    then resumed: the run completes with bit-identical metrics, mixup draws included."""
    cfg = config(epochs=4, mixup=0.2, cutmix=1.0)
    names = ("train_loss", "val_loss", "val_acc", "lr")

    def series(reg: Registry, run_id: str) -> list[list[tuple[int, float]]]:
        return [[(s, v) for s, _e, v, _t in reg.metric_history(run_id, m)] for m in names]

    with Registry(f"sqlite:///{tmp_path / 'a.db'}", artifacts=tmp_path / "a") as reg:
        whole = series(reg, train(VIT, cfg, reg).runs[0])

    class StopAtSecondEpoch(NullProgress):
        def epoch(self, epoch: int, metrics: dict[str, float]) -> None:
            if epoch == 1:
                raise KeyboardInterrupt

    with Registry(f"sqlite:///{tmp_path / 'b.db'}", artifacts=tmp_path / "b") as reg:
        with pytest.raises(KeyboardInterrupt):
            train(VIT, cfg, reg, progress=StopAtSecondEpoch())
        [stopped] = reg.runs()
        assert stopped.status == "interrupted"
        assert stopped.summaries["val_acc"].count == 2  # epoch 1's metrics were recorded
        report = resume(stopped.id, reg)
        assert report.runs == [stopped.id]
        run = reg.get(stopped.id)
        assert run.status == "completed" and run.error is None
        assert series(reg, stopped.id) == whole
        assert run.summaries["val_acc"].count == 4
        with pytest.raises(ValueError, match="completed: only an interrupted or failed run"):
            resume(stopped.id, reg)


def test_resume_through_the_cli_and_its_mistakes(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'r.db'}"
    runner = CliRunner()
    both = runner.invoke(cli, ["train", str(VIT), "--resume", "abc", "--registry", url])
    assert both.exit_code == 2 and "not both" in both.output
    neither = runner.invoke(cli, ["train", "--registry", url])
    assert neither.exit_code == 2 and "--resume RUN" in neither.output
    unknown = runner.invoke(cli, ["train", "--resume", "nosuchrun", "--registry", url])
    assert unknown.exit_code == 2 and "no run 'nosuchrun'" in unknown.output
    flags = runner.invoke(cli, ["train", "--resume", "x", "--epochs", "3", "--registry", url])
    assert flags.exit_code == 2 and "drop the other flags" in flags.output


def test_eval_records_a_linked_run_on_the_validation_split_or_other_data(
    registry: Registry, tmp_path: Path
) -> None:
    report = train(VIT, config(epochs=1), registry)
    [trained] = report.runs
    own = evaluate_run(trained, registry)
    run = registry.get(trained)
    assert own.examples == len(report.plan.folds[0].val)
    assert own.metrics["eval_acc"] == pytest.approx(run.metrics["val_acc"])  # same weights, split
    record = registry.get(own.run)
    assert record.kind == "eval" and record.tags["evaluates"] == trained
    assert record.config["evaluates"] == trained and record.metrics == own.metrics
    x = np.random.default_rng(0).random((20, 1, 8, 8), dtype=np.float32)
    np.savez(tmp_path / "more.npz", x=x, y=np.arange(20) % 10)
    other = evaluate_run(trained, registry, data_source=f"npz:{tmp_path / 'more.npz'}")
    assert other.examples == 20 and 0 <= other.metrics["eval_acc"] <= 1
    url = str(registry.url)
    result = CliRunner().invoke(cli, ["eval", trained, "--registry", url])
    assert result.exit_code == 0 and "eval_acc" in result.output
    missing = CliRunner().invoke(cli, ["eval", "nosuchrun", "--registry", url])
    assert missing.exit_code == 2 and "no run" in missing.output


def test_cutmix_is_refused_before_training_for_token_inputs(
    registry: Registry, minimal_gpt: Callable[[], Doc], tmp_path: Path
) -> None:
    doc = minimal_gpt()
    doc["nodes"]["head"] = {"op": "classify", "input": "norm", "classes": 3, "pool": "mean"}
    doc["outputs"] = "head"
    doc["nodes"].pop("logits")
    x = np.random.default_rng(0).integers(0, 32, (30, 16))
    np.savez(tmp_path / "tok.npz", x=x, y=np.arange(30) % 3)
    with pytest.raises(ValueError, match="takes no image input: use --mixup"):
        train(doc, config(data=f"npz:{tmp_path / 'tok.npz'}", cutmix=1.0), registry)
    assert registry.runs() == []


def _arch(*args: str) -> list[str]:
    return [sys.executable, "-m", "archlab", *args]


@pytest.mark.slow
def test_a_killed_training_is_recorded_interrupted_and_resumes_exactly(tmp_path: Path) -> None:
    """SIGKILL in the middle of training: the next open of the registry marks the run
    interrupted (its process is gone), and --resume finishes it with the metrics of a run that
    was never stopped (both made by the same CLI, in fresh processes)."""
    flags = ["--epochs", "6", "--warmup", "0.5", "--batch-size", "128", "--lr", "2e-3",
             "--mixup", "0.2", "--quiet"]  # fmt: skip
    (tmp_path / "whole").mkdir()
    (tmp_path / "killed").mkdir()  # each registry keeps its artifacts beside its file
    whole_url = f"sqlite:///{tmp_path / 'whole' / 'r.db'}"
    subprocess.run(_arch("train", str(VIT), "--registry", whole_url, *flags), check=True)
    url = f"sqlite:///{tmp_path / 'killed' / 'r.db'}"
    proc = subprocess.Popen(_arch("train", str(VIT), "--registry", url, *flags))
    try:
        deadline = time.monotonic() + 240
        state = None
        while time.monotonic() < deadline and proc.poll() is None:
            found = list((tmp_path / "killed" / "artifacts").glob(f"*/{STATE_FILE}"))
            if found and torch.load(found[0], weights_only=True)["epoch"] >= 1:
                state = found[0]
                break
            time.sleep(0.05)
        assert state is not None and proc.poll() is None, "training ended before it was killed"
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=60)
    run_id = state.parent.name
    with Registry(url) as reg:
        assert reg.get(run_id).status == "interrupted"
    subprocess.run(_arch("train", "--resume", run_id, "--registry", url, "--quiet"), check=True)
    names = ("train_loss", "val_loss", "val_acc", "lr")
    with Registry(whole_url) as whole, Registry(url) as killed:
        [reference] = whole.runs()
        assert killed.get(run_id).status == "completed"
        for name in names:
            want = [(s, v) for s, _e, v, _t in whole.metric_history(reference.id, name)]
            got = [(s, v) for s, _e, v, _t in killed.metric_history(run_id, name)]
            assert got == want, name


@pytest.mark.slow
def test_compiled_training_matches_eager(registry: Registry) -> None:
    """--compile trains through torch.compile (inductor on the CPU) to the eager numbers."""
    eager = train(VIT, config(epochs=1), registry).results[0].best
    compiled = train(VIT, config(epochs=1, compile=True), registry).results[0].best
    for name in ("train_loss", "val_loss", "val_acc"):
        assert compiled[name] == pytest.approx(eager[name], rel=1e-4), name


@pytest.mark.slow
def test_torchrun_trains_data_parallel_and_rank_0_alone_records(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'r.db'}"
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--standalone",
         "-m", "archlab", "train", str(VIT), "--epochs", "2", "--warmup", "0.5",
         "--batch-size", "128", "--registry", url],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("vit-tiny-digits: digits") == 1  # one summary: rank 0's
    assert "of 6 batches" in proc.stdout  # each rank trains on half of the 1,437 examples
    with Registry(url) as reg:
        [run] = reg.runs()
        assert run.status == "completed" and run.config["world_size"] == 2
        assert run.summaries["val_acc"].count == 2
        assert [a.kind for a in reg.get(run.id).artifacts].count("checkpoint") == 1


def test_bf16_autocast_trains_and_is_recorded(registry: Registry) -> None:
    """The autocast path CUDA takes by default, exercised on the CPU with --amp bf16."""
    fp32 = train(VIT, config(epochs=1), registry)
    bf16 = train(VIT, config(epochs=1, amp="bf16"), registry)
    assert registry.get(bf16.runs[0]).config["dtype"] == "bfloat16 autocast"
    assert registry.get(fp32.runs[0]).config["dtype"] == "float32"
    a, b = fp32.results[0].best, bf16.results[0].best
    assert b["train_loss"] == pytest.approx(a["train_loss"], rel=0.05)  # bf16 rounding, no more
    assert b["val_loss"] == pytest.approx(a["val_loss"], rel=0.05)


def test_test_split_fold_seeds_and_early_stopping(registry: Registry) -> None:
    # early stopping on "lr" (higher is better): it peaks when the 1-epoch warm-up ends and only
    # falls after, so with patience 2 the fit stops after 2 epochs without a better value
    cfg = config(
        epochs=6, warmup=1.0, folds=2, fold_seeds=True, test_size=0.2,
        early_stop_metric="lr", patience=2,
    )  # fmt: skip
    report = train(VIT, cfg, registry)
    assert report.plan.test is not None and len(report.plan.test) == 360
    for fold, (run_id, result) in enumerate(zip(report.runs, report.results, strict=True)):
        run = registry.get(run_id)
        assert run.config["init_seed"] == fold  # seed + fold index
        assert result.stopped_early and result.epochs_run == 3 and result.best_epoch == 0
        assert run.summaries["val_loss"].count == 3
        # the test split: evaluated once, with the best weights, after training
        assert run.summaries["test_acc"].count == 1 and run.summaries["test_acc"].final_step == 3
        assert set(result.test) == {"test_loss", "test_acc"}
        assert run.tags["stopped_early"] == "True"
    same = train(VIT, config(epochs=1, folds=2), registry)
    assert [registry.get(r).config["init_seed"] for r in same.runs] == [0, 0]


def test_gradient_accumulation_and_clipping(
    registry: Registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    steps: list[int] = []
    clips: list[float] = []
    real_step = torch.optim.AdamW.step
    real_clip = torch.nn.utils.clip_grad_norm_

    def count_step(self: Any, *args: Any, **kwargs: Any) -> Any:
        steps.append(1)
        return real_step(self, *args, **kwargs)

    def record_clip(params: Any, max_norm: float, *args: Any, **kwargs: Any) -> Any:
        clips.append(max_norm)
        return real_clip(params, max_norm, *args, **kwargs)

    monkeypatch.setattr(torch.optim.AdamW, "step", count_step)
    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", record_clip)
    report = train(VIT, config(epochs=1, batch_size=64, accumulate=4, grad_clip=0.5), registry)
    batches = -(-len(report.plan.folds[0].train) // 64)  # 1,437 examples: 23 batches of 64
    assert len(steps) == -(-batches // 4) == 6  # one optimiser step per 4 batches (+ the rest)
    assert clips == [0.5] * 6
