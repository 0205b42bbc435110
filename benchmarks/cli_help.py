"""Benchmark: wall time of ``robustbench-rpc --help`` and of the bare ``import robustbench_rpc`` (fresh processes).

Run: ``python benchmarks/cli_help.py [--repeats 5]``. Each command runs in a fresh interpreter ``repeats`` times;
the table gives the fastest and the median wall time and the ratio against a bare ``python -c pass`` measured in
the same run. The target is ``--help`` under 0.5 s: the bare import registers the models in timm only once timm
is imported, so neither ``--help`` nor the bare import loads torch.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

COMMANDS = {
    "python -c pass (baseline)": [sys.executable, "-c", "pass"],
    "import robustbench_rpc": [sys.executable, "-c", "import robustbench_rpc"],
    "robustbench-rpc --help": [sys.executable, "-m", "robustbench_rpc", "--help"],
    "robustbench-rpc attack --help": [sys.executable, "-m", "robustbench_rpc", "attack", "--help"],
    "import robustbench_rpc, timm (registers)": [sys.executable, "-c", "import robustbench_rpc, timm"],
}


def wall_times(argv: list[str], repeats: int) -> list[float]:
    """Return the wall time of ``repeats`` fresh runs of ``argv`` (output discarded; a failure raises)."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        times.append(time.perf_counter() - start)
    return times


def main() -> None:
    """Time each command and print a Markdown table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    results = {label: wall_times(argv, args.repeats) for label, argv in COMMANDS.items()}
    base = min(results["python -c pass (baseline)"])
    print("| command | fastest (s) | median (s) | fastest / baseline |")
    print("|---|---|---|---|")
    for label, times in results.items():
        print(f"| {label} | {min(times):.3f} | {statistics.median(times):.3f} | {min(times) / base:.1f}x |")


if __name__ == "__main__":
    main()
