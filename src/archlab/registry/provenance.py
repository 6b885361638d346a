"""Where and how a run was started: ``provenance()`` (git state, host, user, pid, command,
versions, installed packages), the working tree's uncommitted changes (``working_tree_diff``,
which ``arch train`` keeps with a run as an artifact), and the host and pid that own a running
run, so a registry can tell a dead run from a live one.
"""

from __future__ import annotations

import functools
import getpass
import hashlib
import os
import shutil
import socket
import subprocess
import sys
import time
from typing import Any

from archlab._version import versions


def provenance() -> dict[str, Any]:
    """Where and how a run was started: git state, host, user, pid, command, versions."""
    info: dict[str, Any] = {
        "host": socket.gethostname(),
        "user": _user(),
        "pid": os.getpid(),
        "argv": list(sys.argv),
        "cwd": os.getcwd(),
        "versions": versions(),
        "git": _git_state_of(os.getcwd()),
        "packages": list(installed_packages()),
    }
    return info


@functools.lru_cache(maxsize=1)
def installed_packages() -> tuple[str, ...]:
    """Every installed distribution as ``name==version``, sorted by name (lower case), read
    from package metadata once per process (nothing is imported)."""
    from importlib import metadata

    found: dict[str, str] = {}
    for dist in metadata.distributions():
        name = dist.metadata["Name"] if dist.metadata is not None else None
        if name:
            found.setdefault(str(name).lower(), f"{name}=={dist.version}")
    return tuple(found[key] for key in sorted(found))


#: The most bytes of uncommitted changes a run keeps (``working_tree_diff``): a larger diff is
#: cut there, with a note saying so and how long it was.
DIFF_LIMIT = 2_000_000


def working_tree_diff(cwd: str | None = None, limit: int = DIFF_LIMIT) -> str | None:
    """The uncommitted changes of the git working tree at ``cwd`` (default: the current
    directory): ``git diff HEAD`` (text; binary files as git names them), then the names of
    untracked files (their contents are not kept), at most ``limit`` bytes of UTF-8 with a last
    line saying where and why it was cut. None outside a git tree or when nothing is changed."""
    if shutil.which("git") is None:
        return None
    where = cwd or os.getcwd()

    def git(*args: str) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(
            ["git", *args], capture_output=True, timeout=30, check=False, cwd=where
        )

    diff = git("diff", "HEAD")
    if diff.returncode != 0:
        return None
    untracked = git("ls-files", "--others", "--exclude-standard", "-z")
    names = [n for n in untracked.stdout.decode(errors="replace").split("\0") if n]
    text = diff.stdout.decode(errors="replace")
    if names:
        text += "# untracked files (names only):\n" + "".join(f"#   {n}\n" for n in names)
    if not text:
        return None
    data = text.encode()
    if len(data) <= limit:
        return text
    kept = data[:limit].decode(errors="ignore")
    return kept + (
        f"\n# archlab: truncated: the first {limit} of {len(data)} bytes of the uncommitted "
        "changes are kept\n"
    )


@functools.lru_cache(maxsize=1)
def _user() -> str | None:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return None


GIT_STATE_TTL_S = 5.0
_git_states: dict[str, tuple[float, dict[str, Any] | None]] = {}


def _git_state_of(cwd: str) -> dict[str, Any] | None:
    """The git state of ``cwd``, reused for a few seconds: a burst of runs (a CV loop, a
    benchmark) runs git once, while a run started after a commit or an edit records it."""
    now = time.monotonic()
    cached = _git_states.get(cwd)
    if cached is not None and now - cached[0] < GIT_STATE_TTL_S:
        return cached[1]
    state = _git_state()
    _git_states[cwd] = (now, state)
    return state


def _git_state() -> dict[str, Any] | None:
    if shutil.which("git") is None:
        return None

    def git(*args: str) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(["git", *args], capture_output=True, timeout=10, check=False)

    head = git("rev-parse", "HEAD")
    if head.returncode != 0:
        return None
    diff = git("diff", "HEAD")
    status = git("status", "--porcelain")
    return {
        "commit": head.stdout.decode().strip(),
        "dirty": bool(status.stdout.strip()),
        "diff_sha256": hashlib.sha256(diff.stdout).hexdigest() if diff.stdout else None,
    }


def owner() -> tuple[str, int]:
    """This process's host and pid, as a run started or resumed here records them."""
    return hostname(), os.getpid()


@functools.lru_cache(maxsize=1)
def hostname() -> str:
    """This machine's host name (asked once per process)."""
    return socket.gethostname()


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` exists on this host (one of another user counts as alive)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
