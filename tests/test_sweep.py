"""scripts/sweep.py and scripts/transfer_matrix.py: expansion, resumable trials, Ray, the matrix."""

import subprocess
import sys
from pathlib import Path

import pytest
import torch

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"
sys.path.insert(0, str(SCRIPTS))

import sweep  # noqa: E402
import transfer_matrix  # noqa: E402

from contenv.evaluation.metrics import forward_transfer_per_task  # noqa: E402
from rundir_helpers import write_run  # noqa: E402

TINY = ["--tasks", "repeat-first(d=2)", "copy(p=1,i=1)", "--steps-per-task", "300", "--agent", "gru",
        "--hidden-sizes", "16", "--rnn-size", "16", "--random-steps", "100", "--update-after", "100",
        "--eval-every", "150", "--eval-episodes", "2", "--eval-deterministic-episodes", "0",
        "--checkpoint-every", "100", "--no-progress-bar", "--batch-size", "8", "--seq-len", "4"]


def test_seed_lists_and_bad_ones():
    assert sweep.parse_seeds("0-2,7") == [0, 1, 2, 7]  # the syntax of every command's --seeds
    with pytest.raises(ValueError, match="runs backwards"):
        sweep.parse_seeds("3-1")
    with pytest.raises(ValueError, match=r"seeds \[1\] appear more than once"):
        sweep.parse_seeds("0-2,7,1")


def test_expansion_covers_scenarios_methods_seeds_and_all_ordered_pairs(tmp_path):
    trials = sweep.expand(sweep.SweepArgs(out=tmp_path, scenarios=["contenv/CW10-v0", "contenv/CW20-v0"],
                                          methods=["finetune", "ewc"], seeds="0-2"), ["--eval-every", "5"])
    assert len(trials) == 12 and len({t.run_dir for t in trials}) == 12
    assert trials[0].argv[-2:] == ("--eval-every", "5")
    pairs = sweep.expand(sweep.SweepArgs(out=tmp_path, pairs=["a-v3", "b-v3"], seeds="0"), [])
    assert [t.name for t in pairs] == ["pairs/a-v3__a-v3/finetune/seed0", "pairs/a-v3__b-v3/finetune/seed0",
                                       "pairs/b-v3__a-v3/finetune/seed0", "pairs/b-v3__b-v3/finetune/seed0"]


def test_interrupted_local_sweep_is_finished_by_a_ray_sweep_from_checkpoints(tmp_path):
    pytest.importorskip("ray")
    base = [sys.executable, str(SCRIPTS / "sweep.py"), "--out", str(tmp_path), "--scenarios", "contenv/Sequence-v0",
            "--seeds", "0-1", "--workers", "2"]
    first = subprocess.run(base + ["--retries", "0", "--", *TINY, "--stop-at-step", "300"], capture_output=True, text=True)
    assert first.returncode == 1 and first.stdout.count("FAILED") == 2, first.stdout + first.stderr
    progress = tmp_path / "Sequence-v0/finetune/seed0/progress.csv"
    assert len(progress.read_text().splitlines()) == 3  # header + steps 150, 300
    second = subprocess.run(base + ["--backend", "ray", "--", *TINY], capture_output=True, text=True)
    assert second.returncode == 0, second.stdout + second.stderr
    for seed in (0, 1):
        rows = (tmp_path / f"Sequence-v0/finetune/seed{seed}/progress.csv").read_text().splitlines()[1:]
        assert [r.split(",")[0] for r in rows] == ["150", "300", "450", "600"]
    again = subprocess.run(base + ["--", *TINY], capture_output=True, text=True)
    assert again.stdout.count("skipped (already done)") == 2


def test_matrix_from_pair_and_reference_runs(tmp_path):
    tasks = ["a-v3", "b-v3"]
    args = transfer_matrix.MatrixArgs(tasks=tasks, out=tmp_path, seeds="0")
    ref = {"a-v3": [0.0, 0.2, 0.4, 0.6, 0.8], "b-v3": [0.0, 0.0, 0.5, 0.5, 0.5]}  # AUCs 0.4 and 0.3
    for task, curve in ref.items():
        write_run(tmp_path / "single" / task / "seed0", [task], [curve])
    second = {("a-v3", "a-v3"): [1.0] * 5, ("a-v3", "b-v3"): [0.3] * 5, ("b-v3", "a-v3"): [0.1] * 5, ("b-v3", "b-v3"): [0.65] * 5}
    for (src, dst), curve in second.items():
        write_run(tmp_path / "pairs" / f"{src}__{dst}" / "finetune" / "seed0", [src, dst], [[0.0] * 10, [0.0] * 5 + curve])
    matrix = transfer_matrix.compute_matrix(args)
    expected = [[(1.0 - 0.4) / 0.6, 0.0], [(0.1 - 0.4) / 0.6, (0.65 - 0.3) / 0.7]]
    torch.testing.assert_close(matrix, torch.tensor(expected, dtype=torch.float64))
    out = tmp_path / "m.csv"
    transfer_matrix.write_matrix_csv(out, tasks, matrix)
    assert out.read_text().splitlines()[0] == "source,a-v3,b-v3"
    with pytest.raises(FileExistsError, match="nothing was overwritten"):
        transfer_matrix.write_matrix_csv(out, tasks, matrix)
    # the same FT definition the reports use
    assert abs(forward_transfer_per_task(torch.tensor([[0.3]]), torch.tensor([[0.3]])).item()) < 1e-9


@pytest.mark.slow
def test_transfer_matrix_end_to_end(tmp_path):
    csv = tmp_path / "tm.csv"
    result = subprocess.run([sys.executable, str(SCRIPTS / "transfer_matrix.py"), "--tasks", "repeat-first(d=2)",
                             "copy(p=1,i=1)", "--seeds", "0", "--out", str(tmp_path / "runs"), "--csv", str(csv),
                             "--workers", "2", "--", *TINY[3:]], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "reference transfer RT =" in result.stdout
    assert len(csv.read_text().splitlines()) == 3


def test_trials_of_one_method_and_scenario_are_grouped_into_populations(tmp_path):
    trials = sweep.expand(sweep.SweepArgs(out=tmp_path, scenarios=["contenv/Sequence-v0"],
                                          methods=["finetune", "hnet", "ewc"], seeds="0-4"), [])
    groups = sweep.populations(trials, 2)
    shapes = [(g[0].name.split("/")[1], [t.seed for t in g]) for g in groups]
    assert shapes == [("finetune", [0, 1]), ("finetune", [2, 3]), ("finetune", [4])] \
        + [("hnet", [k]) for k in range(5)] + [("ewc", [0, 1]), ("ewc", [2, 3]), ("ewc", [4])]
    assert [len(g) for g in sweep.populations(trials, 1)] == [1] * 15
    (tmp_path / "Sequence-v0/ewc/seed1").mkdir(parents=True)  # a started trial resumes apart from new ones
    (tmp_path / "Sequence-v0/ewc/seed1/config.json").write_text("{}")
    ewc = [[t.seed for t in g] for g in sweep.populations(trials, 16) if "ewc" in g[0].name]
    assert ewc == [[0, 2, 3, 4], [1]]


def test_a_sweep_trains_its_seeds_as_one_population_with_the_single_runs_numbers(tmp_path):
    base = [sys.executable, str(SCRIPTS / "sweep.py"), "--scenarios", "contenv/Sequence-v0", "--seeds", "0-1",
            "--methods", "l2"]
    grouped = subprocess.run(base + ["--out", str(tmp_path / "grouped"), "--", *TINY], capture_output=True, text=True)
    assert grouped.returncode == 0 and "in 1 processes" in grouped.stdout, grouped.stdout + grouped.stderr
    assert grouped.stdout.count("done (population of 2)") == 2
    alone = subprocess.run(base + ["--out", str(tmp_path / "alone"), "--population-size", "1", "--", *TINY],
                           capture_output=True, text=True)
    assert alone.returncode == 0 and "in 2 processes" in alone.stdout, alone.stdout + alone.stderr
    for seed in (0, 1):
        ours = (tmp_path / f"grouped/Sequence-v0/l2/seed{seed}/progress.csv").read_text().splitlines()
        theirs = (tmp_path / f"alone/Sequence-v0/l2/seed{seed}/progress.csv").read_text().splitlines()
        assert ours[0] == theirs[0] and len(ours) == len(theirs) == 5
        for a, b in zip(ours[1:], theirs[1:]):
            for x, y in zip(a.split(","), b.split(",")):
                assert (x == y == "") or float(x) == pytest.approx(float(y), rel=1e-3, abs=1e-3)
    refused = subprocess.run(base + ["--out", str(tmp_path / "x"), "--population-size", "0"], capture_output=True,
                             text=True)
    assert refused.returncode == 2 and "--population-size must be >= 1" in refused.stderr
    assert not (tmp_path / "x").exists()
