"""The notebooks in ``notebooks/``: executed end to end in smoke mode, and their structure.

Each notebook runs in a fresh ``python3`` kernel (nbclient), from ``notebooks/`` as a user would,
with ``KERAS_COORDATT_SMOKE=1`` (offline: tfds mock data, the random-init test checkpoint, 96x96
inputs, a few steps) and ``KERAS_COORDATT_NOTEBOOK_OUT`` pointing at a pytest ``tmp_path``. A
failing cell fails the test; every figure the notebook draws is saved there as a PNG and must
not be blank. The executed notebook is kept next to them (``executed.ipynb``) for debugging.
"""

from __future__ import annotations

import importlib.util
import re
import time
import types
from pathlib import Path

import nbclient
import nbformat
import numpy as np
import pytest
from PIL import Image

pytestmark = pytest.mark.notebooks


NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
#: Seconds one cell may run (nbclient raises past it). A whole smoke run takes about a minute.
CELL_TIMEOUT = 240

#: Notebook -> (modules it needs, figures it must save, other files it must write).
CASES = {
    "01_fine_tune_tf_flowers.ipynb": (
        ("tensorflow", "tensorflow_datasets", "matplotlib"),
        ("augmentation.png", "training_curves.png", "validation_predictions.png"),
        ("flowers_mobilenetv2_ca.keras",),
    ),
    "02_qat_int8_tflite.ipynb": (
        ("tensorflow", "tensorflow_datasets", "tf_keras", "tensorflow_model_optimization",
         "ai_edge_litert", "matplotlib"),
        ("tflite_comparison.png",),
        ("flowers_float32.tflite", "flowers_ptq_int8.tflite", "flowers_qat_int8.tflite"),
    ),
    "03_attention_maps.ipynb": (
        ("tensorflow", "tensorflow_datasets", "matplotlib"),
        ("ca_gates_by_stage.png", "ca_gate_anatomy.png", "se_cbam_ca.png"),
        (),
    ),
    "04_tf_hub_transfer.ipynb": (
        ("tensorflow", "tensorflow_datasets", "tf_keras", "tensorflow_hub", "matplotlib"),
        ("hub_fine_tuning_loss.png",),
        ("mobilenetv2_ca_feature_vector/saved_model.pb",
         "mobilenetv2_ca_feature_vector/MODEL_CARD.md"),
    ),
    "05_segmentation.ipynb": (
        ("tensorflow", "tensorflow_datasets", "ai_edge_litert", "matplotlib"),
        ("pet_predictions.png", "int8_agreement.png"),
        ("pets_deeplabv3_ca_int8.tflite",),
    ),
    "06_detection.ipynb": (
        ("tensorflow", "tensorflow_datasets", "ai_edge_litert", "pycocotools", "matplotlib"),
        ("detections.png", "int8_agreement.png"),
        ("voc_ssdlite_ca.keras", "voc_ssdlite_ca_int8.tflite"),
    ),
}
#: Notebooks that load tf_flowers (with the same cell).
FLOWERS = [name for name in CASES if name[:3] not in ("05_", "06_")]


def _load_build_script():
    """notebooks/build_notebooks.py as a module (without writing a __pycache__ there)."""
    path = NOTEBOOKS / "build_notebooks.py"
    module = types.ModuleType("build_notebooks")
    module.__file__ = str(path)
    exec(compile(path.read_text(encoding="utf-8"), str(path), "exec"), module.__dict__)
    return module


def assert_not_blank(path: Path) -> None:
    """A real figure: large enough, varied, and with coloured marks (not just empty axes)."""
    with Image.open(path) as image:
        pixels = np.asarray(image.convert("RGB")).astype(np.int16)
    assert min(pixels.shape[:2]) >= 100, f"{path.name}: tiny image {pixels.shape}"
    assert pixels.std() > 10, f"{path.name}: nearly uniform (pixel std {pixels.std():.1f})"
    colours = len(np.unique(pixels.reshape(-1, 3), axis=0))
    assert colours > 64, f"{path.name}: only {colours} distinct colours"
    coloured = ((pixels.max(axis=-1) - pixels.min(axis=-1)) > 60).mean()
    assert coloured > 0.005, f"{path.name}: no coloured marks ({coloured:.2%} of the pixels)"


def test_notebooks_match_their_sources():
    """The committed notebooks are exactly what build_notebooks.py writes from the ``.py``
    sources, and writing them again gives the same text. (That they carry no outputs is
    checked by scripts/check_notebooks.py, which CI runs.)"""
    build = _load_build_script()
    assert sorted(p.name for p in NOTEBOOKS.glob("*.ipynb")) == sorted(build.sources())
    assert sorted(CASES) == sorted(build.sources())
    assert build.main(["--check"]) == 0, "run: python notebooks/build_notebooks.py"
    for source in build.sources().values():
        assert build.render(source) == build.render(source)


def test_check_finds_stale_notebooks(tmp_path):
    """--check's list: a notebook whose source changed, or that is missing, is stale."""
    build = _load_build_script()
    name = "01_fine_tune_tf_flowers.ipynb"
    source = tmp_path / "01_fine_tune_tf_flowers.py"
    source.write_text(build.sources()[name].read_text(encoding="utf-8"), encoding="utf-8")
    (tmp_path / name).write_text((NOTEBOOKS / name).read_text(encoding="utf-8"))
    assert build.stale(tmp_path) == []
    with source.open("a", encoding="utf-8") as f:
        f.write("\n# %% [markdown]\n# One more cell.\n")
    assert build.stale(tmp_path) == [name]
    cells = nbformat.reads(build.render(source), as_version=4).cells
    assert (cells[-1].cell_type, cells[-1].source, cells[-1].id) == (
        "markdown", "One more cell.", f"nb01-cell{len(cells) - 1:02d}")
    (tmp_path / name).unlink()
    assert build.stale(tmp_path) == [name]


@pytest.mark.parametrize(
    ("cell", "message"),
    [
        ('# %% include="nothing"\n', "unknown include 'nothing'"),
        ('# %% include="smoke_mode"\n', "include='smoke_mode' as an empty markdown cell"),
        ("# %% [markdown]\n# {{REPO}}\n", "unknown placeholder {{REPO}}"),
        ('# %% include="install"\n', "include='install' needs extras="),
    ],
)
def test_build_rejects_bad_sources(tmp_path, cell, message):
    build = _load_build_script()
    source = tmp_path / "09_bad.py"
    source.write_text(f"# %% [markdown]\n# # Title\n\n{cell}", encoding="utf-8")
    with pytest.raises(ValueError, match=re.escape(message)):
        build.build(source)


def test_repeated_cells_are_the_same_in_every_notebook():
    """The sources repeat two pieces the generator used to share: the start of the settings
    cell (smoke switch, output folder) and the tf_flowers loading cell (in the notebooks that
    use tf_flowers). They must not drift."""
    build = _load_build_script()
    settings, flowers = [], []
    for source in build.sources().values():
        code = [c.source for c in build.build(source).cells if c.cell_type == "code"]
        settings.append(code[1].split("\nif SMOKE:")[0])
        flowers.extend(cell for cell in code if "tfds.load(" in cell)
    assert len(settings) == len(CASES) and len(flowers) == len(FLOWERS)
    assert len(set(settings)) == 1 and "OUT.mkdir(" in settings[0]
    assert len(set(flowers)) == 1 and "mock_data" in flowers[0]


@pytest.mark.parametrize("name", sorted(CASES))
def test_notebook_structure(name):
    """Colab badge for this file, an install cell first, the smoke switch in the settings;
    a valid nbformat 4 notebook for a python3 kernel, as Colab opens it."""
    build = _load_build_script()
    notebook = nbformat.read(NOTEBOOKS / name, as_version=4)
    nbformat.validate(notebook)
    assert notebook.nbformat == 4 and notebook.metadata.kernelspec.name == "python3"
    first = notebook.cells[0]
    assert first.cell_type == "markdown"
    assert "colab-badge.svg" in first.source
    assert f"colab.research.google.com/github/{build._SLUG}/blob/" in first.source
    assert first.source.count(f"/notebooks/{name})") == 1
    code_cells = [cell.source for cell in notebook.cells if cell.cell_type == "code"]
    assert "%pip install" in code_cells[0] and f"@ git+{build.REPO_URL}" in code_cells[0]
    assert 'os.environ.get("KERAS_COORDATT_SMOKE") == "1"' in code_cells[1]
    assert "KERAS_COORDATT_NOTEBOOK_OUT" in code_cells[1]


@pytest.mark.parametrize("name", sorted(CASES))
def test_notebook_runs_in_smoke_mode(name, tmp_path, monkeypatch, record_property):
    modules, figures, files = CASES[name]
    missing = [module for module in modules if importlib.util.find_spec(module) is None]
    # (find_spec, not import: tensorflow_hub needs a fix to import, see notebook 04)
    assert not missing, f"{name} needs {', '.join(missing)}: pip install -e '.[dev]'"
    monkeypatch.setenv("KERAS_COORDATT_SMOKE", "1")
    monkeypatch.setenv("KERAS_COORDATT_NOTEBOOK_OUT", str(tmp_path))
    monkeypatch.setenv("KERAS_BACKEND", "tensorflow")
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "2")
    before = sorted(p.name for p in NOTEBOOKS.iterdir())

    notebook = nbformat.read(NOTEBOOKS / name, as_version=4)
    client = nbclient.NotebookClient(
        notebook,
        timeout=CELL_TIMEOUT,
        kernel_name="python3",
        resources={"metadata": {"path": str(NOTEBOOKS)}},  # the kernel's working directory
    )
    start = time.perf_counter()
    try:
        client.execute()
    finally:
        seconds = time.perf_counter() - start
        record_property("seconds", round(seconds, 1))
        print(f"{name}: {seconds:.1f} s")
        nbformat.write(notebook, tmp_path / "executed.ipynb")

    for figure in figures:
        assert (tmp_path / figure).is_file(), f"{name} did not save {figure}"
        assert_not_blank(tmp_path / figure)
    drawn = {p.name for p in tmp_path.glob("*.png")}
    assert drawn == set(figures), f"unexpected figures: {sorted(drawn - set(figures))}"
    for file in files:
        assert (tmp_path / file).is_file(), f"{name} did not write {file}"
    assert sorted(p.name for p in NOTEBOOKS.iterdir()) == before, "wrote into notebooks/"
