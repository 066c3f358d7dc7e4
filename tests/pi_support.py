"""The real pi for the tests of the ``pi`` backend, and /proc helpers to watch its processes.

pi is taken from the checkout's ``.tools/pi`` (README: "The pi backend"), else from
PATH; when neither has it but node and npm are there, it is installed into
``.tools/pi`` first (once, about 15 s). Without node/npm the tests are skipped,
except under CI (``CI`` set), where they fail: CI must run them.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
import shutil
import subprocess
import time

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
PI_PACKAGE = "@mariozechner/pi-coding-agent@0.73.1"
LOCAL_PI = REPO / ".tools" / "pi" / "node_modules" / ".bin" / "pi"


def pi_command() -> list[str]:
    """The argv that starts pi (installing it first when needed); skip or fail without."""
    if os.access(LOCAL_PI, os.X_OK):
        return [str(LOCAL_PI)]
    if shutil.which("pi"):
        return ["pi"]
    if shutil.which("node") and shutil.which("npm"):
        install = ["npm", "install", "--prefix", str(LOCAL_PI.parents[2]), "--no-audit",
                   "--no-fund", "--loglevel=error", PI_PACKAGE]  # fmt: skip
        done = subprocess.run(install, capture_output=True, text=True, timeout=600)
        if done.returncode == 0 and os.access(LOCAL_PI, os.X_OK):
            return [str(LOCAL_PI)]
        pytest.fail(f"installing pi failed: {' '.join(install)}\n{done.stderr[-2000:]}")
    if os.environ.get("CI"):
        pytest.fail("pi is required under CI: .ci/run installs it (node and npm are missing)")
    pytest.skip("pi needs node and npm (see README, 'The pi backend')")


@dataclasses.dataclass(frozen=True)
class Proc:
    pid: int
    ppid: int
    state: str
    cmdline: str


def processes(marker: str) -> list[Proc]:
    """Processes whose environment contains ``marker`` (the backend's directories are
    named in it; the command line is no use: pi overwrites it with its title)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            environ = pathlib.Path(f"/proc/{entry}/environ").read_bytes()
            cmdline = pathlib.Path(f"/proc/{entry}/cmdline").read_bytes()
            stat = pathlib.Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        if marker.encode() in environ:
            command = cmdline.replace(b"\0", b" ").decode(errors="replace").strip()
            fields = stat[stat.rindex(")") + 2 :].split()
            found.append(Proc(int(entry), int(fields[1]), fields[0], command))
    return found


def zombie_children(parent: int) -> list[int]:
    """Children of ``parent`` that exited and were not reaped."""
    zombies = []
    try:
        tasks = os.listdir(f"/proc/{parent}/task")
    except OSError:
        return []
    for task in tasks:
        try:
            children = pathlib.Path(f"/proc/{parent}/task/{task}/children").read_text().split()
        except OSError:
            continue
        for child in children:
            try:
                stat = pathlib.Path(f"/proc/{child}/stat").read_text()
            except OSError:
                continue
            if stat[stat.rindex(")") + 2 :].split()[0] == "Z":
                zombies.append(int(child))
    return zombies


def check_no_leftovers(marker: str, allowed: set[int], parent: int, timeout: float = 5.0) -> None:
    """No zombie child of ``parent``, and no process with ``marker`` outside ``allowed``
    (both may take a moment: pi is reaped by its reader when its output ends)."""

    def clean() -> bool:
        strays = [p for p in processes(marker) if p.pid not in allowed]
        return not strays and not zombie_children(parent)

    deadline = time.monotonic() + timeout
    while not clean():
        if time.monotonic() >= deadline:
            strays = [p for p in processes(marker) if p.pid not in allowed]
            pytest.fail(f"left behind: {strays}; zombies: {zombie_children(parent)}")
        time.sleep(0.05)
