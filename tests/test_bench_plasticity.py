"""scripts/bench_plasticity.py: its table never mixes trials made with different settings."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _bench():
    spec = importlib.util.spec_from_file_location("bench_plasticity", ROOT / "scripts" / "bench_plasticity.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def _write_trial(bench, out: Path, method: str, seed: int, **settings) -> None:
    args = bench.BenchArgs(out=out, **settings)
    trial = {"method": method, "seed": seed, "settings": {**bench.trial_settings(args), "out": str(out)},
             "seconds": 1.0, "rows": [[50, 0, 0.5], [100, 1, 0.25]]}
    (out / method).mkdir(parents=True, exist_ok=True)
    (out / method / f"seed{seed}.json").write_text(json.dumps(trial))


def test_trials_with_other_settings_are_refused_and_matching_ones_load(tmp_path):
    bench = _bench()
    _write_trial(bench, tmp_path, "finetune", 0, body="relu", num_tasks=2)
    _write_trial(bench, tmp_path, "finetune", 1, body="relu", num_tasks=2)
    same = bench.BenchArgs(out=tmp_path, methods=("finetune",), body="relu", num_tasks=2)
    assert [t["seed"] for t in bench.load_trials(same)["finetune"]] == [0, 1]
    with pytest.raises(SystemExit, match="body: 'relu', now 'cw'"):
        bench.load_trials(bench.BenchArgs(out=tmp_path, methods=("finetune",), num_tasks=2, body="cw"))
    _write_trial(bench, tmp_path, "cbp", 0, body="cw", num_tasks=2)  # a mix under one --out
    with pytest.raises(SystemExit, match="other settings"):
        bench.load_trials(bench.BenchArgs(out=tmp_path, methods=("finetune", "cbp"), report_only=True))


def test_a_trial_written_before_the_body_setting_counts_as_cws(tmp_path):
    bench = _bench()
    _write_trial(bench, tmp_path, "finetune", 0, num_tasks=2, body="cw")
    path = tmp_path / "finetune" / "seed0.json"
    trial = json.loads(path.read_text())
    del trial["settings"]["body"]
    path.write_text(json.dumps(trial))
    old = bench.BenchArgs(out=tmp_path, methods=("finetune",), num_tasks=2, body="cw")
    assert len(bench.load_trials(old)["finetune"]) == 1
    with pytest.raises(SystemExit, match="body: 'cw', now 'relu'"):
        bench.load_trials(bench.BenchArgs(out=tmp_path, methods=("finetune",), num_tasks=2, body="relu"))
