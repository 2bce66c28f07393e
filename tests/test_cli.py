"""The `contenv` command: subcommands, help texts, seed syntax, the wheel, threads and file modes."""

import os
import shutil
import stat
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import contenv
from agents.nets.networks import TRUNKS
from agents.protection import PROTECTIONS
from contenv_cli import COMMANDS, main

ROOT = Path(__file__).resolve().parents[1]


def help_of(capsys, *argv):
    code = main([*argv, "--help"])
    out, err = capsys.readouterr()
    assert code == 0, err
    return " ".join(out.split())  # tyro wraps lines in boxes; compare words


def test_the_overview_lists_every_command(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert all(f"  {name}" in out for name in COMMANDS)
    assert main([]) == 2  # no command: the overview, and a failing status


@pytest.mark.parametrize("command", list(COMMANDS))
def test_every_command_prints_help_without_issue_talk(capsys, command, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    text = help_of(capsys, command)
    assert f"contenv {command}" in text and "usage" in text
    assert "issue" not in text.lower()
    assert list(tmp_path.iterdir()) == []  # --help ran nothing (demo included)


def test_train_help_lists_the_choices_of_agent_protection_and_scenario(capsys):
    text = help_of(capsys, "train").replace("│", " ")
    text = " ".join(text.split())
    for name in (*TRUNKS, *PROTECTIONS, *contenv.registered_ids()):
        assert name in text, name


def test_one_seed_syntax_everywhere():
    from agents.population import parse_seeds
    from contenv_cli import reference, sweep, transfer_matrix

    assert parse_seeds("0-2,5") == sweep.parse_seeds("0-2,5") == [0, 1, 2, 5]
    for cls in (reference.ReferenceArgs, sweep.SweepArgs, transfer_matrix.MatrixArgs):
        seeds = next(f for f in cls.__dataclass_fields__.values() if f.name == "seeds")
        assert seeds.type in ("str", str), cls  # the same "0-4,7" string as train --seeds
    with pytest.raises(ValueError, match="runs backwards"):
        sweep.parse_seeds("3-1")


def test_python_dash_m_contenv_runs_the_command():
    result = subprocess.run([sys.executable, "-m", "contenv", "report", "--final-points", "0", str(ROOT)],
                            capture_output=True, text=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert result.returncode == 2 and result.stderr.strip() == "error: --final-points must be at least 1, got 0"


def test_run_files_are_group_readable(tmp_path):
    from contenv.atomic import atomic_file

    with atomic_file(tmp_path / "f.txt", "w") as f:
        f.write("x")
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE((tmp_path / "f.txt").stat().st_mode) == 0o666 & ~umask
    if umask & 0o040 == 0:
        assert (tmp_path / "f.txt").stat().st_mode & stat.S_IRGRP


@pytest.mark.parametrize("env, threads", [({}, 1), ({"CONTENV_TORCH_THREADS": "2"}, 2),
                                          ({"OMP_NUM_THREADS": "2"}, None), ({"CONTENV_TORCH_THREADS": "0"}, None)])
def test_importing_agents_sets_sensible_torch_threads(monkeypatch, env, threads):
    import torch

    import agents

    before = torch.get_num_threads()
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.delenv("CONTENV_TORCH_THREADS", raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    try:
        torch.set_num_threads(7)  # stands for a user's own choice or torch's default
        agents._set_torch_threads()  # what importing agents runs
        assert torch.get_num_threads() == (7 if threads is None else threads)
    finally:
        torch.set_num_threads(before)


def test_a_bad_thread_count_is_named(monkeypatch):
    import agents

    monkeypatch.setenv("CONTENV_TORCH_THREADS", "many")
    with pytest.raises(ValueError, match="CONTENV_TORCH_THREADS must be an integer"):
        agents._set_torch_threads()


@pytest.mark.slow  # about 25 s on two shared cores (building the wheel)
def test_the_wheel_ships_the_command_and_it_runs_outside_the_repository(tmp_path):
    source = tmp_path / "src"  # build from a copy: no build/ or egg-info in the checkout
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(".git", ".venv", "runs", "tests", "__pycache__",
                                                               "*.egg-info", "build", "dist"))
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                            "-w", str(tmp_path / "dist"), str(source)], capture_output=True, text=True)
    assert build.returncode == 0, build.stderr
    wheel = next((tmp_path / "dist").glob("contenv-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    assert "contenv_cli/train.py" in names and "contenv/__main__.py" in names
    entry_points = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith("entry_points.txt"))).decode()
    assert "contenv = contenv_cli:console_main" in entry_points
    site = tmp_path / "site"
    install = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(site),
                              str(wheel)], capture_output=True, text=True)
    assert install.returncode == 0, install.stderr
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {**os.environ, "PYTHONPATH": str(site)}
    for argv in ([sys.executable, "-m", "contenv", "--help"], [str(site / "bin" / "contenv"), "train", "--help"]):
        result = subprocess.run(argv, capture_output=True, text=True, cwd=elsewhere, env=env)
        assert result.returncode == 0, result.stderr
    assert "contenv/Sequence-v0" in result.stdout
    probe = subprocess.run([sys.executable, "-c", "import contenv_cli, contenv; print(contenv_cli.__file__, contenv.__file__)"],
                           capture_output=True, text=True, cwd=elsewhere, env=env)
    assert probe.stdout.split() == [str(site / "contenv_cli" / "__init__.py"), str(site / "contenv" / "__init__.py")]
