"""Writing an archlab model as a Hugging Face model folder (``config.json`` plus
``model.safetensors``) that ``transformers``' ``from_pretrained`` loads with the same outputs.

Which family a model goes to is read from its spec's structure (``families.exporter_for``); a
spec no family can express exactly is refused with what does not fit. The folder appears whole
or not at all (``archlab.files.replace_folder_atomically``).
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import TYPE_CHECKING

from archlab.errors import UserInputError
from archlab.interop.families import ConversionError, exporter_for

if TYPE_CHECKING:
    from archlab.compiler import CompiledModel

# The family modules that can export, imported (so registered) before a family is chosen.
CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"


class ExportError(ConversionError, UserInputError):
    """A model that cannot be exported (the message says what does not fit): exit 2 in the CLI."""


def export_hf(
    model: CompiledModel,
    directory: str | os.PathLike[str],
    *,
    family: str | None = None,
    replace: bool = False,
) -> Path:
    """Write ``model`` as a Hugging Face folder at ``directory`` and return its path.

    ``family`` (a family name or ``model_type``: ``llama``) forces one family; by default the
    first the spec fits. ``directory`` must be absent or empty, or with ``replace`` a model folder
    (one with a ``config.json``), replaced as a whole. Nothing is written when the spec does not
    fit (``ExportError``, a ``ConversionError``) or the folder cannot be written
    (``archlab.files.OutputError``)."""
    from safetensors.torch import save_file

    import archlab.interop.families.catalog  # noqa: F401  (every family registers itself)
    from archlab.files import replace_folder_atomically

    try:
        chosen = exporter_for(model.spec, family)
        assert chosen.export is not None
        config, tensors = chosen.export(model.spec, model.state_dict())
    except ConversionError as exc:
        raise ExportError(str(exc)) from None

    def write(folder: Path) -> None:
        (folder / CONFIG_NAME).write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
        weights = folder / WEIGHTS_NAME
        with open(weights, "xb") as f:  # created here, so with the umask's permissions
            mode = stat.S_IMODE(os.fstat(f.fileno()).st_mode)
        save_file(tensors, weights, metadata={"format": "pt"})  # (its own file is owner-only)
        os.chmod(weights, mode)

    return replace_folder_atomically(directory, write, replace=replace, marker=CONFIG_NAME)


__all__ = ["CONFIG_NAME", "WEIGHTS_NAME", "ExportError", "export_hf"]
