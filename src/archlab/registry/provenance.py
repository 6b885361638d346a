"""Where and how a run was started: ``provenance()`` (git state, host, user, pid, command,
versions), and the host and pid that own a running run, so a registry can tell a dead run from a
live one.
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
    }
    return info


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
