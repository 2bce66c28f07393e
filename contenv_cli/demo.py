"""`contenv demo` (`make demo`): a short real continual run, then the Continual World table.

A GRU SAC agent learns three memory tasks one after another (hold a symbol through
distractors, copy a symbol, hold two bits), once without protection (fine-tuning) and
once with PackNet, next to single-task reference runs of each task for forward transfer.
About five minutes on two cores. Every run is a run directory under ``runs/demo/<time>``;
``contenv report runs/demo/<time>/cl --reference runs/demo/<time>/reference``
prints the same table again, and ``--plots DIR`` draws it.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

TASKS = ("repeat-first(d=2)", "copy(p=1,i=1)", "bits(n=2,d=1)")
METHODS = ("finetune", "packnet")
# Small networks and budgets that learn these tasks in minutes. init_log_alpha -3: CW's 1.0
# keeps the policy near uniform longer than this budget lasts.
SETTINGS = dict(agent="gru", hidden_sizes=(64, 64), rnn_size=32, batch_size=32, seq_len=4, random_steps=500,
                update_after=500, update_every=50, steps_per_task=2000, eval_every=250, eval_episodes=10,
                eval_deterministic_episodes=0, init_log_alpha=-3.0, checkpoint_every=10**9,
                progress_bar=False, torch_threads=1)


def trial(kind: str, name: str, tasks: tuple[str, ...], protection: str, out: Path) -> tuple[str, float]:
    from agents.training.run import TrainArgs, train

    kwargs = '{"retrain_steps": 150}' if protection == "packnet" else "{}"  # CW: 10% of a task's updates
    start = time.perf_counter()
    train(TrainArgs(scenario="contenv/Sequence-v0", tasks=tasks, protection=protection, protection_kwargs=kwargs,
                    seed=0, run_dir=out / kind / name, **SETTINGS))
    return f"{kind}/{name}", time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="contenv demo", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=None,
                        help="directory for the demo's run directories (default: runs/demo/<time>; must not exist)")
    args = parser.parse_args(argv)
    from contenv.evaluation.report import build_reports, reference_from_runs, render
    from contenv.evaluation.rundir import load_runs

    out = args.out or Path("runs/demo") / time.strftime("%Y%m%d-%H%M%S")
    if out.exists():
        print(f"error: {out} exists; choose another --out (nothing is overwritten)", file=sys.stderr)
        return 2
    print(f"contenv demo: GRU SAC on {' -> '.join(TASKS)}, {SETTINGS['steps_per_task']} steps per task")
    print(f"runs: fine-tuning and PackNet, plus a single-task reference run per task, under {out}\n", flush=True)
    jobs = [("cl", m, TASKS, m) for m in METHODS] + [("reference", f"task{i}", (t,), "finetune") for i, t in enumerate(TASKS)]
    start = time.perf_counter()
    with ProcessPoolExecutor(max_workers=min(2, os.cpu_count() or 1), mp_context=mp.get_context("forkserver")) as pool:
        for name, seconds in pool.map(trial, *zip(*[(k, n, t, p, out) for k, n, t, p in jobs])):
            print(f"  trained {name:16s} {seconds:5.0f} s", flush=True)

    runs, errors = load_runs([out / "cl"])
    references, ref_errors = load_runs([out / "reference"])
    reference, more = reference_from_runs(references)
    reports, report_errors = build_reports(runs, reference, "cpu", final_points=3)
    for error in errors + ref_errors + more + report_errors:
        print(f"error: {error}", file=sys.stderr)
    print()
    print(render(reports, "md"))
    print(f"\n(one seed each, so the intervals are points; {time.perf_counter() - start:.0f} s in all)")
    print("Fine-tuning forgets the earlier tasks; PackNet keeps them. More: README.md, contenv report --help.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
