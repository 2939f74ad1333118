"""The README's runnable examples run, and the commands it names exist."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def readme_tested_blocks() -> list[str]:
    """Python blocks that directly follow a ``<!-- tested -->`` marker."""
    return re.findall(r"<!-- tested -->\s*```python\n(.*?)```", README, flags=re.S)


def test_readme_has_tested_examples():
    assert readme_tested_blocks(), "README lost its tested usage example"


@pytest.mark.parametrize("index", range(len(readme_tested_blocks())))
def test_readme_example_runs(index, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    exec(compile(readme_tested_blocks()[index], f"README block {index}", "exec"), {})


def test_readme_commands_exist():
    for script in ("scripts/demo.sh", "scripts/test.sh"):
        assert f"bash {script}" in README
        assert os.access(ROOT / script, os.X_OK)
    ci = (ROOT / ".ci" / "run").read_text()
    assert "bash scripts/test.sh" in ci
