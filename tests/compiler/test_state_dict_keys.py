"""Every zoo spec's module keeps the state-dict keys and shapes its saved weights were written
with, so checkpoints and weights files of earlier builds still load.

The reference (``data/state_dict_keys.json``) was written from the modules themselves; a change
here is a change of the weights format and needs a migration of saved files, not a new fixture.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import archlab

ROOT = Path(__file__).parents[2]
REFERENCE = Path(__file__).parent / "data" / "state_dict_keys.json"
ZOO = sorted((ROOT / "specs").glob("*.json"))


def keys_and_shapes(path: Path) -> dict[str, list[int]]:
    model = archlab.compile_spec(path, device="meta")
    return {name: list(t.shape) for name, t in sorted(model.state_dict().items())}


@pytest.mark.parametrize("path", ZOO, ids=[p.stem for p in ZOO])
def test_state_dict_keys_and_shapes_are_unchanged(path: Path) -> None:
    reference = json.loads(REFERENCE.read_text())
    assert path.stem in reference, f"no reference keys for {path.stem}"
    assert keys_and_shapes(path) == reference[path.stem]


if __name__ == "__main__":  # writes the reference (only for a new zoo spec)
    table = {p.stem: keys_and_shapes(p) for p in ZOO}
    REFERENCE.write_text(json.dumps(table, indent=1, sort_keys=True) + "\n")
