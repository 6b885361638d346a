"""``__version__`` lives in ``archlab._version``: no module inside archlab imports the top package
for it (that import would load the whole package's ``__init__`` from deep inside it)."""

from __future__ import annotations

import re
from pathlib import Path

import archlab
from archlab._version import __version__, versions

SRC = Path(archlab.__file__).parent


def test_the_top_package_re_exports_the_version() -> None:
    assert archlab.__version__ == __version__ == versions()["archlab"]


def test_no_module_imports_the_top_package_for_its_version() -> None:
    offenders = [
        str(path.relative_to(SRC))
        for path in SRC.rglob("*.py")
        if path.name != "__init__.py" or path.parent != SRC
        if re.search(r"^\s*import archlab\s*$|archlab\.__version__", path.read_text(), re.M)
    ]
    assert offenders == []
