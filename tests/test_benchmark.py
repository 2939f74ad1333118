"""The benchmark harness (interleaving, medians, ratios), the goal ratios of benchmarks/ and the
`keras-coordatt benchmark` CLI, also from an installed wheel. Timings are never asserted: the
harness is checked with a fake clock, the CLI by its output.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import venv
from pathlib import Path

import pytest

from keras_coordatt import benchmark
from keras_coordatt.benchmark import Contender, Timing
from keras_coordatt.cli import main

ROOT = Path(__file__).resolve().parents[1]


def _goal_ratios():
    """``benchmarks/goal_ratios.py`` (the project's goals live in the source checkout only)."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import goal_ratios
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    return goal_ratios


class FakeClock:
    """Stands in for the ``time`` module: ``perf_counter`` advances only when a contender runs."""

    def __init__(self):
        self.now = 0.0
        self.slept = 0.0

    def perf_counter(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept += seconds


def test_measure_interleaves_round_robin_and_takes_medians(monkeypatch):
    clock = FakeClock()
    monkeypatch.setattr(benchmark, "time", clock)
    order: list[str] = []
    costs = {"a": 0.010, "b": 0.004, "c": 0.0015}
    trial_costs = {"a": iter([0.010] * 3 + [0.010, 0.020, 0.010, 0.030, 0.010] * 100)}

    def runner(name):
        def run():
            order.append(name)
            cost = next(trial_costs[name]) if name in trial_costs else costs[name]
            clock.now += cost

        return run

    contenders = [Contender(name, "rt", 1, runner(name)) for name in costs]
    timings = benchmark.measure(contenders, trials=5, trial_seconds=0.019, warmup=2,
                                settle_seconds=0.05, log=None)
    # Warm-up: 2 calls + 1 timed call each, in order; calls per trial from that timed call.
    assert order[:9] == ["a"] * 3 + ["b"] * 3 + ["c"] * 3
    calls = {"a": 2, "b": 5, "c": 13}  # ceil(19 ms / cost)
    assert {key[0]: t.calls for key, t in timings.items()} == calls
    # Trials rotate the starting contender: a b c, b c a, c a b, a b c, b c a.
    blocks = []
    rest = order[9:]
    while rest:
        name = rest[0]
        blocks.append(name)
        rest = rest[calls[name]:]
    assert blocks == list("abcbcacababcbca")
    assert clock.slept == pytest.approx(15 * 0.05)
    # a's per-trial means: (10+20)/2, (10+30)/2, (10+10)/2, (20+10)/2, (30+10)/2 ms.
    a = timings[("a", "rt", 1)]
    assert a.trials == 5
    assert a.median == pytest.approx(0.015)
    assert (a.q1, a.q3) == (pytest.approx(0.015), pytest.approx(0.020))
    assert a.spread == pytest.approx(0.0025 / 0.015)
    assert timings[("b", "rt", 1)].median == pytest.approx(0.004)
    assert timings[("c", "rt", 1)].spread == pytest.approx(0.0)


def _timing(ms: float) -> Timing:
    return Timing(ms / 1e3, ms / 1e3, ms / 1e3, 1, 1)


def test_latency_goals_are_the_issue_ratios():
    ca, v2, ka = "MobileNetV2CA", "MobileNetV2", "keras.applications.MobileNetV2"
    timings = {
        (ca, "litert_f32", 1): _timing(10.5), (v2, "litert_f32", 1): _timing(10.0),
        (ka, "litert_f32", 1): _timing(9.0),
        (ca, "litert_int8", 1): _timing(6.0), (v2, "litert_int8", 1): _timing(5.0),
        (ca, "torch", 1): _timing(50.0),
    }
    goals = {goal.label: goal for goal in _goal_ratios().latency_goals(timings, 1)}
    f32 = goals["LiteRT float32 MobileNetV2CA / MobileNetV2 (batch 1)"]
    assert f32.ratio == pytest.approx(1.05) and f32.met
    int8 = goals["LiteRT int8 MobileNetV2CA / MobileNetV2 (batch 1)"]
    assert int8.ratio == pytest.approx(1.2) and int8.met is False
    ours = goals["our MobileNetV2 / keras.applications.MobileNetV2, LiteRT float32 (batch 1)"]
    assert ours.ratio == pytest.approx(10 / 9) and not ours.met
    torch_goal = goals["LiteRT float32 MobileNetV2CA / PyTorch eager MBV2_CA (batch 1)"]
    assert torch_goal.ratio == pytest.approx(0.21) and torch_goal.met
    onnx_goal = goals["LiteRT float32 MobileNetV2CA / ONNX Runtime MBV2_CA (batch 1)"]
    assert onnx_goal.ratio is None and "not measured" in onnx_goal.line()
    speedup = goals["LiteRT int8 / float32, MobileNetV2CA (batch 1)"]
    assert speedup.ratio == pytest.approx(6 / 10.5) and "NOT MET" in speedup.line()
    import full_suite  # imported by goal_ratios

    table = full_suite.latency_table(timings, [ca, v2, ka], 1)
    assert table.splitlines()[0] == (
        "| model (batch 1, ms per batch) | LiteRT float32 | LiteRT int8 | PyTorch eager |"
    )
    assert "| MobileNetV2CA | 10.50 (±0%) | 6.00 (±0%) | 50.00 (±0%) |" in table
    assert "| keras.applications.MobileNetV2 | 9.00 (±0%) | — | — |" in table
    # The package's table and ratios know only its own runtimes, and judge nothing.
    table = benchmark.latency_table(timings, [ca, v2, ka], benchmark.RUNTIMES, 1)
    assert table.splitlines()[0] == (
        "| model (batch 1, ms per batch) | LiteRT float32 | LiteRT int8 |"
    )
    lines = benchmark.ratio_lines(timings, benchmark.RUNTIMES, 1)
    assert "- MobileNetV2CA / MobileNetV2, LiteRT float32 (batch 1): 1.050x" in lines
    assert "- MobileNetV2 / keras.applications.MobileNetV2, LiteRT float32 (batch 1): 1.111x" in (
        lines
    )
    assert "- LiteRT int8 / float32, MobileNetV2CA (batch 1): 0.571x" in lines
    assert not any("MET" in line or "goal" in line for line in lines)


def _check_quick_run(printed: str) -> None:
    """The table and ratios of a quick run of MobileNetV2CA and MobileNetV2 on Keras, LiteRT
    float32 and int8: every cell measured, the printed ratio the cells' ratio, no verdicts."""
    header = ("| model (batch 1, ms per batch) | Keras predict_on_batch | LiteRT float32 "
              "| LiteRT int8 |")
    assert header in printed
    rows = {line.split("|")[1].strip(): line for line in printed.splitlines()
            if line.startswith("| MobileNetV2")}
    assert set(rows) == {"MobileNetV2CA", "MobileNetV2"}
    cells = [re.findall(r"([\d.]+) \(±", row) for row in rows.values()]
    assert all(len(found) == 3 and all(float(v) > 0 for v in found) for found in cells)
    ca_f32 = float(re.findall(r"([\d.]+) \(±", rows["MobileNetV2CA"])[1])
    v2_f32 = float(re.findall(r"([\d.]+) \(±", rows["MobileNetV2"])[1])
    goal = re.search(r"MobileNetV2CA / MobileNetV2, LiteRT float32 \(batch 1\): ([\d.]+)x",
                     printed)
    assert "MET" not in printed and "goal" not in printed.lower()
    # The cells are rounded to 0.01 ms and the ratio to 0.001: compare within that rounding.
    assert goal
    low, high = (ca_f32 - 0.005) / (v2_f32 + 0.005), (ca_f32 + 0.005) / (v2_f32 - 0.005)
    assert low - 0.0005 <= float(goal.group(1)) <= high + 0.0005


def test_benchmark_cli_rejects_bad_arguments(capsys):
    assert main(["benchmark", "--batch", "0"]) == 2
    assert "--batch" in capsys.readouterr().err
    assert main(["benchmark", "--runtimes", "tensorrt"]) == 2
    assert "invalid choice: 'tensorrt'" in capsys.readouterr().err
    assert main(["benchmark", "--runtimes", "keras", "torch"]) == 2
    err = capsys.readouterr().err
    assert "benchmarks/run_benchmarks.py" in err and len(err.strip().splitlines()) == 1


def _wheel_environment(tmp_path: Path) -> Path:
    """A fresh venv holding only our wheel, seeing the dev venv's TensorFlow / keras / LiteRT
    through a .pth file (nothing is downloaded); returns its python."""
    source = tmp_path / "source"  # a copy, so the build leaves nothing in the checkout
    shutil.copytree(ROOT / "keras_coordatt", source / "keras_coordatt",
                    ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(ROOT / name, source / name)
    wheels = tmp_path / "wheels"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         "-w", str(wheels), str(source)],
        check=True, capture_output=True, cwd=tmp_path, env=env, timeout=120,
    )
    (wheel,) = wheels.glob("keras_coordatt-*.whl")
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=False).create(env_dir)
    python = env_dir / "bin" / "python"
    site = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True, capture_output=True, text=True,
    ).stdout.strip()
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "-q",
         "--no-index", str(wheel)],
        check=True, capture_output=True, cwd=tmp_path, env=env, timeout=120,
    )
    import keras

    # After the install, so pip does not find the dev venv's keras-coordatt there.
    dev_site = Path(keras.__file__).resolve().parents[1]
    (Path(site) / "dev_site.pth").write_text(str(dev_site) + "\n")
    return python


@pytest.mark.slow
@pytest.mark.tflite
def test_benchmark_quick_run_from_an_installed_wheel(tmp_path):
    """`keras-coordatt benchmark` uses only what the wheel installs: a quick run from a
    directory outside the checkout, with the package imported from the fresh venv, not from the
    repo (one run checks both the wheel and the CLI's table and ratios)."""
    python = _wheel_environment(tmp_path)
    work = tmp_path / "elsewhere"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update(TF_CPP_MIN_LOG_LEVEL="3", KERAS_BACKEND="tensorflow")
    where = subprocess.run(
        [str(python), "-c", "import keras_coordatt; print(keras_coordatt.__file__)"],
        check=True, capture_output=True, text=True, cwd=work, env=env,
    ).stdout.strip().splitlines()[-1]
    assert Path(where).resolve().is_relative_to((tmp_path / "venv").resolve()), where
    # Package data the library reads at run time is in the wheel.
    installed = Path(where).parent
    assert (installed / "export" / "templates" / "model_card.md").is_file()
    assert (installed / "data" / "cifar10_subset.zip").is_file()
    script = python.parent / "keras-coordatt"
    report = tmp_path / "bench.md"
    result = subprocess.run(
        [str(script), "benchmark", "--models", "MobileNetV2CA", "MobileNetV2",
         "--runtimes", "keras", "litert_f32", "litert_int8", "--alpha", "0.35",
         "--input-size", "64", "--trials", "2", "--trial-seconds", "0.02", "--quiet",
         "--output", str(report)],
        capture_output=True, text=True, cwd=work, env=env, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert report.read_text().strip() == result.stdout.strip()
    _check_quick_run(result.stdout)
