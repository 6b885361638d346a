"""``load_data``: an unknown source kind lists the kinds, with a hint for a likely one."""

from __future__ import annotations

import pytest

from archlab.runners.data import DataError, load_data


def test_unknown_source_kinds_list_the_kinds(vit) -> None:
    kinds = (
        r"the kinds are: digits, npz:PATH, imagefolder:PATH, text:PATH, seq2seq:copy\|reverse\|sort"
    )
    with pytest.raises(DataError, match=rf"unknown data source 'mnist'; {kinds}$"):
        load_data("mnist", vit())
    with pytest.raises(DataError, match=r"for an npz file write npz:train\.npz"):
        load_data("train.npz", vit())
    with pytest.raises(DataError, match=r"'npz:' names no path; write npz:PATH"):
        load_data("npz:", vit())
