"""Bad checkpoints give an InteropError naming the problem; hub ids resolve through the cache."""

from __future__ import annotations

import json
import sys
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import archlab
from archlab.errors import InteropError, UserInputError

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

Save = Callable[..., tuple[Any, Path]]


class NotATensor:
    """Something no checkpoint should carry: torch.load(weights_only=True) refuses it."""


def _config(folder: Path) -> dict[str, Any]:
    return json.loads((folder / "config.json").read_text())


def _write_config(folder: Path, config: dict[str, Any]) -> None:
    (folder / "config.json").write_text(json.dumps(config))


def break_model_type(folder: Path) -> str:
    _write_config(folder, {**_config(folder), "model_type": "bloom"})
    return r"model_type 'bloom' is not supported.*gpt2"


def truncate(folder: Path) -> str:
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    return r"cannot read .*model\.safetensors \(truncated"


def remove_weights(folder: Path) -> str:
    (folder / "model.safetensors").unlink()
    return "has no weights: expected model.safetensors"


def remove_config(folder: Path) -> str:
    (folder / "config.json").unlink()
    return "has no config.json"


def misshape(folder: Path) -> str:
    from safetensors.torch import load_file, save_file

    state = load_file(folder / "model.safetensors")
    state["transformer.h.1.mlp.c_fc.weight"] = torch.zeros(36, 51)
    save_file(state, folder / "model.safetensors", metadata={"format": "pt"})
    return (
        r"'transformer\.h\.1\.mlp\.c_fc\.weight' has shape \[36, 51\], the config needs \[36, 50\]"
    )


def fewer_layers_in_config(folder: Path) -> str:
    _write_config(folder, {**_config(folder), "n_layer": 1})
    return r"tensor\(s\) a GPT2LMHeadModel of this config does not use \(transformer\.h\.1\..*n_layer=1"


def more_layers_in_config(folder: Path) -> str:
    _write_config(folder, {**_config(folder), "n_layer": 3})
    return r"no tensor 'transformer\.h\.2\.ln_1\.weight'"


def pickle_with_an_object(folder: Path) -> str:
    (folder / "model.safetensors").unlink()
    torch.save({"wte.weight": torch.zeros(2), "extra": NotATensor()}, folder / "pytorch_model.bin")
    return "holds more than tensors, which archlab never unpickles"


def unknown_architecture(folder: Path) -> str:
    _write_config(folder, {**_config(folder), "architectures": ["GPT2ForTokenClassification"]})
    return "'GPT2ForTokenClassification' are not supported; supported: GPT2LMHeadModel, GPT2Model"


BREAKERS = [
    break_model_type,
    truncate,
    remove_weights,
    remove_config,
    misshape,
    fewer_layers_in_config,
    more_layers_in_config,
    pickle_with_an_object,
    unknown_architecture,
]


@pytest.mark.parametrize("breaker", BREAKERS, ids=[b.__name__ for b in BREAKERS])
def test_bad_checkpoints_are_named(save_gpt2: Save, breaker: Callable[[Path], str]) -> None:
    _source, folder = save_gpt2()
    pattern = breaker(folder)
    with pytest.raises(InteropError, match=pattern) as caught:
        archlab.import_pretrained(folder)
    assert isinstance(caught.value, UserInputError)


def test_a_missing_folder_and_a_file(tmp_path: Path) -> None:
    with pytest.raises(InteropError, match="does not exist"):
        archlab.import_pretrained(tmp_path / "nowhere")
    (tmp_path / "f").write_text("x")
    with pytest.raises(InteropError, match="is a file"):
        archlab.import_pretrained(tmp_path / "f")


def test_a_missing_shard_is_named(save_gpt2: Save) -> None:
    _source, folder = save_gpt2(how="sharded")
    index = json.loads((folder / "model.safetensors.index.json").read_text())
    shard = sorted(set(index["weight_map"].values()))[-1]
    (folder / shard).unlink()
    with pytest.raises(InteropError, match=f"shard '{shard}' named in .* is missing"):
        archlab.import_pretrained(folder)


def _fake_hub(monkeypatch: pytest.MonkeyPatch, cached: Path | None) -> list[dict[str, Any]]:
    """A huggingface_hub whose network always fails and whose cache holds ``cached``."""
    calls: list[dict[str, Any]] = []

    def snapshot_download(repo_id: str, **kwargs: Any) -> str:
        calls.append({"repo_id": repo_id, **kwargs})
        if not kwargs.get("local_files_only"):
            raise ConnectionError("no network")
        if cached is None:
            raise FileNotFoundError("not in the cache")
        return str(cached)

    hub = types.ModuleType("huggingface_hub")
    hub.snapshot_download = snapshot_download  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "huggingface_hub", hub)
    return calls


def test_hub_ids_fall_back_to_the_cache_offline(
    save_gpt2: Save, monkeypatch: pytest.MonkeyPatch
) -> None:
    _source, folder = save_gpt2()
    calls = _fake_hub(monkeypatch, folder)
    model = archlab.import_pretrained("hf:someone/tiny-gpt2")
    assert model.spec.name == "someone-tiny-gpt2"
    assert [c["repo_id"] for c in calls] == ["someone/tiny-gpt2"] * 2
    assert calls[-1]["local_files_only"] is True


def test_hub_ids_neither_online_nor_cached(monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_hub(monkeypatch, None)
    with pytest.raises(InteropError, match="nor find it in the local cache: ConnectionError"):
        archlab.import_pretrained("hf:someone/tiny-gpt2")


def test_hub_ids_without_the_package(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)
    with pytest.raises(InteropError, match=r"pip install 'archlab\[hub\]'"):
        archlab.import_pretrained("hf:someone/tiny-gpt2")
