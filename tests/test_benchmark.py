"""The benchmark harness (interleaving, medians, goal ratios) and the `keras-coordatt benchmark`
CLI. Timings are never asserted: the harness is checked with a fake clock, the CLI by its output.
"""

from __future__ import annotations

import re

import pytest

from keras_coordatt import benchmark
from keras_coordatt.benchmark import Contender, Timing
from keras_coordatt.cli import main


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
    goals = {goal.label: goal for goal in benchmark.latency_goals(timings, 1)}
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
    table = benchmark.latency_table(timings, [ca, v2, ka], benchmark.RUNTIMES, 1)
    assert table.splitlines()[0] == (
        "| model (batch 1, ms per batch) | LiteRT float32 | LiteRT int8 | PyTorch eager |"
    )
    assert "| MobileNetV2CA | 10.50 (±0%) | 6.00 (±0%) | 50.00 (±0%) |" in table
    assert "| keras.applications.MobileNetV2 | 9.00 (±0%) | — | — |" in table


@pytest.mark.slow
@pytest.mark.tflite
def test_benchmark_cli_quick_run(tmp_path, capsys):
    report = tmp_path / "bench.md"
    code = main([
        "benchmark", "--models", "MobileNetV2CA", "MobileNetV2",
        "--runtimes", "keras", "litert_f32", "litert_int8", "--alpha", "0.35",
        "--input-size", "64", "--trials", "2", "--trial-seconds", "0.02", "--quiet",
        "--output", str(report),
    ])
    assert code == 0
    printed = capsys.readouterr().out
    assert report.read_text().strip() == printed.strip()
    rows = {line.split("|")[1].strip(): line for line in printed.splitlines()
            if line.startswith("| MobileNetV2")}
    assert set(rows) == {"MobileNetV2CA", "MobileNetV2"}
    cells = [re.findall(r"([\d.]+) \(±", row) for row in rows.values()]
    assert all(len(found) == 3 and all(float(v) > 0 for v in found) for found in cells)
    ca_f32 = float(re.findall(r"([\d.]+) \(±", rows["MobileNetV2CA"])[1])
    v2_f32 = float(re.findall(r"([\d.]+) \(±", rows["MobileNetV2"])[1])
    goal = re.search(r"LiteRT float32 MobileNetV2CA / MobileNetV2 \(batch 1\): \*\*([\d.]+)x",
                     printed)
    # The cells are rounded to 0.01 ms and the ratio to 0.001: compare within that rounding.
    assert goal
    low, high = (ca_f32 - 0.005) / (v2_f32 + 0.005), (ca_f32 + 0.005) / (v2_f32 - 0.005)
    assert low - 0.0005 <= float(goal.group(1)) <= high + 0.0005


def test_benchmark_cli_rejects_bad_arguments(capsys):
    assert main(["benchmark", "--batch", "0"]) == 2
    assert "--batch" in capsys.readouterr().err
    assert main(["benchmark", "--runtimes", "tensorrt"]) == 2
    assert "invalid choice: 'tensorrt'" in capsys.readouterr().err
