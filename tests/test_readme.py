"""Every command block of the README runs as printed, from a folder that holds only what a fresh clone
has (its jobs/, k8s/ and the .venv that `make` makes), with its outputs there: the README cannot
drift. A block whose first line says it needs a GPU, a cluster or Docker (or is the set-up itself)
is the only kind not run."""
from __future__ import annotations

import os
import re
import subprocess

import pytest

from tests.conftest import REPO

BLOCK = re.compile(r"^```(sh|python)\n(.*?)^```", re.M | re.S)
NOT_HERE = re.compile(r"^# needs (a GPU|a cluster|Docker|a fresh machine)")
BLOCKS = [(kind, text) for kind, text in BLOCK.findall((REPO / "README.md").read_text())]


def test_the_readme_has_runnable_blocks_and_says_why_the_others_are_not():
    runnable = [text for _, text in BLOCKS if not NOT_HERE.match(text)]
    assert len(runnable) >= 4
    assert all(NOT_HERE.match(text) for _, text in BLOCKS if "docker " in text or "make test" in text)


@pytest.fixture(scope="module")
def clone(tmp_path_factory):
    """A folder like a fresh clone's root, where the commands write (out/ stays in here)."""
    root = tmp_path_factory.mktemp("clone")
    for name in (".venv", "jobs", "k8s", "conf"):
        (root / name).symlink_to(REPO / name)
    return root


@pytest.mark.parametrize(("kind", "text"), [b for b in BLOCKS if not NOT_HERE.match(b[1])],
                         ids=[f"block{i}" for i, b in enumerate(BLOCKS) if not NOT_HERE.match(b[1])])
def test_a_readme_block_runs_as_printed(clone, kind, text):
    env = dict(os.environ, RAY_AUTH_MODE="disabled")
    command = ["bash", "-euo", "pipefail", "-c", text] if kind == "sh" else [str(REPO / ".venv" / "bin" / "python"), "-c", text]
    done = subprocess.run(command, cwd=clone, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, f"{text}\n--- stdout\n{done.stdout[-3000:]}\n--- stderr\n{done.stderr[-3000:]}"
    assert "Traceback" not in done.stderr
