"""House rules checked on the repository itself: cited files exist, modules and functions stay
short, the parity fixtures can be regenerated, the package metadata builds without warnings."""

from __future__ import annotations

import ast
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "data" / "fixtures"

# ---------------------------------------------------------------------------------------------
# (a) every repository file named in code, docstrings, comments and docs exists
# ---------------------------------------------------------------------------------------------

#: Folders whose text is checked, and the top-level folders that mark a name as a repo path.
SCANNED = ("keras_coordatt", "tests", "benchmarks", "scripts")
REPO_FOLDERS = ("keras_coordatt", "tests", "benchmarks", "scripts", "docs", "notebooks")
SCANNED_SUFFIXES = (".py", ".md", ".sh")
#: This file holds deliberately wrong examples of citations.
NOT_SCANNED = frozenset({"tests/test_house.py"})
#: Bare ``*.py`` names of the upstream PyTorch code (not files of this repository).
UPSTREAM_FILES = frozenset(
    {"coordatt.py", "mbv2_ca.py", "mobilenetv2.py", "i2rnetv3.py", "i2rnetv3_yt.py", "mnext.py",
     "mobilenext.py", "dataloaders.py"}
)
#: Names of files the code writes (exports, reports), not files of the repository.
EXAMPLE_NAMES = frozenset({"MODEL_CARD.md", "bench.md", "09_bad.py", "fake_train.py"})

_URL = re.compile(r"[a-z][a-z0-9+.-]*://\S+", re.IGNORECASE)
# a token: a run of characters that can belong to a path (quotes, commas, ... end it)
_TOKEN = re.compile(r"[^\s`'\"(),;:|=]+")
# a name ending in .md / .py, with or without folders before it
_DOC_OR_PY = re.compile(r"(?:[\w.-]+/)*[\w-][\w.-]*\.(?:md|py)")
# any path that starts with one of the repository's top-level folders
_REPO_PATH = re.compile(r"(?:" + "|".join(REPO_FOLDERS) + r")/[\w./-]*")
# placeholders and patterns: <name>, {value}, *, $VAR, [...], ...
_PLACEHOLDER = re.compile(r"[<>{}*$%\[\]\\]|\.\.\.|…")


def _scanned_files() -> list[Path]:
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", *SCANNED],
        cwd=ROOT, capture_output=True, text=True, check=True,
    ).stdout.split()
    return [ROOT / name for name in listed
            if name.endswith(SCANNED_SUFFIXES) and name not in NOT_SCANNED
            and (ROOT / name).is_file()]


def _repo_basenames() -> set[str]:
    return {path.name for path in ROOT.rglob("*") if ".git" not in path.parts}


def cited_names(text: str) -> set[str]:
    """Names in ``text`` that look like repository files (URLs and placeholders left out)."""
    names = set()
    for token in _TOKEN.findall(_URL.sub(" ", text)):
        token = token.rstrip(".")
        if _PLACEHOLDER.search(token):
            continue
        if _DOC_OR_PY.fullmatch(token) or _REPO_PATH.fullmatch(token):
            names.add(token.rstrip("/"))
    return names


def missing_citation(name: str, citing: Path, basenames: set[str]) -> bool:
    """True when ``name``, cited in ``citing``, names a repository file that does not exist."""
    if name in EXAMPLE_NAMES or name.startswith((".", "/")):
        return False
    if "/" in name:
        if name.split("/")[0] not in REPO_FOLDERS:
            return False  # a path inside another repository or a user's file system
        return not (ROOT / name).exists()
    if name.endswith(".md"):  # a bare document name: at the root, next to the citing file,
        return not (  # or package data (keras_coordatt/export/templates/model_card.md)
            (ROOT / name).exists() or (citing.parent / name).exists()
            or any((ROOT / "keras_coordatt").rglob(name))
        )
    if name.endswith(".py"):
        return name not in basenames and name not in UPSTREAM_FILES
    return not (ROOT / name).exists()  # a top-level folder


def test_citation_check_is_meaningful():
    text = (
        "See ``ARCHITECTURE.md`` §b and docs/reference_networks.md; tests/data/nothing.npy;"
        " https://github.com/a/b/blob/main/NOPE.md, ~/.keras/x.py, model.tflite,"
        " tests/data/fixtures/<name>_keys.txt, coordatt.py, nonexistent_module.py,"
        ' f"keras_coordatt/w-{blob[:12]}.pth", results/<date>-ca_graph.md, docs/ (a folder).'
    )
    names = cited_names(text)
    assert names == {
        "ARCHITECTURE.md", "docs/reference_networks.md", "tests/data/nothing.npy",
        "coordatt.py", "nonexistent_module.py", "docs",
    }
    basenames = _repo_basenames()
    here = Path(__file__)
    assert {n for n in names if missing_citation(n, here, basenames)} == {
        "ARCHITECTURE.md", "tests/data/nothing.npy", "nonexistent_module.py",
    }


def test_every_cited_repository_file_exists():
    basenames = _repo_basenames()
    missing = []
    for path in _scanned_files():
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            for name in sorted(cited_names(line)):
                if missing_citation(name, path, basenames):
                    missing.append(f"{path.relative_to(ROOT)}:{number}: {name}")
    assert not missing, "names of files that are not in the repository:\n" + "\n".join(missing)


# ---------------------------------------------------------------------------------------------
# (b) modules with one job: short files, short functions (tables excepted)
# ---------------------------------------------------------------------------------------------

MAX_FILE_LINES = 500
MAX_FUNCTION_LINES = 80
PACKAGE_FILES = sorted((ROOT / "keras_coordatt").rglob("*.py"))


def code_lines(tree: ast.Module, total: int) -> int:
    """Lines of a module without its module-level assignments (tables of data)."""
    tables = sum(
        node.end_lineno - node.lineno + 1
        for node in tree.body
        if isinstance(node, (ast.Assign, ast.AnnAssign)) and node.end_lineno is not None
    )
    return total - tables


def long_functions(tree: ast.Module) -> list[str]:
    return [
        f"{node.name} ({node.end_lineno - node.lineno + 1} lines)"
        for node in ast.walk(tree)
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
        and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES
    ]


@pytest.mark.parametrize(
    "path", PACKAGE_FILES, ids=[str(p.relative_to(ROOT)) for p in PACKAGE_FILES]
)
def test_module_and_function_length(path):
    source = path.read_text(encoding="utf-8")
    tree = ast.parse(source)
    lines = code_lines(tree, len(source.splitlines()))
    assert lines <= MAX_FILE_LINES, f"{lines} lines without tables (at most {MAX_FILE_LINES})"
    assert not long_functions(tree), f"functions over {MAX_FUNCTION_LINES} lines"


def test_length_rules_see_tables_and_nesting():
    tree = ast.parse("TABLE = {\n" + "    1: 2,\n" * 600 + "}\n\n\ndef f():\n    pass\n")
    assert code_lines(tree, 605) == 3
    body = "".join(f"        x{i} = {i}\n" for i in range(80))
    assert long_functions(ast.parse(f"def outer():\n    def inner():\n{body}")) == [
        "outer (82 lines)", "inner (81 lines)",
    ]


# ---------------------------------------------------------------------------------------------
# (c) the fixtures in tests/data are what the original networks compute
# ---------------------------------------------------------------------------------------------


def test_make_fixtures_reproduces_the_committed_fixtures(tmp_path):
    out = tmp_path / "fixtures"
    env = dict(os.environ, KERAS_BACKEND="torch")
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "make_fixtures.py"), "--out", str(out)],
        capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    committed = sorted(p.name for p in FIXTURES.iterdir())
    assert sorted(p.name for p in out.iterdir()) == committed
    for name in committed:
        if name.endswith(".npy"):
            expected, got = np.load(FIXTURES / name), np.load(out / name)
            assert got.dtype == expected.dtype and got.shape == expected.shape, name
            # float32 through a deep network: another CPU's kernels (AVX-512 vs AVX2 paths in
            # PyTorch's convolutions) round differently; an Intel Xeon regenerates the AMD-made
            # MobileNetV2-0.35 logits within 1.2e-6. 1e-5 still catches any real change.
            np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5, err_msg=name)
        else:
            assert (out / name).read_text() == (FIXTURES / name).read_text(), name


# ---------------------------------------------------------------------------------------------
# (d) package metadata
# ---------------------------------------------------------------------------------------------


def test_metadata_builds_without_warnings(tmp_path):
    """The wheel metadata (licence as an SPDX string) builds with no warning from setuptools."""
    source = tmp_path / "src"
    source.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(ROOT / name, source / name)
    shutil.copytree(ROOT / "keras_coordatt", source / "keras_coordatt",
                    ignore=shutil.ignore_patterns("__pycache__"))
    script = (
        "import warnings, sys\n"
        "out = sys.argv[1]  # setuptools rewrites sys.argv\n"
        "warnings.simplefilter('always')\n"
        "from setuptools import build_meta\n"
        "with warnings.catch_warnings(record=True) as caught:\n"
        "    name = build_meta.prepare_metadata_for_build_wheel(out)\n"
        "for w in caught:\n"
        "    print('WARNING', w.category.__name__, str(w.message).splitlines()[0])\n"
        "print(open(f'{out}/{name}/METADATA').read())\n"
    )
    (tmp_path / "meta").mkdir()
    result = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path / "meta")],
        cwd=source, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    warnings = [line for line in result.stdout.splitlines() if line.startswith("WARNING")]
    assert warnings == [], warnings
    assert "deprecat" not in result.stderr.lower(), result.stderr[-2000:]
    assert "License-Expression: MIT" in result.stdout
    assert "License-File: LICENSE" in result.stdout
    assert "Classifier: License" not in result.stdout
