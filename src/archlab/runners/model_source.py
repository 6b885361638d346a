"""What ``arch explain`` and ``arch embed`` read: MODEL (a weights file archlab wrote) or RUN's
best checkpoint, loaded on the CPU, and the samples of data they look at.

``load_source`` names the model and returns its run (None for a file); ``samples`` gives the
data and the rows a command may use: every row of ``--data SOURCE``, or without it the run's
own validation split, recomputed from its recorded configuration as ``arch eval`` does.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from archlab.errors import UserInputError

if TYPE_CHECKING:
    from archlab.compiler.model import CompiledModel
    from archlab.registry import Run
    from archlab.runners.data import TaskData


def load_source(
    source: str, registry_url: str | None, what: str, error: type[UserInputError]
) -> tuple[CompiledModel, str, Run | None]:
    """The model ``source`` names, how to call it, and its run (None for a file); ``what``
    names the command in messages, ``error`` is the exception they are raised as."""
    from archlab.compiler import load_compiled
    from archlab.runners.init import InitError, run_checkpoint

    path = Path(source)
    if path.is_file():
        return load_compiled(path, device="cpu"), str(path), None
    if path.exists():
        raise error(f"{source} is a folder; give a .safetensors file or a run id")
    if path.suffix or len(path.parts) > 1:  # a path, not a run id
        raise error(f"{source}: no such file")
    try:
        weights, run = run_checkpoint(source, registry_url, what=what)
    except InitError as exc:
        raise error(str(exc)) from None
    return load_compiled(weights, device="cpu"), f"run {source}", run


def samples(
    model: CompiledModel,
    source: str,
    data_source: str | None,
    run: Run | None,
    error: type[UserInputError],
    purpose: str = "explain",
) -> tuple[TaskData, np.ndarray, str]:
    """The data, the rows samples may come from and how to name them: every row of
    ``data_source``, or the validation split of ``run`` (``purpose`` ends the advice when it
    cannot be rebuilt: "pass --data to <purpose> ...")."""
    from archlab.runners.data import load_data
    from archlab.runners.train import _recorded_config, validation_rows

    recorded = _recorded_config(run.config or {}) if run is not None else None
    seed = recorded.seed if recorded is not None else 0
    if data_source is None:
        if run is None or recorded is None:
            raise error(f"{source} is a weights file: say which data with --data SOURCE")
        data = load_data(recorded.data, model.spec, seed=seed)
        rows = validation_rows(run, data, recorded, purpose)
        return data, np.asarray(rows, dtype=np.int64), f"the validation split of run {run.id}"
    data = load_data(data_source, model.spec, seed=seed)
    return data, np.arange(len(data), dtype=np.int64), data.source


def token_speller(
    model: CompiledModel, config: dict[str, Any], data_vocab: dict[str, Any] | None
) -> tuple[str, Callable[[int], str]]:
    """The first token input's name and how to spell a token id as text: with the vocabulary
    the run (``config["text_vocab"]``) or the data recorded, as a byte for a 256-token
    vocabulary, else as the id (followed by a space)."""
    from archlab.runners.data.text import TextVocab
    from archlab.specs.models import TokensInput

    name, inp = next((k, v) for k, v in model.spec.inputs.items() if isinstance(v, TokensInput))
    record = config.get("text_vocab") or data_vocab
    vocab = None
    if isinstance(record, dict):
        vocab = TextVocab.from_record(record, inp.pad_id)
    elif inp.vocab_size == 256:
        vocab = TextVocab("byte")

    def spell(i: int) -> str:
        return vocab.decode([i]) if vocab is not None else f"{i} "

    return name, spell


__all__ = ["load_source", "samples", "token_speller"]
