"""Imported weights train: ``arch import`` then ``arch train --init``, DynamicViT's recipe
included (a pretrained dense DeiT teaches its pruned student, which starts from it)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from archlab.cli.main import cli
from archlab.registry import Registry

transformers = pytest.importorskip("transformers")


def imported_dynamic_deit(tmp_path: Path) -> tuple[Path, Path]:
    """A tiny DeiT for the digits (8x8 grey, 10 classes) made with transformers, imported with
    ``arch import``: its weights, and its spec with a DynamicViT stage added."""
    torch.manual_seed(0)
    config = transformers.DeiTConfig(
        image_size=8,
        patch_size=2,
        num_channels=1,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        num_labels=10,
    )
    transformers.DeiTForImageClassification(config).save_pretrained(tmp_path / "deit")
    weights, spec = tmp_path / "deit.safetensors", tmp_path / "deit.json"
    done = CliRunner().invoke(
        cli, ["import", str(tmp_path / "deit"), "-o", str(weights), "--spec-out", str(spec)]
    )
    assert done.exit_code == 0, done.output
    doc = json.loads(spec.read_text())
    doc["nodes"]["encoder"]["prune"] = {"method": "dynamic", "at": [1], "keep": 0.5}
    student = tmp_path / "dynamic-deit.json"
    student.write_text(json.dumps(doc))
    return student, weights


def test_dynamicvit_fine_tunes_from_an_imported_deit(tmp_path: Path) -> None:
    student, weights = imported_dynamic_deit(tmp_path)
    runner = CliRunner()
    url = f"sqlite:///{tmp_path / 'runs.db'}"
    args = ["train", str(student), "--registry", url, "--epochs", "1", "--batch-size", "256"]
    done = runner.invoke(cli, [*args, "--init", str(weights)])
    assert done.exit_code == 0, done.output
    assert "started fresh: encoder.prune.1.predictor" in done.output
    runs = {run.id: run for run in Registry(url).runs()}
    [trained] = [r for r in runs.values() if "teacher_run" in r.config]
    teacher = runs[trained.config["teacher_run"]]
    assert teacher.config["init"] == trained.config["init"] == str(weights)
    assert teacher.status == trained.status == "completed"


def _tiny(name: str) -> object:
    if name == "gpt2":  # tied head
        config = transformers.GPT2Config(
            vocab_size=256,
            n_positions=32,
            n_embd=32,
            n_layer=2,
            n_head=2,
            bos_token_id=0,
            eos_token_id=0,
        )
        return transformers.GPT2LMHeadModel(config)
    if name == "llama":
        config = transformers.LlamaConfig(
            vocab_size=256,
            hidden_size=32,
            intermediate_size=48,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=32,
        )
        return transformers.LlamaForCausalLM(config)
    config = transformers.T5Config(  # one embedding shared by source, target and head
        vocab_size=64, d_model=32, d_kv=8, d_ff=48, num_layers=2, num_heads=4
    )
    return transformers.T5ForConditionalGeneration(config)


@pytest.mark.parametrize(
    ("family", "data"),
    [("gpt2", "text:{readme}"), ("llama", "text:{readme}"), ("t5", "seq2seq:reverse?n=200")],
)
def test_imported_language_models_fine_tune_with_every_tensor(
    family: str, data: str, tmp_path: Path
) -> None:
    torch.manual_seed(0)
    _tiny(family).save_pretrained(tmp_path / family)  # type: ignore[attr-defined]
    weights, spec = tmp_path / "w.safetensors", tmp_path / "spec.json"
    runner = CliRunner()
    done = runner.invoke(
        cli,
        [
            "import",
            str(tmp_path / family),
            "-o",
            str(weights),
            "--spec-out",
            str(spec),
            "--no-verify",
        ],
    )
    assert done.exit_code == 0, done.output
    readme = Path(__file__).resolve().parents[2] / "README.md"
    url = f"sqlite:///{tmp_path / 'runs.db'}"
    done = runner.invoke(
        cli,
        ["train", str(spec), "--registry", url, "--data", data.format(readme=readme),
         "--epochs", "1", "--init", str(weights)],
    )  # fmt: skip
    assert done.exit_code == 0, done.output
    assert "started fresh: none" in done.output  # tied embeddings and heads load as one tensor


def test_the_imported_model_itself_teaches_the_pruned_student(tmp_path: Path) -> None:
    # --teacher WEIGHTS: the pretrained model is the dense teacher, no dense training first
    student, weights = imported_dynamic_deit(tmp_path)
    runner = CliRunner()
    url = f"sqlite:///{tmp_path / 'runs.db'}"
    args = ["train", str(student), "--registry", url, "--epochs", "1", "--batch-size", "256"]
    done = runner.invoke(cli, [*args, "--init", str(weights), "--teacher", str(weights)])
    assert done.exit_code == 0, done.output
    [run] = Registry(url).runs()  # the student alone: its teacher was given
    assert run.config["teacher"] == run.config["teacher_run"] == str(weights)
    assert run.status == "completed"


def test_an_imported_bert_fine_tunes_on_ids_token_types_and_padding(tmp_path: Path) -> None:
    """BERT's classifier reads ids and token types: an npz archive feeds both (x and an array
    named after the second input) and the padding (``ids_mask``); a head for another number
    of classes starts fresh, the encoder and the pooler load."""
    torch.manual_seed(0)
    config = transformers.BertConfig(
        vocab_size=50,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=48,
        max_position_embeddings=16,
        num_labels=3,
    )
    transformers.BertForSequenceClassification(config).save_pretrained(tmp_path / "bert")
    weights, spec = tmp_path / "bert.safetensors", tmp_path / "bert.json"
    runner = CliRunner()
    done = runner.invoke(
        cli, ["import", str(tmp_path / "bert"), "-o", str(weights), "--spec-out", str(spec)]
    )
    assert done.exit_code == 0, done.output
    rng = np.random.default_rng(0)
    ids = rng.integers(1, 50, (40, 12))
    types = np.zeros_like(ids)
    types[:, 6:] = 1
    mask = np.ones_like(ids, dtype=bool)
    mask[::2, 9:] = False
    ids[~mask] = 0
    data = tmp_path / "pairs.npz"
    np.savez(data, x=ids, token_types=types, ids_mask=mask, y=ids[:, 1] % 3)
    url = f"sqlite:///{tmp_path / 'runs.db'}"
    args = ["--registry", url, "--data", f"npz:{data}", "--epochs", "1", "--init", str(weights)]
    done = runner.invoke(cli, ["train", str(spec), *args])
    assert done.exit_code == 0, done.output
    assert "started fresh: none" in done.output
    four = json.loads(spec.read_text())
    four["nodes"]["head"]["classes"] = 4
    (tmp_path / "bert4.json").write_text(json.dumps(four))
    done = runner.invoke(cli, ["train", str(tmp_path / "bert4.json"), *args])
    assert done.exit_code == 0, done.output
    assert "started fresh: head.fc.bias, head.fc.weight" in done.output, done.output
    assert all(run.status == "completed" for run in Registry(url).runs())
