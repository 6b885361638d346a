"""``arch train`` with token pruning: DynamicViT's objectives, its dense teacher, EViT's warm-up."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path
from typing import Any

import pytest
import torch
from click.testing import CliRunner

import archlab
from archlab.cli.main import cli
from archlab.compiler.nn.pruning import AttentionTopK
from archlab.compiler.pruning import dense_spec
from archlab.errors import UserInputError
from archlab.registry import Registry
from archlab.runners.config import TrainConfig
from archlab.runners.progress import NullProgress
from archlab.runners.pruning import (
    Distiller,
    init_from_teacher,
    keep_schedule,
    set_keep_rates,
    spec_has_dynamic,
)
from archlab.runners.train import resume, train

ROOT = Path(__file__).resolve().parents[2]
STUDENT = ROOT / "specs" / "dynamicvit-tiny-digits.json"
DENSE = ROOT / "specs" / "vit-tiny-digits.json"
Doc = dict[str, Any]


def config(**changes: Any) -> TrainConfig:
    base: dict[str, Any] = {"epochs": 1, "warmup": 0.5, "batch_size": 128, "lr": 2e-3}
    return TrainConfig(**{**base, **changes})


# ------------------------------------------------------------------------------- pieces


def test_the_dense_spec_drops_every_pruning_stage() -> None:
    student = archlab.load_spec(STUDENT)
    dense = dense_spec(student)
    assert spec_has_dynamic(student) and not spec_has_dynamic(dense)
    assert dense.name == "dynamicvit-tiny-digits-dense"
    teacher = archlab.compile_spec(dense, device="meta")
    assert teacher.summary().params == archlab.compile_spec(DENSE, device="meta").summary().params
    # an explicit token_prune node is bypassed: its consumer reads the node's input
    doc = json.loads(DENSE.read_text())
    doc["nodes"]["cut"] = {
        "op": "token_prune",
        "input": "encoder",
        "method": "dynamic",
        "keep": 0.5,
    }
    doc["nodes"]["norm"]["input"] = "cut"
    bypassed = dense_spec(archlab.load_spec(doc))
    assert "cut" not in bypassed.nodes and bypassed.nodes["norm"].input == "encoder"


def test_the_student_starts_from_the_teacher_and_only_predictors_are_fresh() -> None:
    student = archlab.compile_spec(STUDENT, seed=1)
    teacher = archlab.compile_spec(DENSE, seed=2)
    fresh = init_from_teacher(student, teacher, "run t")
    assert fresh and all(".prune." in k for k in fresh)
    for key, value in teacher.state_dict().items():
        torch.testing.assert_close(student.state_dict()[key], value)
    wider = json.loads(DENSE.read_text())
    wider["nodes"]["patches"]["dim"] = 32
    other = archlab.compile_spec(wider)
    with pytest.raises(UserInputError, match=r"not the dense version of this spec.*shapes differ"):
        init_from_teacher(student, other, "run t")


def test_evit_keep_rate_warm_up_schedule() -> None:
    assert keep_schedule(0.7, 0, warmup=2, ramp=4) == 1.0
    assert keep_schedule(0.7, 1, warmup=2, ramp=4) == 1.0
    assert keep_schedule(0.7, 2, warmup=2, ramp=4) == pytest.approx(1.0)
    assert keep_schedule(0.7, 4, warmup=2, ramp=4) == pytest.approx(0.85)  # half-way: midpoint
    assert keep_schedule(0.7, 6, warmup=2, ramp=4) == 0.7
    rates = [keep_schedule(0.5, e, warmup=1, ramp=5) for e in range(8)]
    assert rates == sorted(rates, reverse=True)  # never rises
    doc = json.loads(DENSE.read_text())
    doc["nodes"]["encoder"]["prune"] = {"method": "attention_topk", "at": [1], "keep": 0.5}
    model = archlab.compile_spec(doc, seed=0)
    [stage] = [m for m in model.modules() if isinstance(m, AttentionTopK)]
    images = torch.randn(2, 1, 8, 8)
    set_keep_rates(model, 0, warmup=1, ramp=2)
    model.train()
    _, trace = model.trace_tokens(image=images)
    assert trace.features["encoder"].shape[1] == 17  # keep 1.0 while warming up
    set_keep_rates(model, 3, warmup=1, ramp=2)
    _, trace = model.trace_tokens(image=images)
    assert stage.keep_now == 0.5 and trace.features["encoder"].shape[1] == 9
    model.eval()  # inference always keeps the declared rate
    set_keep_rates(model, 0, warmup=1, ramp=2)
    with torch.no_grad():
        _, trace = model.trace_tokens(image=images)
    assert trace.features["encoder"].shape[1] == 9


def test_the_objectives_are_the_published_terms() -> None:
    torch.manual_seed(0)
    student = archlab.compile_spec(STUDENT, seed=0).train()
    teacher = archlab.compile_spec(DENSE, seed=0)
    init_from_teacher(student, teacher, "t")
    images = torch.randn(8, 1, 8, 8)
    distiller = Distiller(
        student, teacher, ratio_weight=2.0, distill_weight=0.5, token_distill_weight=0.5
    )
    logits, traced = student(image=images, **{"__trace": True})
    total, parts = distiller(logits, traced, {"image": images})
    states, _ = traced
    records = states["encoder"].stages
    assert [r.target for r in records] == [12 / 16, 9 / 16]  # inference keeps 12, then 9
    ratio = sum(
        ((r.policy[:, 1:].mean(1) - r.target) ** 2).mean() for r in records if r.policy is not None
    ) / len(records)
    assert parts["train_ratio_loss"] == pytest.approx(float(ratio.detach()), rel=1e-5)
    with torch.no_grad():
        t_logits = teacher(image=images)
    kl = torch.nn.functional.kl_div(
        logits.log_softmax(-1), t_logits.log_softmax(-1), reduction="batchmean", log_target=True
    )
    assert parts["train_distill_loss"] == pytest.approx(float(kl.detach()), rel=1e-5)
    assert parts["train_token_distill_loss"] > 0
    expected = 2.0 * ratio + 0.5 * kl + 0.5 * parts["train_token_distill_loss"]
    assert float(total.detach()) == pytest.approx(float(expected.detach()), rel=1e-5)
    total.backward()  # every term reaches the student, the predictors included
    for name, p in student.named_parameters():
        if ".prune." in name:
            assert p.grad is not None and p.grad.abs().sum() > 0, name
    assert all(p.grad is None for p in teacher.parameters())  # the teacher stays frozen


def test_token_distillation_counts_only_kept_tokens() -> None:
    student = archlab.compile_spec(STUDENT, seed=0).train()
    teacher = archlab.compile_spec(DENSE, seed=0)
    init_from_teacher(student, teacher, "t")
    distiller = Distiller(
        student, teacher, ratio_weight=0, distill_weight=0, token_distill_weight=1
    )
    images = torch.randn(4, 1, 8, 8)
    torch.manual_seed(3)
    logits, (states, features) = student(image=images, **{"__trace": True})
    policy = states["encoder"].policy
    assert policy is not None and (policy[:, 1:] == 0).any()
    # changing the student's dropped tokens changes nothing; changing a kept one does
    dropped = features["encoder"].clone()
    noise = 10.0 * torch.randn_like(dropped)  # (a constant shift would vanish in the norm)
    dropped[policy == 0] += noise[policy == 0]
    _, base = distiller(logits, (states, features), {"image": images})
    _, same = distiller(logits, (states, {"encoder": dropped}), {"image": images})
    assert same["train_token_distill_loss"] == pytest.approx(base["train_token_distill_loss"])
    kept = features["encoder"].clone()
    live = torch.zeros_like(policy, dtype=torch.bool)
    live[:, 1:] = policy[:, 1:] == 1
    kept[live] += noise[live]
    _, moved = distiller(logits, (states, {"encoder": kept}), {"image": images})
    assert moved["train_token_distill_loss"] > base["train_token_distill_loss"] + 1


def explicit_student() -> Doc:
    """vit-tiny-digits with its 4 layers split in stacks of 2, 1 and 1 and a `dynamic`
    token_prune node (keep 0.5: 16 -> 8 patches) after the first: DynamicViT in the node form,
    two stacks seeing its policy."""
    doc: Doc = json.loads(DENSE.read_text())
    doc["name"] = "dynamicvit-node-digits"
    nodes = doc["nodes"]
    nodes["encoder"]["depth"] = 2
    nodes["cut"] = {"op": "token_prune", "input": "encoder", "method": "dynamic", "keep": 0.5}
    nodes["encoder2"] = {**copy.deepcopy(nodes["encoder"]), "input": "cut", "depth": 1}
    nodes["encoder3"] = {**nodes["encoder2"], "input": "encoder2"}
    nodes["norm"]["input"] = "encoder3"
    return doc


def test_the_objectives_see_an_explicit_dynamic_node() -> None:
    """The node form gets every DynamicViT term: the ratio loss of the node's decisions, and the
    token distillation on the last stack after it (the last one that sees pruned tokens), over
    the tokens the node keeps."""
    torch.manual_seed(0)
    student = archlab.compile_spec(explicit_student(), seed=0).train()
    teacher = archlab.compile_spec(dense_spec(student.spec), seed=0)
    assert init_from_teacher(student, teacher, "t")  # only the node's predictor is fresh
    distiller = Distiller(
        student, teacher, ratio_weight=2.0, distill_weight=0.5, token_distill_weight=0.5
    )
    assert distiller.token_node == "encoder3"
    images = torch.randn(8, 1, 8, 8)
    logits, traced = student(image=images, **{"__trace": True})
    total, parts = distiller(logits, traced, {"image": images})
    states, features = traced
    [record] = states["cut"].stages
    assert record.name == "cut" and record.target == 8 / 16 and record.policy is not None
    ratio = ((record.policy[:, 1:].mean(1) - record.target) ** 2).mean()
    assert parts["train_ratio_loss"] == pytest.approx(float(ratio.detach()), rel=1e-5)
    assert set(parts) == {"train_ratio_loss", "train_distill_loss", "train_token_distill_loss"}
    # the token term reads the last stack's full-length output under the node's policy
    assert states["encoder3"].policy is record.policy
    assert features["encoder3"].shape == (8, 17, 64)
    dropped = features["encoder3"].clone()
    gone = record.policy == 0
    assert gone.any()
    dropped[gone] += 10.0 * torch.randn_like(dropped)[gone]
    _, same = distiller(logits, (states, {**features, "encoder3": dropped}), {"image": images})
    assert same["train_token_distill_loss"] == pytest.approx(parts["train_token_distill_loss"])
    total.backward()
    predictor = [p for n, p in student.named_parameters() if n.startswith("cut.predictor.")]
    assert predictor and all(p.grad is not None and p.grad.abs().sum() > 0 for p in predictor)


# ------------------------------------------------------------------------------- arch train


@pytest.mark.slow
def test_arch_train_runs_an_explicit_dynamic_node_with_every_term(tmp_path: Path) -> None:
    """`arch train` on the node form with the digits data: it trains the dense teacher first,
    then the student, whose run records the three DynamicViT terms."""
    spec = tmp_path / "student.json"
    spec.write_text(json.dumps(explicit_student()))
    url = f"sqlite:///{tmp_path / 'r.db'}"
    args = ["train", str(spec), "--data", "digits", "--epochs", "2", "--batch-size", "256"]
    result = CliRunner().invoke(cli, [*args, "--quiet", "--registry", url])
    assert result.exit_code == 0, result.output
    with Registry(url) as reg:
        runs = {r.spec_name: r for r in reg.runs()}
        assert set(runs) == {"dynamicvit-node-digits", "dynamicvit-node-digits-dense"}
        student = runs["dynamicvit-node-digits"]
        assert student.status == "completed"
        assert student.config["teacher_run"] == runs["dynamicvit-node-digits-dense"].id
        for name in ("train_ratio_loss", "train_distill_loss", "train_token_distill_loss"):
            assert student.summaries[name].count == 2, name
            assert math.isfinite(student.metrics[name]), name
        assert math.isfinite(student.metrics["train_loss"])


def test_a_student_trains_its_teacher_first_and_records_the_terms(registry: Registry) -> None:
    report = train(STUDENT, config(folds=2), registry)
    assert report.group is not None and len(report.runs) == 2
    runs = [registry.get(r) for r in report.runs]
    teachers = [r.config["teacher_run"] for r in runs]
    dense_group = registry.get(teachers[0]).cv
    assert dense_group is not None and runs[0].config["teacher"] == dense_group.group
    for run, teacher_id in zip(runs, teachers, strict=True):
        teacher = registry.get(teacher_id)
        assert teacher.spec_name == "dynamicvit-tiny-digits-dense"
        assert teacher.cv is not None and run.cv is not None
        assert teacher.cv.fold == run.cv.fold and teacher.cv.val_sha256 == run.cv.val_sha256
        for name in ("train_ratio_loss", "train_distill_loss", "train_token_distill_loss"):
            assert math.isfinite(run.metrics[name]), name
        assert run.config["ratio_weight"] == 2.0 and run.config["distill_weight"] == 0.5
        assert run.config["token_distill_weight"] == 0.5


def test_a_named_teacher_group_teaches_fold_by_fold_and_resume_keeps_it(
    registry: Registry,
) -> None:
    dense = train(DENSE, config(folds=2), registry)
    student = train(STUDENT, config(folds=2, teacher=dense.group), registry)
    runs = [registry.get(r) for r in student.runs]
    assert [r.config["teacher_run"] for r in runs] == dense.runs

    class StopInSecondFold(NullProgress):
        def start_fold(self, index: int, *args: Any) -> None:
            self.fold = index

        def epoch(self, epoch: int, metrics: dict[str, float]) -> None:
            if self.fold == 1 and epoch == 1:
                raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(STUDENT, config(folds=2, epochs=3, teacher=dense.group), registry,
              progress=StopInSecondFold())  # fmt: skip
    [stopped] = [r for r in registry.runs() if r.status == "interrupted"]
    assert stopped.config["teacher_run"] == dense.runs[1]
    resume(stopped.id, registry)  # the resumed fold loads its teacher again
    again = registry.get(stopped.id)
    assert again.status == "completed" and again.summaries["train_distill_loss"].count == 3


def test_a_teacher_from_another_split_is_refused(registry: Registry) -> None:
    dense = train(DENSE, config(folds=2), registry)
    with pytest.raises(UserInputError, match=r"was split differently: k 2 \(group\) vs 3 \(here\)"):
        train(STUDENT, config(folds=3, teacher=dense.group), registry)
    with pytest.raises(UserInputError, match="is one run, but the student trains 2 folds"):
        train(STUDENT, config(folds=2, teacher=dense.runs[0]), registry)
    with pytest.raises(UserInputError, match="no run or CV group with that id"):
        train(STUDENT, config(teacher="nosuchrun"), registry)
    hold_out = train(DENSE, config(), registry)
    wide = json.loads(STUDENT.read_text())
    wide["nodes"]["encoder"]["depth"] = 3
    wide["nodes"]["encoder"]["prune"]["at"] = [0, 1]
    with pytest.raises(UserInputError, match="not the dense version"):
        train(wide, config(teacher=hold_out.runs[0]), registry)


def test_without_distillation_no_teacher_is_needed(registry: Registry) -> None:
    report = train(STUDENT, config(distill_weight=0, token_distill_weight=0), registry)
    [run] = [registry.get(r) for r in report.runs]
    assert "teacher_run" not in run.config and "train_distill_loss" not in run.metrics
    assert math.isfinite(run.metrics["train_ratio_loss"])
    assert len(registry.runs()) == 1  # no teacher was trained


def test_the_cli_takes_the_teacher_and_weights(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'r.db'}"
    runner = CliRunner()
    base = ["train", "--data", "digits", "--epochs", "1", "--batch-size", "256", "--quiet"]
    dense = runner.invoke(cli, [*base, str(DENSE), "--registry", url])
    assert dense.exit_code == 0, dense.output
    with Registry(url) as reg:
        [teacher] = [r.id for r in reg.runs()]
    result = runner.invoke(
        cli,
        [*base, str(STUDENT), "--teacher", teacher, "--ratio-weight", "5", "--registry", url],
    )
    assert result.exit_code == 0, result.output
    with Registry(url) as reg:
        [student] = [r for r in reg.runs() if r.spec_name == "dynamicvit-tiny-digits"]
        assert student.config["ratio_weight"] == 5.0 and student.config["teacher"] == teacher
    bad = runner.invoke(cli, [*base, str(STUDENT), "--teacher", "nope", "--registry", url])
    assert bad.exit_code == 2 and "no run or CV group" in bad.output
    doc: Doc = copy.deepcopy(json.loads(STUDENT.read_text()))
    assert doc["nodes"]["encoder"]["prune"]["method"] == "dynamic"
