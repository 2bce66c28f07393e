"""The run directory: what a training run leaves behind and what reports read.

A run is a directory holding

- ``config.json``: everything needed to rerun it. Reports need ``tasks`` (the sequence,
  in order) and ``steps_per_task``; they also use ``scenario``, ``agent``, ``protection``
  (or ``method``) and ``seed`` when present;
- ``progress.csv``: one row per eval point, columns ``step``, ``active_task``,
  ``test/stochastic/<i>/<task>/success`` for every position ``i`` (and the same for
  ``deterministic``), optionally ``.../return`` and ``.../length``, plus free columns
  such as ``train/...``.

:class:`RunWriter` appends rows durably (flush + fsync after each) and, on resume, drops
the rows logged after the restored checkpoint, so every eval point appears exactly once.
:func:`load_runs` reads many runs and reports broken ones instead of failing.

Example:
    >>> import tempfile
    >>> run_dir = Path(tempfile.mkdtemp())
    >>> _ = write_config(run_dir, {"tasks": ["a", "b"], "steps_per_task": 10, "protection": "ewc"})
    >>> with RunWriter(run_dir) as writer:
    ...     for step in (10, 20):
    ...         writer.write({"step": step, "active_task": step // 11,
    ...                       success_column(0, "a"): 0.5, success_column(1, "b"): 0.0})
    >>> run = load_run(run_dir)
    >>> run.stochastic.tolist(), run.steps.tolist(), run.method
    ([[0.5, 0.0], [0.5, 0.0]], [10, 20], 'ewc')
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Literal, Mapping

import pandas as pd
import torch
from torch import Tensor

from contenv.atomic import atomic_file

CONFIG_FILE = "config.json"
PROGRESS_FILE = "progress.csv"
DEFAULT_PROTECTION = "finetune"
Mode = Literal["stochastic", "deterministic"]

__all__ = [
    "CONFIG_FILE",
    "PROGRESS_FILE",
    "success_column",
    "atomic_write_json",
    "write_config",
    "RunWriter",
    "Run",
    "RunLoadError",
    "load_run",
    "find_run_dirs",
    "load_runs",
    "protection_name",
    "group_by_method",
    "group_by_scenario",
    "method_settings",
    "duplicate_seeds",
    "scenario_label",
]


def success_column(position: int, task: str, mode: Mode = "stochastic") -> str:
    """Column of the success rate of sequence position ``position``.

    Example:
        >>> success_column(0, "hammer-v3")
        'test/stochastic/0/hammer-v3/success'
    """
    return f"test/{mode}/{position}/{task}/success"


# --------------------------------------------------------------------------- writing


def _atomic_write_text(path: Path, text: str) -> None:
    with atomic_file(path, "w", newline="") as f:
        f.write(text)


def atomic_write_json(path: str | Path, obj: Any) -> None:
    """Write JSON to ``path`` via a temporary file and ``os.replace``: never half written.

    Example:
        >>> import tempfile
        >>> path = Path(tempfile.mkdtemp()) / "x.json"
        >>> atomic_write_json(path, {"a": 1}); json.loads(path.read_text())
        {'a': 1}
    """
    path = Path(path)
    _atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")


def write_config(run_dir: str | Path, config: Mapping[str, Any]) -> Path:
    """Create ``run_dir`` if needed and write ``config.json`` atomically; returns its path.

    Example:
        >>> import tempfile
        >>> write_config(Path(tempfile.mkdtemp()) / "run", {"tasks": ["a"]}).name
        'config.json'
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / CONFIG_FILE
    atomic_write_json(path, dict(config))
    return path


def _format_value(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(int(value))
    if isinstance(value, str):
        return value
    if hasattr(value, "item"):  # numpy / torch scalars
        value = value.item()
    if isinstance(value, int):
        return str(value)
    return repr(float(value))


class RunWriter:
    """Appends one ``progress.csv`` row per eval point, durably.

    The first row fixes the header (``step`` first, ``active_task`` second when given,
    then the row's order); later rows may leave columns out (written empty) but not
    add new ones. Steps must increase, so an eval point cannot be written twice.

    Args:
        run_dir: the run directory (created if missing).
        resume: open an existing ``progress.csv`` and append to it (a torn last line
            from a killed process is dropped). Without it an existing non-empty file is
            an error rather than silently overwritten.

    Example:
        >>> import tempfile
        >>> run_dir = Path(tempfile.mkdtemp())
        >>> with RunWriter(run_dir) as w:
        ...     for step in (10, 20, 30):
        ...         w.write({"step": step, "loss": 0.1})
        >>> with RunWriter(run_dir, resume=True) as w:  # restored the checkpoint of step 10
        ...     w.truncate_after(10)
        ...     w.write({"step": 20, "loss": 0.2})
        2
        >>> (run_dir / PROGRESS_FILE).read_text().split()
        ['step,loss', '10,0.1', '20,0.2']
    """

    def __init__(self, run_dir: str | Path, resume: bool = False) -> None:
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.path = self.run_dir / PROGRESS_FILE
        self.header: list[str] | None = None
        self.last_step: float | None = None
        exists = self.path.exists() and self.path.stat().st_size > 0
        if exists and not resume:
            raise FileExistsError(f"{self.path} already has rows; RunWriter(run_dir, resume=True) appends to them")
        if exists:
            self._drop_torn_line()
            self._read_existing()
        self._file = open(self.path, "a", newline="")

    # -- reading back what is there
    def _drop_torn_line(self) -> None:
        data = self.path.read_bytes()
        if data and not data.endswith(b"\n"):
            _atomic_write_text(self.path, data[: data.rfind(b"\n") + 1].decode())

    def _rows(self) -> list[list[str]]:
        with open(self.path, newline="") as f:
            return [row for row in csv.reader(f) if row]

    def _read_existing(self) -> None:
        rows = self._rows()
        if not rows:
            return
        self.header = rows[0]
        if "step" not in self.header:
            raise ValueError(f"{self.path}: existing header has no 'step' column")
        k = self.header.index("step")
        if len(rows) > 1:
            self.last_step = float(rows[-1][k])

    # -- writing
    def write(self, row: Mapping[str, Any]) -> None:
        """Append one eval point (``row`` must hold ``step``), then flush and fsync."""
        if "step" not in row:
            raise ValueError("a progress row needs a 'step' entry")
        step = float(row["step"])
        if self.last_step is not None and step <= self.last_step:
            raise ValueError(
                f"step {row['step']} is not after the last written step {self.last_step:g}; "
                "a resumed run must call truncate_after(checkpoint_step) first"
            )
        if self.header is None:
            first = [k for k in ("step", "active_task") if k in row]
            self.header = first + [k for k in row if k not in first]
            self._write_line(self.header)
        unknown = [k for k in row if k not in self.header]
        if unknown:
            raise ValueError(f"columns {unknown} are not in the header fixed by the first row of {self.path}")
        self._write_line([_format_value(row.get(k)) for k in self.header])
        self.last_step = step

    def _write_line(self, values: list[str]) -> None:
        buffer = io.StringIO()
        csv.writer(buffer, lineterminator="\n").writerow(values)
        self._file.write(buffer.getvalue())
        self._file.flush()
        os.fsync(self._file.fileno())

    def truncate_after(self, step: float) -> int:
        """Drop the rows whose step is greater than ``step``; returns how many were dropped.

        Called on resume with the step of the restored checkpoint, so the eval points
        the killed process logged after that checkpoint are logged again, once.
        """
        self._file.close()
        rows = self._rows()
        dropped = 0
        if len(rows) > 1:
            k = rows[0].index("step")
            kept = [r for r in rows[1:] if float(r[k]) <= step]
            dropped = len(rows) - 1 - len(kept)
            buffer = io.StringIO()
            csv.writer(buffer, lineterminator="\n").writerows([rows[0]] + kept)
            _atomic_write_text(self.path, buffer.getvalue())
            self.last_step = float(kept[-1][k]) if kept else None
        self._file = open(self.path, "a", newline="")
        return dropped

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> "RunWriter":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# --------------------------------------------------------------------------- reading


class RunLoadError(Exception):
    """A run that cannot be read: ``path`` (the file at fault) and ``reason``."""

    def __init__(self, path: str | Path, reason: str) -> None:
        self.path = Path(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


@dataclass
class Run:
    """One loaded run: its config, its progress table and the success tensors.

    ``stochastic`` / ``deterministic`` are float64 ``[eval_points, tasks]``
    (``deterministic`` is None when not logged); ``steps`` is int64 ``[eval_points]``.
    """

    path: Path
    config: dict[str, Any]
    progress: pd.DataFrame
    tasks: list[str]
    steps_per_task: int
    steps: Tensor
    stochastic: Tensor
    deterministic: Tensor | None = field(default=None)

    def success(self, mode: Mode = "stochastic") -> Tensor:
        """The success tensor of ``mode``."""
        tensor = self.stochastic if mode == "stochastic" else self.deterministic
        if tensor is None:
            raise ValueError(f"{self.path / PROGRESS_FILE}: no {mode} success columns")
        return tensor

    @property
    def num_tasks(self) -> int:
        return len(self.tasks)

    @property
    def total_steps(self) -> int:
        """Steps of the whole sequence."""
        return self.num_tasks * self.steps_per_task

    @property
    def is_complete(self) -> bool:
        """The last eval point is at (or past) the end of the sequence."""
        return len(self.steps) > 0 and int(self.steps[-1]) >= self.total_steps

    @property
    def protection(self) -> str:
        return protection_name(self.config)

    @property
    def agent(self) -> str | None:
        agent = self.config.get("agent")
        return None if agent is None else str(agent)

    @property
    def method(self) -> str:
        """The protection method (``protection``, else ``method``, else ``finetune``)."""
        return self.protection

    @property
    def scenario(self) -> str:
        return str(self.config.get("scenario") or "custom")

    @property
    def seed(self) -> Any:
        return self.config.get("seed")


def protection_name(config: Mapping[str, Any]) -> str:
    """Method name from a config: ``protection``, else ``method``, else ``finetune``
    (``multitask`` for a multi-task baseline run).

    A list (composed methods) is joined with ``+``.

    Example:
        >>> protection_name({}), protection_name({"method": "l2"}), protection_name({"protection": ["replay", "ewc"]})
        ('finetune', 'l2', 'replay+ewc')
        >>> protection_name({"protection": "finetune", "multitask": True})
        'multitask'
    """
    if config.get("multitask"):  # the multi-task baseline (agents/multitask.py)
        return "multitask"
    value = config.get("protection")
    if value in (None, "", []):
        value = config.get("method")
    if value in (None, "", []):
        return DEFAULT_PROTECTION
    if isinstance(value, (list, tuple)):
        return "+".join(str(v) for v in value)
    return str(value)


def _read_config(run_dir: Path) -> tuple[dict[str, Any], list[str], int]:
    path = run_dir / CONFIG_FILE
    if not path.is_file():
        raise RunLoadError(path, "missing (every run directory needs config.json)")
    try:
        config = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise RunLoadError(path, f"not valid JSON ({e})") from None
    if not isinstance(config, dict):
        raise RunLoadError(path, f"expected a JSON object, found {type(config).__name__}")
    tasks = config.get("tasks")
    if tasks is None:
        raise RunLoadError(path, "missing required key 'tasks' (the task sequence)")
    if not isinstance(tasks, list) or not tasks or not all(isinstance(t, str) for t in tasks):
        raise RunLoadError(path, f"'tasks' must be a non-empty list of task names, found {tasks!r}")
    spt = config.get("steps_per_task")
    if spt is None:
        raise RunLoadError(path, "missing required key 'steps_per_task'")
    if isinstance(spt, bool) or not isinstance(spt, (int, float)) or spt <= 0 or int(spt) != spt:
        raise RunLoadError(path, f"'steps_per_task' must be a positive integer, found {spt!r}")
    return config, tasks, int(spt)


def _numeric_column(frame: pd.DataFrame, column: str, path: Path) -> Tensor:
    values = pd.to_numeric(frame[column], errors="coerce")
    bad = values.isna()
    if bad.any():
        row = int(bad.to_numpy().argmax())
        raw = frame[column].iloc[row]
        what = "empty" if pd.isna(raw) else f"non-numeric value {raw!r}"
        raise RunLoadError(path, f"{what} in column {column!r} at data row {row + 1}")
    return torch.tensor(values.to_numpy(dtype="float64"))


def _success_tensor(frame: pd.DataFrame, tasks: list[str], mode: Mode, path: Path) -> Tensor | None:
    columns = [success_column(i, t, mode) for i, t in enumerate(tasks)]
    missing = [c for c in columns if c not in frame.columns]
    if len(missing) == len(columns) and mode == "deterministic":
        return None
    if missing:
        shown = ", ".join(missing[:3]) + (f" and {len(missing) - 3} more" if len(missing) > 3 else "")
        raise RunLoadError(path, f"missing columns {shown} (tasks from config.json)")
    success = torch.stack([_numeric_column(frame, c, path) for c in columns], dim=-1)
    if ((success < 0) | (success > 1)).any():
        raise RunLoadError(path, f"{mode} success values outside [0, 1]")
    return success


def load_run(path: str | Path) -> Run:
    """Read one run directory.

    Raises:
        RunLoadError: naming the file at fault and what is wrong with it.

    Example:
        >>> import tempfile
        >>> load_run(tempfile.mkdtemp())  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        contenv.evaluation.rundir.RunLoadError: .../config.json: missing (every run directory needs config.json)
    """
    run_dir = Path(path)
    if not run_dir.is_dir():
        raise RunLoadError(run_dir, "not a directory")
    config, tasks, spt = _read_config(run_dir)
    progress_path = run_dir / PROGRESS_FILE
    if not progress_path.is_file():
        raise RunLoadError(progress_path, "missing")
    try:
        frame = pd.read_csv(progress_path)
    except pd.errors.EmptyDataError:
        raise RunLoadError(progress_path, "empty file (no header, no eval rows)") from None
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError) as e:
        reason = " ".join(str(e).split())
        raise RunLoadError(progress_path, f"malformed CSV ({reason})") from None
    if "step" not in frame.columns:
        raise RunLoadError(progress_path, "missing column 'step'")
    if len(frame) == 0:
        raise RunLoadError(progress_path, "no eval rows (header only)")
    steps = _numeric_column(frame, "step", progress_path)
    if (steps != steps.round()).any():
        raise RunLoadError(progress_path, "non-integer values in column 'step'")
    steps = steps.long()
    repeated = (steps[1:] <= steps[:-1]).nonzero().flatten()
    if len(repeated):
        k = int(repeated[0]) + 1
        raise RunLoadError(
            progress_path,
            f"steps do not increase at data row {k + 1} (step {int(steps[k])} after {int(steps[k - 1])}); "
            "an eval point logged twice? (a resumed run must truncate_after its checkpoint)",
        )
    return Run(
        path=run_dir,
        config=config,
        progress=frame,
        tasks=list(tasks),
        steps_per_task=spt,
        steps=steps,
        stochastic=_success_tensor(frame, tasks, "stochastic", progress_path),
        deterministic=_success_tensor(frame, tasks, "deterministic", progress_path),
    )


def find_run_dirs(paths: Iterable[str | Path]) -> tuple[list[Path], list[RunLoadError]]:
    """Run directories at or under ``paths``: a directory holding ``config.json`` (or,
    broken, only ``progress.csv``) is a run and is not searched further.

    Example:
        >>> import tempfile
        >>> root = Path(tempfile.mkdtemp())
        >>> _ = write_config(root / "group" / "seed0", {})
        >>> [p.name for p in find_run_dirs([root])[0]]
        ['seed0']
    """
    found: list[Path] = []
    errors: list[RunLoadError] = []
    for path in map(Path, paths):
        if not path.exists():
            errors.append(RunLoadError(path, "does not exist"))
            continue
        if not path.is_dir():
            errors.append(RunLoadError(path, "not a directory"))
            continue
        before = len(found)
        for root, dirs, files in os.walk(path):
            if CONFIG_FILE in files or PROGRESS_FILE in files:
                if Path(root).resolve() not in {p.resolve() for p in found}:  # overlapping paths list a run once
                    found.append(Path(root))
                dirs[:] = []
            else:
                dirs.sort()
        if len(found) == before:
            errors.append(RunLoadError(path, f"no run directory ({CONFIG_FILE}) found at or under it"))
    return found, errors


def load_runs(paths: Iterable[str | Path]) -> tuple[list[Run], list[RunLoadError]]:
    """Load every run at or under ``paths``; broken runs become errors, not exceptions.

    Example:
        >>> runs, errors = load_runs(["/nonexistent/run"])
        >>> runs, [str(e) for e in errors]
        ([], ['/nonexistent/run: does not exist'])
    """
    run_dirs, errors = find_run_dirs(paths)
    runs: list[Run] = []
    for run_dir in run_dirs:
        try:
            runs.append(load_run(run_dir))
        except RunLoadError as e:
            errors.append(e)
    return runs, errors


# --------------------------------------------------------------------------- grouping

# Config keys that never change a run's numbers: where and how fast it ran, what it was
# called, and the seed (which is what a group pools over).
RUNTIME_KEYS = frozenset({"run_dir", "device", "seed", "seeds", "eval_workers", "num_workers", "torch_threads",
                          "progress_bar", "resume", "stop_at_step", "checkpoint_every", "wandb"})
# Keys that define the protocol (which table a run belongs to) rather than the method.
PROTOCOL_KEYS = frozenset({"scenario", "tasks", "steps_per_task", "horizon", "task_id", "reward_version",
                           "scenario_kwargs", "total_steps"})
# Keys that name the method (the row's name).
NAME_KEYS = frozenset({"agent", "protection", "method"})


def _flat(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in config.items():
        if isinstance(value, Mapping) and value:
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[prefix + key] = json.dumps(value, sort_keys=True, default=str)
    return out


def method_settings(config: Mapping[str, Any]) -> dict[str, str]:
    """The settings of a run that may change its results, beyond its protocol and method
    name: every config entry (nested ones dotted, values as JSON) except
    :data:`RUNTIME_KEYS`, :data:`PROTOCOL_KEYS` and :data:`NAME_KEYS`.

    Example:
        >>> method_settings({"seed": 3, "device": "cuda", "tasks": ["a"], "protection": "ewc",
        ...                  "lr": 0.001, "protection_kwargs": {"coef": 100}})
        {'lr': '0.001', 'protection_kwargs.coef': '100'}
    """
    skip = RUNTIME_KEYS | PROTOCOL_KEYS | NAME_KEYS
    return {k: v for k, v in _flat(config).items() if k.split(".")[0] not in skip}


def _difference_label(settings: list[dict[str, str]]) -> list[str]:
    """Per settings dict, ``"key=value, ..."`` over the keys whose values differ between them
    (``sac.lr`` is left out when ``lr`` differs too: train.py records both)."""
    keys = sorted({k for s in settings for k in s})
    differing = [k for k in keys if len({s.get(k, "<missing>") for s in settings}) > 1]
    shown = [k for k in differing if not (k.startswith("sac.") and k[4:] in differing)]
    return [", ".join(f"{k}={s.get(k, '<missing>')}" for k in shown) for s in settings]


def group_by_method(runs: Iterable[Run]) -> dict[str, list[Run]]:
    """Runs grouped by method and every setting that may change results (seeds pooled).

    The name is the protection; when the runs use more than one agent it becomes
    ``<agent>/<protection>`` so that, say, an MLP and a GRU fine-tuning never share a
    row (a missing agent reads ``?``). Runs of one name whose :func:`method_settings`
    differ (another ``lr``, other ``protection_kwargs``...) are separate groups, labelled
    with what differs: ``ewc (protection_kwargs.coef=100)``.

    Example:
        >>> def fake(**config):
        ...     return Run(Path("."), config, pd.DataFrame(), ["a"], 1, torch.zeros(0), torch.zeros(0, 1))
        >>> sorted(group_by_method([fake(protection="ewc"), fake()]))
        ['ewc', 'finetune']
        >>> sorted(group_by_method([fake(agent="sac", protection="ewc"), fake(agent="gru_sac")]))
        ['gru_sac/finetune', 'sac/ewc']
        >>> sorted(group_by_method([fake(protection="ewc", lr=0.001, seed=0), fake(protection="ewc", lr=0.0003)]))
        ['ewc (lr=0.0003)', 'ewc (lr=0.001)']
    """
    runs = list(runs)
    mixed_agents = len({run.agent for run in runs}) > 1
    keyed: dict[str, dict[tuple, list[Run]]] = {}
    for run in runs:
        name = f"{run.agent or '?'}/{run.protection}" if mixed_agents else run.protection
        settings = tuple(sorted(method_settings(run.config).items()))
        keyed.setdefault(name, {}).setdefault(settings, []).append(run)
    groups: dict[str, list[Run]] = {}
    for name, by_settings in keyed.items():
        if len(by_settings) == 1:
            groups[name] = next(iter(by_settings.values()))
            continue
        labels = _difference_label([dict(settings) for settings in by_settings])
        for label, members in zip(labels, by_settings.values()):
            groups[f"{name} ({label})"] = members
    return groups


def duplicate_seeds(label: str, runs: Iterable[Run]) -> list[RunLoadError]:
    """One error per run whose seed another run of the group also has (a group pools
    independent seeds; the same seed twice would count one sample double).

    Example:
        >>> def fake(path, seed):
        ...     return Run(Path(path), {"seed": seed}, pd.DataFrame(), ["a"], 1, torch.zeros(0), torch.zeros(0, 1))
        >>> [str(e) for e in duplicate_seeds("ewc", [fake("r0", 0), fake("r1", 1), fake("copy", 0)])]
        ['r0/config.json: seed 0 appears 2 times in group ewc (r0, copy); a group needs distinct seeds', 'copy/config.json: seed 0 appears 2 times in group ewc (r0, copy); a group needs distinct seeds']
    """
    runs = list(runs)
    counts = Counter(json.dumps(run.seed) for run in runs if run.seed is not None)
    errors = []
    for run in runs:
        key = json.dumps(run.seed)
        if run.seed is not None and counts[key] > 1:
            paths = ", ".join(str(r.path) for r in runs if json.dumps(r.seed) == key)
            errors.append(RunLoadError(run.path / CONFIG_FILE, f"seed {run.seed} appears {counts[key]} times in group "
                                       f"{label} ({paths}); a group needs distinct seeds"))
    return errors


def _registered_tasks(scenario: str) -> list[str] | None:
    try:
        from scenarios import load_scenarios
    except ImportError:  # pragma: no cover - the scenarios package ships with contenv
        return None
    found = load_scenarios().get(scenario)
    return None if found is None else list(found.kwargs.get("tasks") or []) or None


def task_list_label(tasks: list[str], width: int = 3) -> str:
    """A short name for a task list: ``"a, b, c"`` or ``"a, b, ... (20 tasks)"``."""
    if len(tasks) <= width:
        return ", ".join(tasks)
    return ", ".join(tasks[: width - 1]) + f", ... ({len(tasks)} tasks)"


def scenario_label(run: Run) -> str:
    """What a run actually trained on: its scenario id when its task list is that
    scenario's own (or the id is not a registered one), else the task list.

    Example:
        >>> def fake(tasks, **config):
        ...     return Run(Path("."), config, pd.DataFrame(), tasks, 1, torch.zeros(0), torch.zeros(0, 1))
        >>> scenario_label(fake(["reach-v3"], scenario="contenv/CW10-v0"))
        'tasks reach-v3 (given to contenv/CW10-v0)'
        >>> scenario_label(fake(["a"], scenario="toy")), scenario_label(fake(["a", "b"]))
        ('toy', 'custom')
    """
    registered = _registered_tasks(run.scenario)
    if registered is None or [t for t in registered] == list(run.tasks):
        return run.scenario
    return f"tasks {task_list_label(run.tasks)} (given to {run.scenario})"


def group_by_scenario(runs: Iterable[Run]) -> dict[str, list[Run]]:
    """Runs grouped by protocol: the task list, steps per task and the other protocol
    keys (horizon, task_id, reward_version, scenario_kwargs). The label is
    :func:`scenario_label`, extended with the budget (and other differing protocol keys)
    when one label covers several protocols.

    Example:
        >>> def fake(spt, tasks=("a",), **config):
        ...     return Run(Path("."), config, pd.DataFrame(), list(tasks), spt, torch.zeros(0), torch.zeros(0, 1))
        >>> sorted(group_by_scenario([fake(10, scenario="s"), fake(20, scenario="s"), fake(10, ("b",))]))
        ['custom', 's (10 steps/task)', 's (20 steps/task)']
    """
    extra_keys = sorted(PROTOCOL_KEYS - {"scenario", "tasks", "steps_per_task", "total_steps"})
    keyed: dict[tuple, list[Run]] = {}
    for run in runs:
        extras = tuple(json.dumps(run.config.get(k), sort_keys=True) for k in extra_keys)
        keyed.setdefault((tuple(run.tasks), run.steps_per_task, extras), []).append(run)
    labels = {key: scenario_label(members[0]) for key, members in keyed.items()}
    groups: dict[str, list[Run]] = {}
    for key, members in keyed.items():
        same = [k for k in keyed if labels[k] == labels[key]]
        label = labels[key]
        if len(same) > 1:
            parts = []
            if len({k[1] for k in same}) > 1:
                parts.append(f"{key[1]} steps/task")
            parts += [f"{name}={value}" for name, value, column in zip(extra_keys, key[2], zip(*(k[2] for k in same)))
                      if len(set(column)) > 1]
            if parts:
                label = f"{label} ({', '.join(parts)})"
        base, k = label, 2
        while label in groups:
            label, k = f"{base} #{k}", k + 1
        groups[label] = members
    return groups
