"""``TaskData``: rows that agree, and a fold's subset of them."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from archlab.runners.data import TaskData, load_data


def test_subset_picks_rows(vit) -> None:
    data = load_data("digits", vit())
    rows = [5, 0, 1796]
    for indices in (rows, np.array(rows), torch.tensor(rows)):
        part = data.subset(indices)
        assert len(part) == 3
        assert torch.equal(part.inputs["image"], data.inputs["image"][rows])
        assert torch.equal(part.targets, data.targets[rows])
        assert (part.content_sha256, part.classes) == (data.content_sha256, data.classes)
    assert len(data.subset([])) == 0
    with pytest.raises(TypeError, match="integer row indices"):
        data.subset(np.ones(len(data), dtype=bool))


def test_task_data_rows_must_agree() -> None:
    with pytest.raises(ValueError, match="rows differ"):
        TaskData(
            "classify", {"x": torch.zeros(3, 2)}, torch.zeros(2, dtype=torch.int64), None, 2,
            None, "test", "0" * 64, "test",
        )  # fmt: skip
