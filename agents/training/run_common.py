"""What every training run shares: its arguments, their checks, the run directory and the logging callback.

:mod:`agents.training.run` (one seed) and :mod:`agents.training.population_run` (several seeds in one process) both build
on this module, so neither imports the other's internals: ``agents.training.run.train`` dispatches to
``agents.training.population_run.train_seeds`` and ``population_run`` needs nothing from ``run``.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Annotated, Any, Optional

import gymnasium as gym
import numpy as np
import torch
import tyro

import contenv
from agents.training.checkpoint import save_checkpoint
from agents.nets.networks import TRUNKS
from agents.training.plasticity import plasticity_columns, plasticity_metrics
from agents.protection import PROTECTIONS, make_protection
from agents.sac import SAC, Callback, SACConfig
from contenv.continual import ContinualEnv
from contenv.evaluation.rundir import CONFIG_FILE, RunWriter, write_config
from contenv.tasks.registry import unknown_name_error

CHECKPOINT_DIR = "checkpoints"
CHECKPOINT_FILE = "checkpoint.pt"
_SAC = SACConfig()
# Arguments that may change between a run and its resumption without changing its numbers.
_SCENARIO_HELP = ("Registered scenario id, one of: " + ", ".join(contenv.registered_ids())
                  + ". contenv/Sequence-v0 takes any --tasks.")
_AGENT_HELP = f"Agent trunk, one of: {', '.join(TRUNKS)} (mlp is Continual World's)."
_PROTECTION_HELP = (f"Protection method against forgetting, one of: {', '.join(PROTECTIONS)}; or two joined by '+' "
                    "(e.g. replay+ewc). finetune: none.")
RUNTIME_KEYS = ("resume", "device", "eval_workers", "torch_threads", "progress_bar", "stop_at_step", "run_dir")
# Arguments added after runs existed: config.json records them only when they differ from these
# defaults, so that run directories written before them still resume (--resume compares configs).
LATE_DEFAULTS = {"multitask": False, "task_in_trunk": False, "reset_optimizer": True, "body": "cw",
                 "target_entropy": None, "tune_alpha": True}
# Agent settings added after runs existed: config.json records them (``sac.*``), and a run
# directory written before them, which lacks the key, had this value.
LATE_SAC_DEFAULTS = {"sac.rnn_layers": 1, "sac.body": "cw", "sac.tune_alpha": True}


@dataclass
class TrainArgs:
    """Train a SAC agent (MLP, GRU or LSTM) on a continual scenario; write a run directory."""

    scenario: Annotated[str, tyro.conf.arg(help=_SCENARIO_HELP)] = "contenv/CW10-v0"
    """Registered scenario id (see --help for the list)."""
    tasks: Optional[tuple[str, ...]] = None
    """Task list for contenv/Sequence-v0 (or any scenario that takes tasks=), e.g. reach-v3 'repeat-first(d=5)'."""
    steps_per_task: Optional[int] = None
    """Env steps per task (default: the scenario's; Continual World: 1,000,000)."""
    horizon: Optional[int] = None
    """Meta-World episode length (default: the scenario's; Continual World: 200)."""
    task_id: Optional[str] = None
    """'onehot' (the task one-hot is appended to observations) or 'hidden' (default: the scenario's)."""
    reward_version: Optional[str] = None
    """Meta-World reward function 'v2' or 'v1' (default: the scenario's)."""
    scenario_kwargs: str = "{}"
    """Further scenario kwargs as a JSON object, e.g. '{"rank": 1}' for contenv/Distractor-v0."""
    agent: Annotated[str, tyro.conf.arg(help=_AGENT_HELP)] = "mlp"
    """Agent trunk: mlp (Continual World's), gru, lstm or mingru (parallel scan over time)."""
    protection: Annotated[str, tyro.conf.arg(help=_PROTECTION_HELP)] = "finetune"
    """Protection method against forgetting (finetune: none)."""
    multitask: bool = False
    """One agent on all tasks at once, same total steps (CW's multi-task baseline; finetune only; method 'multitask')."""
    protection_kwargs: str = "{}"
    """Arguments of the protection method as a JSON object."""
    seed: int = 0
    """Seed of the networks, the exploration, the replay and the scenario."""
    seeds: Optional[str] = None
    """Train several seeds together in one process, e.g. 0-9 or 0,1,2 (finetune only; each writes <run-dir>/seed<k>; overrides --seed)."""
    device: str = "cpu"
    """Torch device: cpu, cuda, cuda:1, or auto (cuda when available)."""
    run_dir: Optional[Path] = None
    """Run directory (default: runs/<scenario>/<agent>_<protection>/seed<seed>). Must not exist or be empty, unless --resume."""
    resume: bool = False
    """Continue the run in --run-dir from its last checkpoint (the config must match)."""
    eval_every: int = 20_000
    """Env steps between evaluations of every position (Continual World: 20,000)."""
    eval_episodes: int = 10
    """Stochastic test episodes per position and evaluation (Continual World: 10)."""
    eval_deterministic_episodes: int = 1
    """Deterministic test episodes per position and evaluation (Continual World: 1)."""
    eval_workers: int = 0
    """Worker processes stepping the test envs (0: in this process)."""
    checkpoint_every: int = 100_000
    """Env steps between checkpoints (taken at the next episode end; also at every task end)."""
    stop_at_step: Optional[int] = None
    """Stop at the first checkpoint at or after this step (to train in chunks; --resume continues)."""
    torch_threads: int = 1
    """Torch CPU threads (1 is fastest for these small matrices when the env shares the core)."""
    progress_bar: bool = True
    """Show a tqdm progress bar."""
    hidden_sizes: Optional[tuple[int, ...]] = None
    """Hidden layers of actor and critic bodies (default: 256 256 256 256 for mlp, Continual World's; 256 256 for gru/lstm)."""
    rnn_size: int = _SAC.rnn_size
    """Width of the recurrent cells (gru, lstm, mingru)."""
    rnn_layers: Optional[int] = _SAC.rnn_layers
    """Stacked recurrent layers (default: 2 for mingru; gru and lstm have 1)."""
    body: str = _SAC.body
    """Hidden layers of the heads: cw (LayerNorm + tanh, then leaky ReLU; Continual World's) or relu (plain ReLU, no normalisation; the plasticity literature's)."""
    heads: str = _SAC.heads
    """Output heads: multi (one per task, CW), single, or auto (multi when the task one-hot is observed)."""
    task_in_trunk: bool = _SAC.task_in_trunk
    """The trunk reads the task one-hot too (CW: no, the one-hot only picks the head)."""
    prev_reward: bool = _SAC.prev_reward
    """Recurrent cells also read the previous reward (as well as the observation and previous action)."""
    lr: float = _SAC.lr
    """Adam learning rate (Continual World: 1e-3)."""
    batch_size: Optional[int] = None
    """Rows per update: transitions (mlp; default 128, Continual World's) or replayed windows (gru/lstm/mingru; default 2)."""
    gamma: float = _SAC.gamma
    """Discount (Continual World: 0.99)."""
    polyak: float = _SAC.polyak
    """Target critic averaging (Continual World: 0.995)."""
    replay_size: int = _SAC.replay_size
    """Replay capacity in steps (Continual World: 1,000,000)."""
    seq_len: int = _SAC.seq_len
    """Longest replayed window (gru/lstm): gradients reach this many steps back; episodes up to this long are replayed whole."""
    burn_in: Optional[int] = _SAC.burn_in
    """Recurrent state at a window's start: default from the whole episode before it (exact); k: from k warm-up steps."""
    random_steps: int = _SAC.random_steps
    """Uniform-random actions at the start of each task (Continual World: 10,000)."""
    update_after: int = _SAC.update_after
    """Step of a task from which updates start (Continual World: 1,000)."""
    update_every: int = _SAC.update_every
    """Steps between rounds of updates (Continual World: 50)."""
    gradient_steps: Optional[int] = _SAC.gradient_steps
    """Updates per round (default: update_every, one per env step as in Continual World)."""
    init_log_alpha: float = _SAC.init_log_alpha
    """Initial log entropy coefficient of every task (Continual World: 1.0)."""
    target_entropy: Optional[float] = _SAC.target_entropy
    """Entropy the tuned coefficient aims at, per step (default: -action_dim, Continual World's)."""
    tune_alpha: bool = _SAC.tune_alpha
    """Learn the entropy coefficient toward --target-entropy (CW); --no-tune-alpha keeps exp(init_log_alpha)."""
    clip_grad_norm: Optional[float] = _SAC.clip_grad_norm
    """Clip actor and critic gradient norms (default: no clipping)."""
    reset_optimizer: bool = _SAC.reset_optimizer_on_task_change
    """Reset Adam at every task start (CW: yes); --no-reset-optimizer keeps one Adam for the whole run."""

    def sac_config(self) -> SACConfig:
        return SACConfig(
            trunk=self.agent, hidden_sizes=self.hidden_sizes, rnn_size=self.rnn_size, rnn_layers=self.rnn_layers,
            body=self.body, heads=self.heads,
            prev_reward=self.prev_reward, lr=self.lr, batch_size=self.batch_size, gamma=self.gamma,
            polyak=self.polyak, replay_size=self.replay_size, seq_len=self.seq_len, burn_in=self.burn_in,
            random_steps=self.random_steps, update_after=self.update_after, update_every=self.update_every,
            gradient_steps=self.gradient_steps, init_log_alpha=self.init_log_alpha, target_entropy=self.target_entropy,
            tune_alpha=self.tune_alpha, clip_grad_norm=self.clip_grad_norm,
            task_in_trunk=self.task_in_trunk, reset_optimizer_on_task_change=self.reset_optimizer,
        )


class RunError(ValueError):
    """Bad input to a training run (the message says what and how to fix it)."""


# ---------------------------------------------------------------------- setup


def _json_object(name: str, text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise RunError(f"--{name.replace('_', '-')} must be a JSON object, got {text!r} ({err})") from None
    if not isinstance(value, dict):
        raise RunError(f"--{name.replace('_', '-')} must be a JSON object, got {text!r}")
    return value


def check_args(args: TrainArgs) -> None:
    """Clear errors for names and numbers that cannot work."""
    if args.agent not in TRUNKS:
        raise unknown_name_error("agent", args.agent, TRUNKS)
    kwargs = _json_object("protection_kwargs", args.protection_kwargs)
    try:
        make_protection(args.protection, **kwargs)
    except TypeError as err:  # an unknown or missing keyword
        raise RunError(f"--protection-kwargs {args.protection_kwargs}: {err}") from None
    if args.multitask and (args.protection != "finetune" or args.seeds is not None):
        raise RunError("--multitask trains one agent without protection: leave --protection at finetune and "
                       "train its seeds one by one (no --seeds)")
    _json_object("scenario_kwargs", args.scenario_kwargs)
    if isinstance(args.seed, bool) or not isinstance(args.seed, int) or args.seed < 0:
        raise RunError(f"--seed must be a non-negative integer, got {args.seed!r}")
    for name in ("eval_every", "checkpoint_every", "torch_threads"):
        if getattr(args, name) <= 0:
            raise RunError(f"--{name.replace('_', '-')} must be positive, got {getattr(args, name)}")
    for name in ("steps_per_task", "horizon", "stop_at_step"):
        if getattr(args, name) is not None and getattr(args, name) <= 0:
            raise RunError(f"--{name.replace('_', '-')} must be positive, got {getattr(args, name)}")
    if args.eval_episodes < 0 or args.eval_deterministic_episodes < 0 or args.eval_episodes + args.eval_deterministic_episodes == 0:
        raise RunError("need --eval-episodes >= 0, --eval-deterministic-episodes >= 0 and at least one episode in all")
    try:
        args.sac_config()
    except ValueError as err:
        raise RunError(str(err)) from None


def make_scenario(args: TrainArgs) -> ContinualEnv:
    """The scenario env (unwrapped: the agent steps it directly, and resume swaps it)."""
    kwargs = _json_object("scenario_kwargs", args.scenario_kwargs)
    for name in ("tasks", "steps_per_task", "horizon", "task_id", "reward_version"):
        if getattr(args, name) is not None:
            kwargs[name] = list(args.tasks) if name == "tasks" else getattr(args, name)
    if not args.scenario.startswith("contenv/") or args.scenario not in gym.registry:
        raise unknown_name_error("scenario", args.scenario, contenv.registered_ids())
    try:
        env = gym.make(args.scenario, **kwargs).unwrapped
    except TypeError as err:
        raise RunError(f"scenario {args.scenario} does not take these arguments {sorted(kwargs)}: {err}") from None
    if not isinstance(env, ContinualEnv):
        raise RunError(f"{args.scenario} is not a contenv scenario (ContinualEnv); train.py trains on those only")
    return env


def run_config(args: TrainArgs, env: ContinualEnv) -> dict[str, Any]:
    """``config.json``: every argument, the resolved scenario and the agent config."""
    # ``seeds`` is left out: a seed of a batched run writes the same config as a single-seed run.
    # LATE_DEFAULTS only when set otherwise, so that run directories written before them still resume.
    late = {name for name, default in LATE_DEFAULTS.items() if getattr(args, name) == default}
    config = {f.name: getattr(args, f.name) for f in fields(args) if f.name != "seeds" and f.name not in late}
    sac = args.sac_config()  # defaults that depend on the trunk are recorded resolved
    config.update(
        run_dir=str(args.run_dir), tasks=list(env.task_names), steps_per_task=env.steps_per_task,
        horizon=env.horizon, task_id=env.task_id, reward_version=env.reward_version,
        hidden_sizes=list(sac.hidden_sizes), batch_size=sac.batch_size,
        scenario_kwargs=_json_object("scenario_kwargs", args.scenario_kwargs),
        protection_kwargs=_json_object("protection_kwargs", args.protection_kwargs),
        sac=asdict(sac), total_steps=env.total_steps,
    )
    config["sac"]["hidden_sizes"] = list(config["sac"]["hidden_sizes"])
    return json.loads(json.dumps(config))  # exactly what config.json will hold


def _flatten(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in config.items():
        if isinstance(value, dict) and value:
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[prefix + key] = value
    return flat


def config_differences(saved: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """Keys (nested ones dotted) whose values differ, ignoring the runtime keys.

    Example:
        >>> config_differences({"seed": 0, "device": "cpu", "sac": {"lr": 1}}, {"seed": 1, "device": "cuda", "sac": {"lr": 2}})
        ['sac.lr: 1 -> 2', 'seed: 0 -> 1']
    """
    saved, current = _flatten(saved), _flatten(current)
    late = {k: v for k, v in LATE_SAC_DEFAULTS.items() if k in current}
    saved = {**late, **saved}  # a key the saved run lacks had its late default
    keys = sorted((set(saved) | set(current)) - set(RUNTIME_KEYS))
    return [f"{k}: {saved.get(k, '<missing>')!r} -> {current.get(k, '<missing>')!r}"
            for k in keys if saved.get(k, "<missing>") != current.get(k, "<missing>")]


def prepare_run_dir(args: TrainArgs, config: dict[str, Any]) -> Path:
    """Check (resume) or create (new run) the run directory; nothing is overwritten."""
    run_dir = Path(args.run_dir)
    if args.resume:
        config_path = run_dir / CONFIG_FILE
        if not config_path.is_file():
            raise RunError(f"--resume: {config_path} does not exist; is {run_dir} a run directory?")
        try:
            saved = json.loads(config_path.read_text())
        except json.JSONDecodeError as err:
            raise RunError(f"--resume: {config_path} is not valid JSON ({err})") from None
        differences = config_differences(saved, config)
        if differences:
            raise RunError(f"--resume: the arguments differ from the run's {config_path} (nothing was written):\n  "
                           + "\n  ".join(differences))
        return run_dir
    if run_dir.exists() and (not run_dir.is_dir() or any(run_dir.iterdir())):
        raise RunError(f"run directory {run_dir} already exists and is not empty; pass --resume to continue it, "
                       "or choose another --run-dir (nothing is ever overwritten)")
    write_config(run_dir, config)
    return run_dir


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as err:
        raise RunError(f"unknown --device {name!r}: {err}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RunError(f"--device {name}: CUDA is not available on this machine (use cpu or auto)")
    return device


def default_run_dir(args: TrainArgs) -> Path:
    scenario = args.scenario.split("/")[-1]
    method = "multitask" if args.multitask else args.protection
    return Path("runs") / scenario / f"{args.agent}_{method}" / f"seed{args.seed}"


def eval_seed(seed: int, step: int) -> int:
    """The evaluation seed of one eval point (independent of training randomness)."""
    return int(np.random.SeedSequence([seed, step, 20_000]).generate_state(1)[0])


# ---------------------------------------------------------------------- the run


class RunCallback(Callback):
    """Evaluates, logs and checkpoints during :meth:`SAC.learn`."""

    def __init__(self, args: TrainArgs, run_dir: Path, writer: RunWriter, evaluator: Any, tensorboard: Any,
                 total_steps: int, last_checkpoint: int) -> None:
        self.args, self.run_dir, self.writer, self.evaluator, self.tb = args, run_dir, writer, evaluator, tensorboard
        self.total_steps, self.last_checkpoint = total_steps, last_checkpoint
        self.checkpoint_path = run_dir / CHECKPOINT_DIR / CHECKPOINT_FILE
        self._clock = (time.perf_counter(), None)

    def on_training_start(self, agent: SAC) -> None:
        self._clock = (time.perf_counter(), agent.num_timesteps)

    def on_step(self, agent: SAC) -> bool:
        step = agent.num_timesteps
        if step % self.args.eval_every == 0 or step == self.total_steps:
            self.evaluate(agent, step)
        return True

    def evaluate(self, agent: SAC, step: int) -> None:
        started = time.perf_counter()
        result = self.evaluator.evaluate(agent, seed=eval_seed(self.args.seed, step))
        metrics = agent.pop_metrics()
        row: dict[str, Any] = {"step": step, "active_task": agent.current_task, **result.as_row()}
        row.update({name: metrics.get(name) for name in train_columns(agent)})
        row.update(plasticity_metrics(agent, step))  # dormant units, feature rank, weight and gradient norms
        self.writer.write(row)
        then, then_step = self._clock
        now = time.perf_counter()
        for key, value in row.items():
            if key != "step" and value is not None:
                self.tb.add_scalar(key, value, step)
        self.tb.add_scalar("time/steps_per_second", (step - then_step) / max(now - then, 1e-9), step)
        self.tb.add_scalar("time/evaluation_seconds", now - started, step)
        self.tb.flush()
        self._clock = (time.perf_counter(), step)

    def on_episode_end(self, agent: SAC) -> bool:
        step = agent.num_timesteps
        due = step - self.last_checkpoint >= self.args.checkpoint_every
        if not (agent.task_ended or due or step == self.total_steps):
            if self.args.stop_at_step is None or step < self.args.stop_at_step:
                return True
        if agent.task_ended:
            agent.save(self.run_dir / CHECKPOINT_DIR / f"agent_after_task_{agent.current_task}.pt")
        save_checkpoint(self.checkpoint_path, agent, extra={"last_checkpoint": step})
        self.last_checkpoint = step
        return self.args.stop_at_step is None or step < self.args.stop_at_step

    def on_training_end(self, agent: SAC) -> None:
        self.tb.flush()


def train_columns(agent: SAC) -> list[str]:
    """The ``train/...`` columns of progress.csv (fixed, so every row has the same header)."""
    names = [f"train/{m}" for m in agent.METRICS] + [f"train/{e}" for e in agent.EPISODE_STATS]
    return names + [f"train/alpha/{t}" for t in range(agent.num_tasks)] + plasticity_columns()


__all__ = [
    "LATE_DEFAULTS",
    "CHECKPOINT_DIR",
    "CHECKPOINT_FILE",
    "RUNTIME_KEYS",
    "TrainArgs",
    "RunError",
    "check_args",
    "make_scenario",
    "run_config",
    "config_differences",
    "prepare_run_dir",
    "resolve_device",
    "default_run_dir",
    "eval_seed",
    "RunCallback",
    "train_columns",
]
