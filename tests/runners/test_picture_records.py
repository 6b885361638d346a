"""``show_run`` and ``explain_run`` record what they drew as an eval run linked to the run.

The registry (module scope) holds runs made through the registry API, each with an untrained
checkpoint (seeded initial weights) and the configuration of a hold-out split of its data, so
nothing here trains: ``dynamic`` (specs/dynamicvit-tiny-digits.json, digits) and ``gpt`` (a tiny
byte-level GPT on a text file: its relevance is an HTML page).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from archlab import compile_spec
from archlab.registry import Registry, Run
from archlab.runners import explain_run as explain_module
from archlab.runners import prune_show
from archlab.runners.data import load_data
from archlab.runners.explain_run import explain_run
from archlab.viz.save import PlotError

ROOT = Path(__file__).parents[2]
DYNAMIC = ROOT / "specs/dynamicvit-tiny-digits.json"


@dataclass(frozen=True)
class Fixture:
    url: str
    root: Path
    dynamic: str
    gpt: str
    weights: Path


def _gpt() -> dict[str, Any]:
    doc: dict[str, Any] = json.loads((ROOT / "specs/gpt-tiny.json").read_text())
    doc["inputs"]["ids"]["max_len"] = 24
    doc["nodes"]["tok"]["dim"] = 32
    doc["nodes"]["decoder"]["depth"] = 1
    return doc


def _with_checkpoint(reg: Registry, spec: Any, config: dict[str, Any], path: Path) -> str:
    compile_spec(spec, seed=0).save(path)
    with reg.start_run(spec, config) as run:
        run.log_artifact(path, "checkpoint")
    return run.id


@pytest.fixture(scope="module")
def fx(tmp_path_factory: pytest.TempPathFactory) -> Fixture:
    root = tmp_path_factory.mktemp("picture-records")
    url = f"sqlite:///{root / 'r.db'}"
    text = root / "text.txt"
    text.write_text("To be, or not to be, that is the question.\n" * 20)
    dynamic = json.loads(DYNAMIC.read_text())
    with Registry(url) as reg:
        vit = _with_checkpoint(reg, dynamic, {"data": "digits"}, root / "dynamic.safetensors")
        gpt = _with_checkpoint(reg, _gpt(), {"data": f"text:{text}"}, root / "gpt.safetensors")
    return Fixture(url, root, vit, gpt, root / "dynamic.safetensors")


def eval_runs(fx: Fixture) -> list[Run]:
    with Registry(fx.url, create=False) as reg:
        return [reg.get(r.id) for r in reg.runs("kind == 'eval'")]


def stored(fx: Fixture, run: Run, kind: str) -> Path:
    """The one artifact of ``kind`` ``run`` holds, as a file of the registry."""
    (artifact,) = [a for a in run.artifacts if a.kind == kind]
    with Registry(fx.url, create=False) as reg:
        return reg.artifact_file(run, artifact.path)


def test_show_run_records_the_picture_as_an_eval_run(fx: Fixture, tmp_path: Path) -> None:
    before = len(eval_runs(fx))
    with Registry(fx.url, create=False) as reg:
        report = prune_show.show_run(fx.dynamic, reg, output=tmp_path / "kept.png", images=3)
    assert report.eval_run is not None and len(eval_runs(fx)) == before + 1
    with Registry(fx.url, create=False) as reg:
        recorded = reg.get(report.eval_run)
    assert recorded.kind == "eval" and recorded.status == "completed"
    assert recorded.tags == {"evaluates": fx.dynamic, "evaluation": "prune-show"}
    data = load_data("digits", compile_spec(DYNAMIC).spec)
    assert recorded.config["evaluates"] == fx.dynamic
    assert recorded.config["evaluation"] == "prune-show"
    assert recorded.config["images"] == 3 and recorded.config["split"] == "val"
    assert recorded.config["rows"] == list(report.indices) and len(report.indices) == 3
    assert recorded.config["data"] == "digits"
    assert recorded.config["data_sha256"] == data.content_sha256
    assert recorded.config["examples"] == 3
    picture = stored(fx, recorded, "kept-patches")
    assert picture.read_bytes() == (tmp_path / "kept.png").read_bytes()
    with Image.open(picture) as image:
        assert image.format == "PNG"


def test_show_run_without_record_or_with_a_failed_drawing_records_nothing(
    fx: Fixture, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = len(eval_runs(fx))
    with Registry(fx.url, create=False) as reg:
        report = prune_show.show_run(
            fx.dynamic, reg, output=tmp_path / "a.png", images=1, record=False
        )
    assert report.eval_run is None and (tmp_path / "a.png").is_file()

    def fail(*_: object) -> None:
        raise PlotError("the disk is full")

    monkeypatch.setattr(prune_show, "draw_kept", fail)
    with Registry(fx.url, create=False) as reg, pytest.raises(PlotError):
        prune_show.show_run(fx.dynamic, reg, output=tmp_path / "b.png", images=1)
    assert len(eval_runs(fx)) == before


def test_explain_run_records_the_picture_with_its_settings(fx: Fixture, tmp_path: Path) -> None:
    before = len(eval_runs(fx))
    result = explain_run(
        fx.dynamic, "digits", methods=["attention", "generic"], indices=[4, 2],
        output=tmp_path / "maps.png", registry_url=fx.url, target=3,
    )  # fmt: skip
    assert result.eval_run is not None and len(eval_runs(fx)) == before + 1
    assert result.to_dict()["eval_run"] == result.eval_run
    (recorded,) = [r for r in eval_runs(fx) if r.id == result.eval_run]
    assert recorded.tags == {"evaluates": fx.dynamic, "evaluation": "explain"}
    config = recorded.config
    assert config["evaluation"] == "explain" and config["methods"] == ["attention", "generic"]
    assert config["indices"] == [4, 2] and config["rows"] == [4, 2] and config["count"] is None
    assert config["target"] == 3 and config["split"] == "all" and config["examples"] == 2
    assert config["data"] == "digits" and len(config["data_sha256"]) == 64
    with Image.open(stored(fx, recorded, "relevance-map")) as image:
        assert image.format == "PNG" and image.size[0] > 0


def test_explain_run_records_a_token_models_html_page(fx: Fixture, tmp_path: Path) -> None:
    page = tmp_path / "tokens.html"
    result = explain_run(fx.gpt, None, count=2, output=page, registry_url=fx.url)
    assert result.eval_run is not None
    (recorded,) = [r for r in eval_runs(fx) if r.id == result.eval_run]
    assert recorded.config["split"] == "val" and recorded.config["count"] == 2
    assert recorded.config["rows"] == list(result.indices)
    assert stored(fx, recorded, "relevance-map").read_text() == page.read_text()


def test_explain_run_records_nothing_for_a_file_without_record_or_when_drawing_fails(
    fx: Fixture, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = len(eval_runs(fx))
    out = tmp_path / "maps.png"
    from_file = explain_run(str(fx.weights), "digits", count=1, output=out, registry_url=fx.url)
    assert from_file.eval_run is None and out.is_file()
    unrecorded = explain_run(
        fx.dynamic, None, count=1, output=out, registry_url=fx.url, record=False
    )
    assert unrecorded.eval_run is None

    def fail(*_: object) -> None:
        raise PlotError("the disk is full")

    monkeypatch.setattr(explain_module, "draw_heatmaps", fail)
    with pytest.raises(PlotError):
        explain_run(fx.dynamic, None, count=1, output=out, registry_url=fx.url)
    assert len(eval_runs(fx)) == before
