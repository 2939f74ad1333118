"""keras_coordatt.training.comparison and the recipes' compare.py tables: every (attention,
seed) is run once with the same arguments, resumed runs are reused, and a run that writes no
metrics is an error, not a missing row."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from keras_coordatt.training.comparison import mean_std, run_grid

from helpers import ROOT, load_script

#: A stand-in for train.py: records its arguments and writes metrics.json from them.
FAKE_TRAIN = """
import argparse, json, os, sys
parser = argparse.ArgumentParser()
parser.add_argument("--budget", type=int)
parser.add_argument("--attention"); parser.add_argument("--seed", type=int)
parser.add_argument("--output-dir"); parser.add_argument("--verbose")
parser.add_argument("--no-metrics", action="store_true")
args = parser.parse_args()
os.makedirs(args.output_dir, exist_ok=True)
with open(os.path.join(os.path.dirname(args.output_dir), "calls.txt"), "a") as f:
    f.write(" ".join(sys.argv[1:]) + "\\n")
if not args.no_metrics:
    with open(os.path.join(args.output_dir, "metrics.json"), "w") as f:
        json.dump({"score": len(args.attention) / 10 + args.seed / 100,
                   "budget": args.budget}, f)
"""


@pytest.fixture
def fake_train(tmp_path: Path) -> Path:
    script = tmp_path / "fake_train.py"
    script.write_text(FAKE_TRAIN)
    return script


def test_run_grid_runs_every_attention_and_seed_with_the_same_arguments(fake_train, tmp_path):
    out = tmp_path / "runs"
    runs = run_grid(fake_train, ["--budget", "7"], attentions=["none", "ca"], seeds=[0, 1],
                    output_dir=out, describe=lambda m: f"score {m['score']}")
    assert list(runs) == ["none", "ca"]
    assert [m["score"] for m in runs["none"]] == pytest.approx([0.4, 0.41])
    assert [m["score"] for m in runs["ca"]] == pytest.approx([0.2, 0.21])
    assert all(m["budget"] == 7 for metrics in runs.values() for m in metrics)
    calls = (out / "calls.txt").read_text().splitlines()
    assert len(calls) == 4
    assert calls[0] == f"--budget 7 --attention none --seed 0 --output-dir {out / 'none_seed0'} " \
                       "--verbose 2"

    # Rerun with skip_done: nothing is trained again, the same metrics come back.
    again = run_grid(fake_train, ["--budget", "7"], attentions=["none", "ca"], seeds=[0, 1],
                     output_dir=out, skip_done=True)
    assert again == runs
    assert len((out / "calls.txt").read_text().splitlines()) == 4


def test_run_grid_reports_a_run_without_metrics_and_a_failed_run(fake_train, tmp_path):
    with pytest.raises(FileNotFoundError, match=r"se_seed3.*metrics\.json was not written"):
        run_grid(fake_train, ["--no-metrics"], attentions=["se"], seeds=[3],
                 output_dir=tmp_path / "runs")
    with pytest.raises(subprocess.CalledProcessError):
        run_grid(fake_train, ["--unknown-option"], attentions=["se"], seeds=[0],
                 output_dir=tmp_path / "runs2")


def test_mean_std_is_the_sample_statistics():
    values = [0.4406, 0.4657, 0.4321]
    mean, std = 100 * np.mean(values), 100 * np.std(values, ddof=1)
    assert mean_std(values) == f"{mean:.2f} ± {std:.2f}"
    assert mean_std([0.5]) == "50.00"
    assert mean_std([]) == "-"


def test_detection_compare_table_reads_the_metrics(tmp_path):
    compare = load_script(ROOT / "applications" / "detection" / "compare.py", "detection_compare")
    metrics = [{"AP": 0.0376, "AP50": 0.1356, "AP75": 0.0218, "params": 1613772,
                "madds": 250182016, "image_size": 320, "train_seconds": 455.2},
               {"AP": 0.0500, "AP50": 0.1500, "AP75": 0.0300, "params": 1613772,
                "madds": 250182016, "image_size": 320, "train_seconds": 465.2}]
    text = compare.table({"none": metrics, "se": []})
    rows = [line for line in text.splitlines() if line.startswith("| none")]
    assert len(rows) == 1 and "| se" not in text  # an attention without runs has no row
    cells = [cell.strip() for cell in rows[0].strip("|").split("|")]
    ap = [m["AP"] for m in metrics]
    assert cells[1] == f"{100 * np.mean(ap):.2f} ± {100 * np.std(ap, ddof=1):.2f}"
    assert cells[4] == "3.76 / 13.56, 5.00 / 15.00"
    assert cells[5] == "1,613,772" and cells[6] == "0.250 G (320px)" and cells[7] == "460 s"


@pytest.mark.parametrize("task", ["detection", "segmentation"])
def test_compare_scripts_have_help(task):
    result = subprocess.run([sys.executable, str(ROOT / "applications" / task / "compare.py"),
                             "--help"], capture_output=True, text=True, check=True)
    assert "--attentions" in result.stdout and "--skip-done" in result.stdout


def test_compare_main_passes_the_arguments_after_the_separator(fake_train, tmp_path):
    from keras_coordatt.training.comparison import compare_main

    out, written = tmp_path / "runs", tmp_path / "bench.md"
    assert compare_main(
        ["--attentions", "cbam", "--seeds", "2", "--output-dir", str(out), "--table",
         str(written), "--", "--budget", "3"],
        script=fake_train, description="d", default_output_dir="unused",
        table=lambda runs: f"rows {sorted(runs)} budget {runs['cbam'][0]['budget']}",
        describe=lambda m: "") == 0
    text = written.read_text()
    assert text.startswith("rows ['cbam'] budget 3\n") and "Wall time" in text
    assert (out / "cbam_seed2" / "metrics.json").exists()
