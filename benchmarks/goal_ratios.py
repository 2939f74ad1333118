"""The project's latency and training goals, as ratios of one run's medians (the full suite
prints them as MET / NOT MET; the installed ``keras-coordatt benchmark`` prints plain ratios)."""

from __future__ import annotations

import dataclasses

from full_suite import RUNTIME_LABELS

from keras_coordatt.benchmark import MODELS, Timing, ratio


@dataclasses.dataclass
class Goal:
    """A ratio of two measurements and its threshold (``ratio <= limit``, or ``>=`` if
    ``at_least``)."""

    label: str
    ratio: float | None
    limit: float
    at_least: bool = False
    note: str = ""

    @property
    def met(self) -> bool | None:
        if self.ratio is None:
            return None
        return self.ratio >= self.limit if self.at_least else self.ratio <= self.limit

    def line(self) -> str:
        sign = ">=" if self.at_least else "<="
        if self.ratio is None:
            text = f"- {self.label}: not measured (goal {sign} {self.limit:g}x)"
            return f"{text}. {self.note}" if self.note else text
        verdict = "MET" if self.met else "NOT MET"
        text = f"- {self.label}: **{self.ratio:.3f}x** (goal {sign} {self.limit:g}x) — {verdict}"
        return f"{text}. {self.note}" if self.note else text


def latency_goals(timings: dict[tuple[str, str, int], Timing], batch: int = 1) -> list[Goal]:
    """The inference goals of the benchmark issue, as ratios of this run's medians."""
    ca, v2, ka = "MobileNetV2CA", "MobileNetV2", "keras.applications.MobileNetV2"
    goals = [
        Goal(f"LiteRT float32 MobileNetV2CA / MobileNetV2 (batch {batch})",
             ratio(timings, (ca, "litert_f32", batch), (v2, "litert_f32", batch)), 1.10),
        Goal(f"LiteRT int8 MobileNetV2CA / MobileNetV2 (batch {batch})",
             ratio(timings, (ca, "litert_int8", batch), (v2, "litert_int8", batch)), 1.15),
    ]
    for runtime in ("keras", "keras_xla", "litert_f32", "litert_int8"):
        goals.append(Goal(
            f"our MobileNetV2 / keras.applications.MobileNetV2, {RUNTIME_LABELS[runtime]} "
            f"(batch {batch})",
            ratio(timings, (v2, runtime, batch), (ka, runtime, batch)), 1.03,
        ))
    goals += [
        Goal(f"LiteRT float32 MobileNetV2CA / PyTorch eager MBV2_CA (batch {batch})",
             ratio(timings, (ca, "litert_f32", batch), (ca, "torch", batch)), 0.25),
        Goal(f"LiteRT float32 MobileNetV2CA / ONNX Runtime MBV2_CA (batch {batch})",
             ratio(timings, (ca, "litert_f32", batch), (ca, "onnxruntime", batch)), 0.6),
    ]
    for model in MODELS:
        value = ratio(timings, (model, "litert_int8", batch), (model, "litert_f32", batch))
        if value is not None:
            goals.append(Goal(f"LiteRT int8 / float32, {model} (batch {batch})", value, 0.5))
    return goals
