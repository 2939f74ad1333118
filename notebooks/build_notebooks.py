"""Writes the notebooks of this folder from their sources (stripped: no outputs, no counts).

Each notebook ``NN_name.ipynb`` is written from ``NN_name.py``, a jupytext percent-format
script (``# %% [markdown]`` and ``# %%`` cells). Run

    python notebooks/build_notebooks.py          # rewrite the .ipynb files
    python notebooks/build_notebooks.py --check  # exit 1 if a committed notebook is stale

The sources share what this script fills in, so that it is written once:

* ``{{COLAB_BADGE}}``: the Open-in-Colab badge of the notebook, ``{{RAW_URL}}``: the raw-file
  URL of the repository, ``{{REPO_URL}}``: the repository;
* a cell ``# %% include="install" extras="tf,data"``: the Colab install cell, with those extras;
* a cell ``# %% [markdown] include="smoke_mode"``: the text that explains smoke mode.

``REPO_URL`` / ``BRANCH`` below are the *only* place that names the repository: to point the
notebooks at a fork, change them and run this script. Text before a source's first ``# %%``
(its header comment) is not part of the notebook.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import jupytext
import nbformat

REPO_URL = "https://github.com/keras-coordatt/keras-coordatt"
BRANCH = "main"

NOTEBOOKS_DIR = Path(__file__).resolve().parent
_SLUG = REPO_URL.removeprefix("https://github.com/").strip("/")
RAW_URL = f"https://raw.githubusercontent.com/{_SLUG}/{BRANCH}"
SMOKE_CHECKPOINT = "tests/data/checkpoints/mbv2_ca_w0.5.pth"

#: The cells the sources include by name: (cell type, text with {{...}} placeholders).
SHARED_CELLS = {
    "install": (
        "code",
        '''\
# Colab: install keras-coordatt with the extras this notebook uses. Skipped where the
# package is already installed (a local clone) and in smoke mode (CI, see below).
import importlib.util
import os

installed = importlib.util.find_spec("keras_coordatt") is not None
if not installed and os.environ.get("KERAS_COORDATT_SMOKE") != "1":
    %pip install -q "keras-coordatt[{{EXTRAS}}] @ git+{{REPO_URL}}"''',
    ),
    "smoke_mode": (
        "markdown",
        f"""\
## Settings

Setting the environment variable `KERAS_COORDATT_SMOKE=1` switches the notebook to
**smoke mode**, which the repository's CI uses to run it offline in about a minute:
`tfds.testing.mock_data` serves random images with the real `tf_flowers` metadata,
the "pretrained" weights come from the small test checkpoint
`{SMOKE_CHECKPOINT}` (width 0.5, *random* weights) instead of the
ImageNet download, images are 96x96 and training runs for a few steps. Its numbers and
pictures are meaningless; it only proves that every cell runs. Leave the variable unset
for the real run. Figures and models go to `OUT`.""",
    ),
}

NOTEBOOK_METADATA = {
    "accelerator": "GPU",
    "colab": {"provenance": [], "toc_visible": True},
    "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
    "language_info": {"name": "python"},
}


def sources(directory: Path = NOTEBOOKS_DIR) -> dict[str, Path]:
    """Notebook file name -> its source, for every ``NN_name.py`` in ``directory``."""
    paths = sorted(directory.glob("[0-9][0-9]_*.py"))
    return {path.with_suffix(".ipynb").name: path for path in paths}


def fill(text: str, name: str, extras: str = "") -> str:
    """``text`` with its ``{{...}}`` placeholders filled in for notebook ``name``."""
    colab = f"https://colab.research.google.com/github/{_SLUG}/blob/{BRANCH}/notebooks/{name}"
    badge = "https://colab.research.google.com/assets/colab-badge.svg"
    values = {
        "COLAB_BADGE": f"[![Open In Colab]({badge})]({colab})",
        "RAW_URL": RAW_URL,
        "REPO_URL": REPO_URL,
        **({"EXTRAS": extras} if extras else {}),
    }

    def value(match: re.Match) -> str:
        if match.group(1) not in values:
            raise ValueError(f"{name}: unknown placeholder {match.group(0)}")
        return values[match.group(1)]

    return re.sub(r"\{\{(\w+)\}\}", value, text)


def cell(kind: str, source: str) -> nbformat.NotebookNode:
    if kind == "markdown":
        return nbformat.v4.new_markdown_cell(source)
    return nbformat.v4.new_code_cell(source)


def build(source: Path) -> nbformat.NotebookNode:
    """The stripped notebook written from ``source``, with deterministic cell ids."""
    name = source.with_suffix(".ipynb").name
    text = source.read_text(encoding="utf-8")
    start = re.search(r"^# %%", text, flags=re.MULTILINE)
    if start is None:
        raise ValueError(f"{source.name}: no '# %%' cell")
    notebook = nbformat.v4.new_notebook()
    for parsed in jupytext.reads(text[start.start():], fmt="py:percent").cells:
        include = parsed.metadata.get("include")
        if include is None:
            notebook.cells.append(cell(parsed.cell_type, fill(parsed.source, name)))
            continue
        if include not in SHARED_CELLS:
            raise ValueError(f"{source.name}: unknown include {include!r}; "
                             f"known: {', '.join(SHARED_CELLS)}")
        kind, shared = SHARED_CELLS[include]
        if parsed.source.strip() or parsed.cell_type != kind:
            raise ValueError(f"{source.name}: write include={include!r} as an empty {kind} cell")
        extras = parsed.metadata.get("extras", "")
        if "{{EXTRAS}}" in shared and not extras:
            raise ValueError(f'{source.name}: include={include!r} needs extras="..."')
        notebook.cells.append(cell(kind, fill(shared, name, extras)))
    prefix = name.split("_")[0]
    for index, each in enumerate(notebook.cells):
        each.id = f"nb{prefix}-cell{index:02d}"
    notebook.metadata = NOTEBOOK_METADATA
    nbformat.validate(notebook)
    return notebook


def render(source: Path) -> str:
    """The text of the ``.ipynb`` file written from ``source``."""
    return nbformat.writes(build(source)) + "\n"


def stale(directory: Path = NOTEBOOKS_DIR) -> list[str]:
    """The notebooks in ``directory`` that are missing or differ from their sources."""
    return [
        name
        for name, source in sources(directory).items()
        if not (directory / name).exists()
        or (directory / name).read_text(encoding="utf-8") != render(source)
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--check", action="store_true", help="exit 1 if a notebook differs from its source"
    )
    args = parser.parse_args(argv)
    if args.check:
        names = stale()
        if names:
            print(f"stale notebooks: {', '.join(names)}; run python notebooks/build_notebooks.py")
        return 1 if names else 0
    for name, source in sources().items():
        (NOTEBOOKS_DIR / name).write_text(render(source), encoding="utf-8")
        print(f"wrote {NOTEBOOKS_DIR / name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
