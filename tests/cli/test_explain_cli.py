"""``arch explain``: a digits ViT run or weights file draws a PNG of relevance maps (one row per
method), prints them as JSON, a byte-level GPT writes an HTML page; bad input exits 2 with a
message and no traceback.

The registry (module scope) holds one digits ViT trained for one epoch by ``arch train`` (its
validation split is what a RUN explains without --data) and one run without a checkpoint.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from click.testing import CliRunner
from matplotlib.image import imread

from archlab import compile_spec
from archlab.cli import cli
from archlab.registry import Registry

ROOT = Path(__file__).parents[2]
VIT = ROOT / "specs/vit-tiny-digits.json"


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, list(args))
    return result.exit_code, result.stdout, result.stderr


@dataclass(frozen=True)
class Setup:
    root: Path
    registry: str
    trained: str
    bare: str
    vit: Path
    gpt: Path
    text: Path
    flat: Path


def _gpt(root: Path) -> Path:
    doc = json.loads((ROOT / "specs/gpt-tiny.json").read_text())
    doc["inputs"]["ids"]["max_len"] = 24
    doc["nodes"]["tok"]["dim"] = 32
    doc["nodes"]["decoder"]["depth"] = 1
    compile_spec(doc, seed=0).save(root / "gpt.safetensors")
    return root / "gpt.safetensors"


def _flat(root: Path) -> Path:
    """A digits classifier with no attention: patches pooled straight into the head."""
    doc = json.loads(VIT.read_text())
    for node in ("cls", "pos", "encoder", "norm"):
        del doc["nodes"][node]
    doc["nodes"]["head"].update(input="patches", pool="mean")
    compile_spec(doc, seed=0).save(root / "flat.safetensors")
    return root / "flat.safetensors"


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    root = tmp_path_factory.mktemp("explain-cli")
    registry = f"sqlite:///{root / 'r.db'}"
    code, out, err = run(
        "train", str(VIT), "--data", "digits", "--epochs", "1", "--device", "cpu",
        "--registry", registry, "--json",
    )  # fmt: skip
    assert code == 0, err
    trained = str(json.loads(out)["runs"][0]["id"])
    with Registry(registry) as reg, reg.start_run(json.loads(VIT.read_text()), {}) as bare:
        bare.log_metrics({"train_loss": 2.3}, step=0)
    vit = root / "vit.safetensors"
    compile_spec(VIT, seed=0).save(vit)
    text = root / "text.txt"
    text.write_text("To be, or not to be, that is the question.\n" * 20)
    yield Setup(root, registry, trained, bare.id, vit, _gpt(root), text, _flat(root))


def test_help_lists_the_command() -> None:
    code, out, _ = run("--help")
    assert code == 0 and "arch explain MODEL|RUN" in out
    code, out, _ = run("explain", "--help")
    assert code == 0 and "--method" in out and "--count" in out


def test_weights_file_draws_a_png_row_per_method(setup: Setup) -> None:
    one, four = setup.root / "one.png", setup.root / "four.png"
    code, out, err = run(
        "explain", str(setup.vit), "--data", "digits", "--count", "3", "-o", str(one)
    )
    assert code == 0, err
    assert out.startswith(f"wrote {one}: 3 sample(s) from digits") and "#2: label 2" in out
    code, _, err = run(
        "explain", str(setup.vit), "--data", "digits", "--count", "3", "-o", str(four),
        "--method", "attention", "rollout", "generic", "chefer",
    )  # fmt: skip
    assert code == 0, err
    assert four.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert imread(four).shape[0] > 2 * imread(one).shape[0]  # 5 rows against 2


def test_json_shape(setup: Setup) -> None:
    out_png = setup.root / "j.png"
    code, out, err = run(
        "explain", str(setup.vit), "--data", "digits", "--index", "0", "5", "9",
        "--method", "rollout", "chefer", "-o", str(out_png), "--json",
    )  # fmt: skip
    assert code == 0, err
    doc = json.loads(out)
    assert doc["indices"] == [0, 5, 9] and doc["labels"] == [0, 5, 9]
    for method in ("rollout", "chefer"):
        assert len(doc[method]["scores"]) == 3 and len(doc[method]["scores"][0]) == 16
        assert doc[method]["target"] == doc["predictions"]
    assert out_png.is_file()


def test_a_run_explains_its_validation_split(setup: Setup) -> None:
    out_png = setup.root / "run.png"
    code, out, err = run(
        "explain", setup.trained, "--registry", setup.registry, "--count", "2",
        "-o", str(out_png), "--json",
    )  # fmt: skip
    assert code == 0, err
    doc = json.loads(out)
    assert len(doc["indices"]) == 2 and next(iter(doc)) == "generic"
    code, out, err = run(
        "explain", setup.trained, "--registry", setup.registry, "--data", "digits",
        "--index", "7", "-o", str(out_png),
    )  # fmt: skip
    assert code == 0, err
    assert f"run {setup.trained}" in out and "#7: label 7" in out


def test_tokens_write_html(setup: Setup) -> None:
    page = setup.root / "t.html"
    code, out, err = run(
        "explain", str(setup.gpt), "--data", f"text:{setup.text}", "--count", "2",
        "--method", "attention", "generic", "-o", str(page),
    )  # fmt: skip
    assert code == 0, err
    assert "attention:" in out and "generic:" in out and "\x1b[" not in out  # no colour in a pipe
    assert page.read_text().count('class="sample"') == 4


def test_an_encoder_decoder_shows_its_source_and_target_tokens(setup: Setup) -> None:
    """transformer-tiny on seq2seq:copy: each line the source, an arrow, the target tokens; the
    JSON gives both relevances and the label is the next target token."""
    weights = setup.root / "tiny.safetensors"
    compile_spec(ROOT / "specs/transformer-tiny.json", seed=0).save(weights)
    page = setup.root / "s2s.html"
    code, out, err = run(
        "explain", str(weights), "--data", "seq2seq:copy?n=20&len=5", "--count", "2",
        "--method", "generic", "chefer", "-o", str(page), "--json",
    )  # fmt: skip
    assert code == 0, err
    found = json.loads(out)
    for method in ("generic", "chefer"):
        assert [len(r) for r in found[method]["scores"]] == [5, 5]  # the source tokens
        assert [len(r) for r in found[method]["decoder_scores"]] == [5, 5]  # BOS + 4 targets
    text = page.read_text()
    assert text.count('class="sample"') == 4 and text.count("→ ") == 4
    assert found["labels"] is not None and len(found["labels"]) == 2


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("VIT", "--method", "grad"), "unknown method 'grad'; choose among attention, rollout"),
        (("FLAT",), "has no attention"),
        (("VIT", "--index", "5000"), "--index 5000 lies outside digits's 1797 samples"),
        (("VIT", "--count", "0"), "at least 1"),
        (("BARE",), "has no checkpoint"),
        (("nosuchrun",), "arch explain nosuchrun: no such file or run in this registry"),
        (("missing.safetensors",), "missing.safetensors: no such file"),
        (("GPT", "-o", "x.png"), "give -o a .html file"),
        (("VIT", "-o", "x.txt"), "name a .png, .svg or .pdf file"),
    ],
)
def test_bad_input_exits_2(setup: Setup, args: tuple[str, ...], message: str) -> None:
    names = {"VIT": str(setup.vit), "FLAT": str(setup.flat), "BARE": setup.bare}
    names["GPT"] = str(setup.gpt)
    first, *rest = args
    data = f"text:{setup.text}" if first == "GPT" else "digits"
    code, out, err = run(
        "explain", names.get(first, first), "--data", data, "--registry", setup.registry,
        "-o", str(setup.root / "bad.png"), *rest,
    )  # fmt: skip
    assert code == 2, (out, err)
    assert message in err and "Traceback" not in out + err


def test_lists_after_options_mix(setup: Setup) -> None:
    """``--method a b`` and ``--index 0 5``: the words up to the next option are more values,
    whichever order the lists come in; repeated options add up too."""
    code, out, err = run(
        "explain", str(setup.vit), "--data", "digits", "--method", "attention",
        "--index", "3", "-1", "--method", "rollout", "generic", "--json",
        "-o", str(setup.root / "mix.png"),
    )  # fmt: skip
    assert code == 2 and "--index -1 lies outside" in err, (out, err)
    code, out, err = run(
        "explain", str(setup.vit), "--data", "digits", "--method", "attention",
        "--index", "3", "4", "--method", "rollout", "generic", "--json",
        "-o", str(setup.root / "mix.png"),
    )  # fmt: skip
    assert code == 0, err
    doc = json.loads(out)
    assert doc["indices"] == [3, 4] and [
        m for m in doc if m in ("attention", "rollout", "generic")
    ] == [
        "attention",
        "rollout",
        "generic",
    ]


def test_evaluate_perturbation_records_an_eval_run_with_each_methods_aucs(setup: Setup) -> None:
    code, out, err = run(
        "explain", setup.trained, "--registry", setup.registry, "--evaluate", "perturbation",
        "--method", "attention", "generic",
    )  # fmt: skip
    assert code == 0, err
    assert "auc_pos (lower is better)" in out and "generic" in out and "attention" in out
    eval_id = out.split()[2]
    with Registry(setup.registry) as reg:
        evaluated = reg.get(eval_id)
        assert evaluated.kind == "eval"
        names = set(evaluated.metrics)
    assert {"auc_pos_generic", "auc_neg_generic", "auc_pos_attention"} <= names
    code, out, err = run(
        "explain", setup.bare, "--registry", setup.registry, "--evaluate", "perturbation"
    )
    assert code == 2 and "checkpoint" in err and "Traceback" not in err


def test_target_explains_every_sample_for_one_class(setup: Setup) -> None:
    out_png = setup.root / "t.png"
    args = ["explain", str(setup.vit), "--data", "digits", "--index", "0", "5", "-o", str(out_png)]
    code, out, err = run(*args, "--target", "3", "--json")
    assert code == 0, err
    doc = json.loads(out)
    assert doc["generic"]["target"] == [3, 3]
    predicted = json.loads(run(*args, "--json")[1])
    if predicted["predictions"] != [3, 3]:
        assert doc["generic"]["scores"] != predicted["generic"]["scores"]
    code, out, err = run(*args, "--target", "10")
    assert code == 2 and "lies outside the output's 10 classes" in err and "Traceback" not in err
