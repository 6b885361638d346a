"""``arch generate``: gpt-tiny trained on a text writes text (byte- and char-level), streamed or
as one JSON object, the same for the same seed; bad input exits 2 with a message, no
traceback."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

import archlab
from archlab.cli import cli
from archlab.textsafe import printable_text

ROOT = Path(__file__).parents[2]
GPT = ROOT / "specs" / "gpt-tiny.json"
TEXT = (
    "Now is the winter of our discontent\n"
    "Made glorious summer by this sun of York;\n"
    "And all the clouds that lour'd upon our house\n"
    "In the deep bosom of the ocean buried.\n"
) * 4  # 644 bytes: a hold-out split of gpt-tiny's 256-token windows


def small_gpt(**ids: int) -> dict[str, Any]:
    """gpt-tiny with one layer and the input ``ids`` changed (vocab_size, max_len)."""
    doc = json.loads(GPT.read_text())
    doc["inputs"]["ids"].update(ids)
    doc["nodes"]["decoder"]["depth"] = 1
    return dict(doc)


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, list(args))
    return result.exit_code, result.stdout, result.stderr


class Runs:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.registry = f"sqlite:///{root / 'r.db'}"
        text = root / "richard.txt"
        text.write_text(TEXT, encoding="utf-8")
        (root / "gpt-chars.json").write_text(json.dumps(small_gpt(vocab_size=40, max_len=32)))
        self.byte = self.train(str(GPT), f"text:{text}")
        self.char = self.train(str(root / "gpt-chars.json"), f"text:{text}")
        self.ids_model = str(root / "ids-gpt.safetensors")  # ids only: 100 ids, no text run
        archlab.compile_spec(archlab.load_spec(small_gpt(vocab_size=100, max_len=16))).save(
            self.ids_model
        )
        self.vit = str(root / "vit.safetensors")
        archlab.compile_spec(archlab.load_spec(ROOT / "specs/vit-tiny-digits.json")).save(self.vit)

    def train(self, spec: str, data: str) -> str:
        code, out, err = run(
            "train", spec, "--data", data, "--epochs", "1", "--device", "cpu",
            "--registry", self.registry, "--json",
        )  # fmt: skip
        assert code == 0, err
        return str(json.loads(out)["runs"][0]["id"])

    def generate(self, source: str, *args: str) -> tuple[int, str, str]:
        return run("generate", source, "--registry", self.registry, "--device", "cpu", *args)


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Runs]:
    yield Runs(tmp_path_factory.mktemp("generate-cli"))


def test_help() -> None:
    code, out, _ = run("generate", "--help")
    assert code == 0 and "MODEL|RUN" in out and "--prompt" in out and "--ids" in out
    assert "arch generate MODEL|RUN" in run("--help")[1]


@pytest.mark.parametrize("level", ["byte", "char"])
def test_a_text_run_prints_text(runs: Runs, level: str) -> None:
    code, out, err = runs.generate(
        getattr(runs, level), "--prompt", "Now is", "--max-new-tokens", "10", "--seed", "3"
    )
    assert code == 0, err
    assert out.startswith("Now is") and out.endswith("\n")
    assert "(6 prompt tokens, 10 new, seed 3)" in err


def test_json_and_seeds(runs: Runs) -> None:
    args = ("--prompt", "And all", "--max-new-tokens", "12", "--seed", "5")
    code, out, err = runs.generate(runs.char, *args, "--json")
    assert code == 0, err
    doc = json.loads(out)  # one object, nothing streamed before it
    assert set(doc) == {"ids", "text", "prompt_tokens", "new_tokens", "seed"}
    assert (doc["prompt_tokens"], doc["new_tokens"], doc["seed"]) == (7, 12, 5)
    assert len(doc["ids"][0]) == 19 and doc["text"][0].startswith("And all")
    assert json.loads(runs.generate(runs.char, *args, "--json")[1]) == doc
    streamed = runs.generate(runs.char, *args)[1]
    assert streamed == printable_text(doc["text"][0]) + "\n"  # controls shown as escapes
    other = json.loads(runs.generate(runs.char, *args[:-1], "6", "--json")[1])
    assert other["ids"] != doc["ids"]
    greedy = runs.generate(
        runs.byte, "--prompt", "In", "--temperature", "0", "--max-new-tokens", "5", "--json"
    )
    assert json.loads(greedy[1])["seed"] is None


def test_ids_in_ids_out(runs: Runs) -> None:
    code, out, err = runs.generate(
        runs.ids_model, "--ids", "5 17 3", "--max-new-tokens", "4", "--seed", "0"
    )
    assert code == 0, err
    ids = [int(i) for i in out.split()]
    assert ids[:3] == [5, 17, 3] and len(ids) == 7 and all(0 <= i < 100 for i in ids)
    code, out, _ = runs.generate(runs.ids_model, "--ids", "5,17,3", "--num-beams", "2", "--json")
    doc = json.loads(out)
    assert code == 0 and "text" not in doc and doc["new_tokens"] == 16 - 3
    # a text run given ids still writes text
    code, out, _ = runs.generate(runs.byte, "--ids", "78 111 119", "--max-new-tokens", "3")
    assert code == 0 and out.startswith("Now")


@pytest.mark.parametrize(
    ("source", "args", "message"),
    [
        ("vit", ("--ids", "1"), "cannot generate: generation needs a spec whose one output is an lm_head"),
        ("char", ("--prompt", "Now is " * 5), "the prompt has 35 tokens, 3 more than the input `ids`'s max_len 32"),
        ("ids_model", ("--ids", "1 100"), "vocab_size 100 (ids 0..99); outside it: 100"),
        ("char", ("--prompt", "Now", "--top-p", "1.5"), "top_p must lie in (0, 1] (got 1.5)"),
        ("char", ("--prompt", "Now", "--top-p", "0"), "top_p must lie in (0, 1] (got 0.0)"),
        ("char", ("--ids", "1 two 3"), "takes whole-number token ids"),
        ("char", ("--ids", "1.5"), "takes whole-number token ids"),
        ("char", ("--prompt", "Now é"), "the character 'é' (U+00E9, at position 4) is not in the model's char-level vocabulary"),
        ("ids_model", ("--prompt", "Now"), 'no recorded text vocabulary (it was not trained with --data text:, and its input `ids` has vocab_size 100, not the 256 bytes): give the prompt as token ids with --ids "1 2 3"'),
        ("char", ("--prompt", "Now", "--ids", "1"), "give the prompt as text (--prompt) or as ids (--ids), one of them"),
        ("char", ("--prompt", "Now", "--max-new-tokens", "31"), "exceed the input `ids`'s max_len 32 by 2"),
        ("nosuchrun", ("--ids", "1"), "arch generate nosuchrun: no such file or run in this registry"),
        ("missing.safetensors", ("--ids", "1"), "missing.safetensors: no such file"),
    ],
)  # fmt: skip
def test_bad_input_exits_2(runs: Runs, source: str, args: tuple[str, ...], message: str) -> None:
    code, out, err = runs.generate(getattr(runs, source, source), *args)
    assert code == 2, (out, err)
    assert message in err and "Traceback" not in err + out
    assert out == ""  # nothing streamed before the request was refused
