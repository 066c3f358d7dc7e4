"""npm packages the live tests drive as clients (openai-node, the Vercel AI SDK),
installed into a folder of the checkout's ``.tools`` on first use, at pinned versions.

Without node (or without npm while a pinned package is missing) those tests are
skipped, except under CI (``CI`` set), where they fail: CI must run them.
"""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import subprocess

import pytest


def installed_version(modules: pathlib.Path, name: str) -> str | None:
    """The version of package ``name`` in ``modules`` (a node_modules folder), if any."""
    try:
        return str(json.loads((modules / name / "package.json").read_text())["version"])
    except (OSError, ValueError, KeyError):
        return None


def node_modules(prefix: pathlib.Path, packages: tuple[str, ...], needed_by: str) -> pathlib.Path:
    """``prefix/node_modules`` with every one of ``packages`` (``name@version``) at its
    version, installed with npm first when one is missing or at another version (an
    earlier checkout's).

    :param needed_by: the tests that need them, for the skip message.
    """
    modules = prefix / "node_modules"
    pins = [package.rpartition("@") for package in packages]  # scoped names hold an @ too
    installed = all(installed_version(modules, name) == version for name, _, version in pins)
    if not shutil.which("node") or not (installed or shutil.which("npm")):
        if os.environ.get("CI"):
            pytest.fail("node and npm are required under CI (.ci/run installs them for pi)")
        pytest.skip(f"{needed_by} need node (and npm to install {', '.join(packages)})")
    if not installed:
        install = ["npm", "install", "--prefix", str(prefix), "--no-audit", "--no-fund",
                   "--loglevel=error", *packages]  # fmt: skip
        done = subprocess.run(install, capture_output=True, text=True, timeout=300)
        if done.returncode != 0:
            pytest.fail(f"{' '.join(install)} failed:\n{done.stderr[-2000:]}")
    return modules
