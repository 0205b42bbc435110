"""Kill -9 trials: how much a killed run loses, and whether the resumed run writes what an uninterrupted one does.

One uninterrupted reference run of ``robustbench-rpc evaluate`` (default: the digits-c one-pass generated
corruption job, the job a kill hurt most before batch journaling), then ``--trials`` runs each killed with SIGKILL
at a random moment of its pass (after its first batch was kept, before 95% of the reference's pass time) and
started again to completion. Per trial it
reports what had been kept at the kill (finished cells, journaled batches), how many batches the resumed run read
back, the seconds of work lost (kill time minus the newest kept file, against the time per batch), and whether
every cell's records equal the reference's exactly. Last, what journaling costs: the same run in this process with
the time spent writing journal files measured, as a share of the run's time.

Usage: python benchmarks/reliability.py [--trials 10] [--suite digits-c] [--corruptions gaussian_noise,fog,contrast]
       [--severities 1,3] [--limit 450] [--batch-size 16] [--model symvit_digits_patch8_32] [--seed 0]
       [--attack]   (the trials kill an ``attack`` run of PGD instead, one cell per eps)
Runs on the CPU with the embedded digits: nothing to download.
"""

from __future__ import annotations

import argparse
import os
import random
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def command(args: argparse.Namespace, out: Path) -> list[str]:
    """The CLI command line of one run into ``out``."""
    base = [sys.executable, "-m", "robustbench_rpc"]
    common = ["--model", args.model, "--checkpoint", args.checkpoint, "--out", str(out), "--batch-size",
              str(args.batch_size), "--limit", str(args.limit), "--seed", str(args.seed)]
    if args.attack:
        return [*base, "attack", *common, "--dataset", "digits", "--attack", "pgd", "--eps", args.eps]
    return [*base, "evaluate", *common, "--suite", args.suite, "--corruptions", args.corruptions,
            "--severities", args.severities]


def records_by_cell(out: Path) -> dict[str, object]:
    """Every finished cell's records, keyed by the cell's key."""
    from robustbench_rpc.results.store import ResultsStore

    store = ResultsStore(out)
    return {cell.spec.key(): store.read_records(cell) for cell in store.cell_files()}


def kept_files(out: Path) -> tuple[int, int, float]:
    """(finished cells, journaled batches, mtime of the newest of them) in a results directory."""
    cells = list((out / "cells").glob("*.parquet")) if (out / "cells").is_dir() else []
    batches = list((out / "journal").glob("*/batch-*.json")) if (out / "journal").is_dir() else []
    newest = max((p.stat().st_mtime for p in cells + batches), default=0.0)
    return len(cells), len(batches), newest


def journal_cost(args: argparse.Namespace, out: Path) -> tuple[float, float, int]:
    """Run the reference evaluation in this process; return (seconds in journal writes, run seconds, writes)."""
    import torch

    from robustbench_rpc import api
    from robustbench_rpc.results.journal import BatchJournal

    torch.set_num_threads(1)
    spent = [0.0, 0]
    original = BatchJournal.add

    def timed(self: BatchJournal, number: int, payload: dict) -> None:
        start = time.perf_counter()
        original(self, number, payload)
        spent[0] += time.perf_counter() - start
        spent[1] += 1

    BatchJournal.add = timed  # type: ignore[method-assign]
    try:
        common = {"out": out, "batch_size": args.batch_size, "limit": args.limit, "seed": args.seed,
                  "progress": False, "device": "cpu"}
        started = time.perf_counter()
        if args.attack:
            api.attack(args.model, args.checkpoint, attacks="pgd", eps=args.eps, dataset="digits", **common)
        else:
            api.evaluate(args.model, args.checkpoint, suite=args.suite, corruptions=args.corruptions,
                         severities=args.severities, **common)
        total = time.perf_counter() - started
    finally:
        BatchJournal.add = original  # type: ignore[method-assign]
    return spent[0], total, int(spent[1])


def start_and_time(args: argparse.Namespace, out: Path, env: dict[str, str]) -> tuple[subprocess.Popen, float]:
    """Start a run; return it and the moment its first batch (or cell) was kept, i.e. its pass had begun."""
    proc = subprocess.Popen(command(args, out), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while proc.poll() is None and kept_files(out)[:2] == (0, 0):
        time.sleep(0.02)
    return proc, time.perf_counter()


def main() -> None:
    """Run the trials and print one row per trial and a summary."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=10)
    parser.add_argument("--suite", default="digits-c")
    parser.add_argument("--corruptions", default="gaussian_noise,fog,contrast")
    parser.add_argument("--severities", default="1,3")
    parser.add_argument("--limit", type=int, default=450)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--model", default="symvit_digits_patch8_32")
    parser.add_argument("--checkpoint", default=None, help="default: the shipped digits weights of --model")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--attack", action="store_true", help="kill an attack run (PGD) instead of evaluate")
    parser.add_argument("--eps", default="1/255,4/255")
    args = parser.parse_args()
    if args.checkpoint is None:
        from robustbench_rpc.demo.train import embedded_checkpoint

        args.checkpoint = str(embedded_checkpoint(args.model.split("_digits")[0]))
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory(prefix="rbrpc-kill-") as tmp:
        ref = Path(tmp) / "reference"
        proc, pass_started = start_and_time(args, ref, env)
        while proc.poll() is None and kept_files(ref)[0] == 0:  # the pass ends when its cells are written
            time.sleep(0.02)
        duration = time.perf_counter() - pass_started
        if proc.wait() != 0:
            raise SystemExit("the reference run failed: " + " ".join(command(args, ref)))
        reference = records_by_cell(ref)
        batches = -(-args.limit // args.batch_size)
        per_batch = duration / (batches * (1 if not args.attack else len(args.eps.split(","))))
        print(f"reference: {len(reference)} cells, {batches} batches per pass, pass {duration:.1f} s after its "
              f"first batch (~{per_batch:.2f} s per batch)")
        print("trial  kill_after_s  cells_kept  batches_kept  batches_resumed  lost_s  identical")
        identical_count, lost = 0, []
        for trial in range(args.trials):
            out = Path(tmp) / f"trial{trial}"
            delay = rng.uniform(0.0, 0.95) * duration
            proc, _ = start_and_time(args, out, env)
            time.sleep(delay)
            killed_at = time.time()
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            cells, kept, newest = kept_files(out)
            in_pass = newest and cells < len(reference)  # killed during the pass, not while finishing
            lost_s = killed_at - newest if in_pass else float("nan")
            done = subprocess.run(command(args, out), env=env, capture_output=True, text=True)
            if done.returncode != 0:
                print(f"{trial:5d}  resumed run failed: {done.stderr.strip()[-300:]}")
                continue
            found = re.search(r"Resumed (\d+) finished batch", done.stderr)
            resumed = int(found.group(1)) if found else 0
            records = records_by_cell(out)
            same = records.keys() == reference.keys() and all(records[k].equals(reference[k]) for k in reference)
            identical_count += same
            if in_pass:
                lost.append(lost_s)
            print(f"{trial:5d}  {delay:12.1f}  {cells:10d}  {kept:12d}  {resumed:15d}  {lost_s:6.2f}  {same}")
        worst = max(lost) if lost else float("nan")
        print(f"\n{args.trials} trials: {identical_count} resumed runs wrote records identical to the "
              f"uninterrupted run; {len(lost)} kills hit the pass and lost at most {worst:.2f} s of work each (one "
              f"batch takes ~{per_batch:.2f} s)")
        writes_s, run_s, writes = journal_cost(args, Path(tmp) / "timed")
        print(f"journal: {writes} batch files written in {writes_s:.3f} s, {100 * writes_s / run_s:.2f}% of the "
              f"{run_s:.1f} s run")


if __name__ == "__main__":
    main()
