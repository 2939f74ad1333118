"""Running one training recipe per (attention, seed) with the same budget, and tabulating.

The segmentation and detection recipes (``applications/*/compare.py``) both train the same
arguments once per attention and seed, each run in its own process, and read back the
``metrics.json`` each run writes. :func:`run_grid` does that; :func:`mean_std` formats a
column of a results table. Imports only the standard library.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence


def run_directory(output_dir: str | os.PathLike, attention: str, seed: int) -> str:
    """``<output_dir>/<attention>_seed<seed>``: where one run of the grid writes."""
    return os.path.join(os.fspath(output_dir), f"{attention}_seed{seed}")


def run_grid(
    script: str | os.PathLike,
    train_args: Sequence[str],
    *,
    attentions: Sequence[str],
    seeds: Sequence[int],
    output_dir: str | os.PathLike,
    skip_done: bool = False,
    describe: Callable[[dict], str] | None = None,
) -> dict[str, list[dict]]:
    """Runs ``python script *train_args --attention A --seed S --output-dir D --verbose 2``
    for every attention x seed, one after the other, and returns ``{attention: [metrics of
    each seed]}`` read from ``D/metrics.json``.

    ``skip_done`` reuses a run whose ``metrics.json`` exists (an interrupted comparison is
    resumed by rerunning it). ``describe(metrics)`` gives the short result printed after each
    run. A failed run raises ``subprocess.CalledProcessError``; a run that exits 0 without
    writing ``metrics.json`` raises ``FileNotFoundError`` naming the file.
    """
    runs: dict[str, list[dict]] = {attention: [] for attention in attentions}
    start = time.time()
    for attention in attentions:
        for seed in seeds:
            out = run_directory(output_dir, attention, seed)
            path = os.path.join(out, "metrics.json")
            if not (skip_done and os.path.exists(path)):
                command = [sys.executable, os.fspath(script), *train_args, "--attention",
                           attention, "--seed", str(seed), "--output-dir", out, "--verbose", "2"]
                print("$", " ".join(command), flush=True)
                subprocess.run(command, check=True)
            if not os.path.exists(path):
                raise FileNotFoundError(
                    f"{path} was not written: the run of {attention} seed {seed} must write "
                    "its metrics.json (a comparison cannot skip the final evaluation)")
            with open(path) as f:
                runs[attention].append(json.load(f))
            summary = f": {describe(runs[attention][-1])}" if describe else ""
            print(f"[{time.time() - start:.0f} s] {attention} seed {seed}{summary}", flush=True)
    return runs


def mean_std(values: Sequence[float], scale: float = 100.0, digits: int = 2) -> str:
    """``"m ± s"`` of ``values * scale`` (sample std over seeds), one value as is, none "-"."""
    if not values:
        return "-"
    if len(values) == 1:
        return f"{scale * values[0]:.{digits}f}"
    return (f"{scale * statistics.mean(values):.{digits}f} ± "
            f"{scale * statistics.stdev(values):.{digits}f}")


def parse_grid_arguments(argv, *, description: str, default_output_dir: str):
    """The command line of a recipe's ``compare.py``: ``--attentions``, ``--seeds``,
    ``--output-dir``, ``--table``, ``--skip-done``, then ``--`` and the train.py arguments."""
    import argparse

    parser = argparse.ArgumentParser(description=description,
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--attentions", nargs="+", default=["none", "se", "cbam", "ca"],
                        choices=("none", "se", "cbam", "ca"))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    parser.add_argument("--output-dir", default=default_output_dir,
                        help="one sub-folder per run: <attention>_seed<seed>")
    parser.add_argument("--table", help="write the markdown table here (default: print only)")
    parser.add_argument("--skip-done", action="store_true",
                        help="reuse runs whose metrics.json exists")
    parser.add_argument("train_args", nargs=argparse.REMAINDER,
                        help="arguments for train.py, after --")
    args = parser.parse_args(argv)
    if args.train_args and args.train_args[0] == "--":
        args.train_args = args.train_args[1:]
    return args


def compare_main(argv, *, script: str | os.PathLike, description: str, default_output_dir: str,
                 table: Callable[[dict[str, list[dict]]], str],
                 describe: Callable[[dict], str]) -> int:
    """A recipe's ``compare.py``: parses the command line, runs the grid, prints ``table(runs)``
    and writes it (with the wall time and the machine) to ``--table``."""
    import platform

    args = parse_grid_arguments(argv, description=description,
                                default_output_dir=default_output_dir)
    start = time.time()
    runs = run_grid(script, args.train_args, attentions=args.attentions, seeds=args.seeds,
                    output_dir=args.output_dir, skip_done=args.skip_done, describe=describe)
    text = table(runs)
    print(text)
    if args.table:
        with open(args.table, "w") as f:
            f.write(text + "\n")
            f.write(f"\nWall time of the whole comparison: {time.time() - start:.0f} s on "
                    f"{platform.processor() or platform.machine()} ({os.cpu_count()} CPUs).\n")
    return 0
