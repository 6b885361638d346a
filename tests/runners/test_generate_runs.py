"""``generate_from``: a run trained on text writes text with the vocabulary it recorded
(byte- and char-level), an encoder-decoder from its source, streaming as it goes; seeds repeat;
every request a user can get wrong is a GenerateError naming the problem."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

import archlab
from archlab.registry import Registry
from archlab.runners.config import TrainConfig
from archlab.runners.data import BOS_ID
from archlab.runners.generate import GenerateError, GenerateOptions, generate_from
from archlab.runners.train import train

ROOT = Path(__file__).resolve().parents[2]
GPT = ROOT / "specs" / "gpt-tiny.json"
TEXT = (
    "To be, or not to be, that is the question:\n"
    "Whether 'tis nobler in the mind to suffer\n"
    "The slings and arrows of outrageous fortune,\n"
    "Or to take arms against a sea of troubles\n"
) * 4  # 680 bytes: a hold-out split of gpt-tiny's 256-token windows


def char_spec() -> dict[str, Any]:
    """gpt-tiny with a char-level vocabulary (not 256), a short context and one layer."""
    doc = json.loads(GPT.read_text())
    doc["name"] = "gpt-tiny-chars"
    doc["inputs"]["ids"].update(vocab_size=40, max_len=32, pad_id=0)
    doc["nodes"]["decoder"]["depth"] = 1
    return doc


class Trained:
    def __init__(self, root: Path) -> None:
        self.url = f"sqlite:///{root / 'r.db'}"
        text = root / "hamlet.txt"
        text.write_text(TEXT, encoding="utf-8")
        with Registry(self.url, artifacts=root / "artifacts") as registry:
            quick = {"epochs": 1, "warmup": 0.5, "batch_size": 8, "lr": 2e-3, "device": "cpu"}
            data = f"text:{text}"
            self.byte = train(GPT, TrainConfig(data=data, **quick), registry).runs[0]
            self.char = train(char_spec(), TrainConfig(data=data, **quick), registry).runs[0]
            reverse = TrainConfig(data="seq2seq:reverse?n=64", **quick)
            self.seq2seq = train(ROOT / "specs/transformer-tiny.json", reverse, registry).runs[0]


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Trained]:
    yield Trained(tmp_path_factory.mktemp("generate"))


def gen(runs: Trained, source: str, **options: Any) -> Any:
    stream = options.pop("stream", None)
    return generate_from(
        source, GenerateOptions(**options), registry_url=runs.url, device="cpu", stream=stream
    )


@pytest.mark.parametrize("level", ["byte", "char"])
def test_a_text_run_continues_a_text_prompt(runs: Trained, level: str) -> None:
    run = getattr(runs, level)
    pieces: list[tuple[list[int], str | None]] = []
    out = gen(
        runs, run, prompt="To be", max_new_tokens=12, seed=0, stream=lambda *p: pieces.append(p)
    )
    assert out.text is not None and out.text[0].startswith("To be")
    assert (out.prompt_tokens, out.new_tokens, out.seed) == (5, 12, 0)
    assert len(out.ids[0]) == 5 + 12
    # streamed: the prompt, then each token as it came; together the whole output
    assert pieces[0][0] == out.ids[0][:6] and all(len(ids) <= 1 for ids, _ in pieces[1:])
    assert [i for ids, _ in pieces for i in ids] == out.ids[0]
    assert "".join(text or "" for _, text in pieces) == out.text[0]


def test_the_run_records_its_vocabulary(runs: Trained) -> None:
    with Registry(runs.url) as registry:
        assert registry.get(runs.byte).config["text_vocab"] == {"level": "byte"}
        chars = sorted(set(TEXT))
        recorded = registry.get(runs.char).config["text_vocab"]
        assert recorded == {"level": "char", "code_points": [ord(c) for c in chars]}
    out = gen(runs, runs.char, prompt="Or", max_new_tokens=1, temperature=0)
    ids = {c: i for i, c in enumerate(chars, start=1)}  # pad id 0 kept free
    assert out.ids[0][:2] == [ids["O"], ids["r"]]


def test_seeds_repeat_and_greedy_is_the_models_own(runs: Trained) -> None:
    first = gen(runs, runs.char, prompt="The", max_new_tokens=20, seed=7)
    assert gen(runs, runs.char, prompt="The", max_new_tokens=20, seed=7).ids == first.ids
    assert gen(runs, runs.char, prompt="The", max_new_tokens=20, seed=8).ids != first.ids
    # ids of no character (padding, spare ids) are never sampled: all output decodes
    assert first.text is not None and "\ufffd" not in first.text[0]
    assert max(first.ids[0]) <= len(set(TEXT))
    greedy = gen(runs, runs.byte, prompt="The", max_new_tokens=6, temperature=0)
    assert greedy.seed is None
    with Registry(runs.url) as registry:
        run = registry.get(runs.byte)
        path = registry.artifact_file(
            run, next(a.path for a in run.artifacts if a.kind == "checkpoint")
        )
    model = archlab.load_compiled(path)
    expected = model.generate(torch.tensor([list(b"The")]), 6, do_sample=False)
    assert greedy.ids == expected.tolist()
    # the weights file works alone: 256 ids take a prompt as bytes, ids give ids
    assert gen(runs, str(path), prompt="The", max_new_tokens=6, temperature=0).ids == greedy.ids
    by_ids = gen(runs, str(path), ids=list(b"The"), max_new_tokens=6, temperature=0)
    assert by_ids.ids == greedy.ids and by_ids.text is None
    beams = gen(runs, runs.byte, prompt="The", max_new_tokens=4, num_beams=3)
    assert beams.new_tokens == 4 and beams.text is not None


def test_a_seq2seq_run_starts_from_its_bos(runs: Trained) -> None:
    pieces: list[list[int]] = []
    out = gen(
        runs, runs.seq2seq, ids=[3, 4, 5, 6], temperature=0, stream=lambda i, t: pieces.append(i)
    )
    assert out.src == [[3, 4, 5, 6]] and out.ids[0][0] == BOS_ID
    assert (out.prompt_tokens, out.new_tokens) == (1, 4)  # the tasks' outputs: the source's length
    assert [i for ids in pieces for i in ids] == out.ids[0][1:] and out.text is None
    assert gen(runs, runs.seq2seq, ids=[3, 4], start_id=2, num_beams=2).ids[0][0] == 2


def test_a_prompt_the_vocabulary_lacks(runs: Trained) -> None:
    with pytest.raises(GenerateError, match=r"the character 'é' \(U\+00E9, at position 3\) is not"):
        gen(runs, runs.char, prompt="To é")
    with pytest.raises(GenerateError, match=r"no recorded text vocabulary .* --ids"):
        gen(runs, runs.seq2seq, prompt="abc")


def test_bad_requests(runs: Trained, tmp_path: Path) -> None:
    vit = tmp_path / "vit.safetensors"
    archlab.compile_spec(archlab.load_spec(ROOT / "specs/vit-tiny-digits.json")).save(vit)
    cases: list[tuple[str, dict[str, Any], str]] = [
        (str(vit), {"ids": [1]}, "cannot generate: generation needs a spec whose one output"),
        (
            runs.char,
            {"prompt": "To be " * 6},
            r"the prompt has 36 tokens, 4 more than .* max_len 32",
        ),
        (runs.char, {"ids": [1, 40, 99]}, r"vocab_size 40 \(ids 0..39\); outside it: 40, 99"),
        (runs.char, {"prompt": "To", "top_p": 1.5}, r"top_p must lie in \(0, 1\]"),
        (runs.char, {"prompt": "To", "top_p": 0.0}, r"top_p must lie in \(0, 1\]"),
        (
            runs.char,
            {"prompt": "To", "max_new_tokens": 40},
            "exceed the input `ids`'s max_len 32 by 10",
        ),
        (runs.char, {"prompt": "To", "temperature": -1}, "temperature must be >= 0"),
        (
            runs.char,
            {"prompt": "To", "num_beams": 2, "top_k": 3},
            "beam search .* is deterministic",
        ),
        (runs.char, {"prompt": ""}, "the prompt is empty"),
        (runs.char, {}, "give the prompt as text .* or as ids"),
        (runs.char, {"prompt": "To", "ids": [1]}, "give the prompt as text .* or as ids"),
        (
            "nosuchrun",
            {"ids": [1]},
            "arch generate nosuchrun: no such file or run in this registry",
        ),
        (str(tmp_path / "gone.safetensors"), {"ids": [1]}, "gone.safetensors: no such file"),
        (str(tmp_path), {"ids": [1]}, "is a folder"),
    ]
    for source, options, message in cases:
        with pytest.raises(GenerateError, match=message):
            gen(runs, source, **options)
    tiny = tmp_path / "transformer.safetensors"
    archlab.compile_spec(archlab.load_spec(ROOT / "specs/transformer-tiny.json")).save(tiny)
    with pytest.raises(GenerateError, match="encoder-decoder: its output starts from a start id"):
        gen(runs, str(tiny), ids=[3, 4])
    with pytest.raises(GenerateError, match=r"the source has 17 tokens, 1 more than .* max_len 16"):
        gen(runs, str(tiny), ids=[3] * 17, start_id=1)
    with pytest.raises(GenerateError, match="no registry to look a run up in"):
        generate_from(
            "nosuchrun", GenerateOptions(ids=[1]), registry_url=f"sqlite:///{tmp_path / 'none.db'}"
        )
