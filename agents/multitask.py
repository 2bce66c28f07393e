"""The multi-task baseline's agent: one SAC trained on every task of a scenario at once.

Continual World (Wolczyk et al., NeurIPS 2021; ``run_mt.py``) reports a multi-task
reference: the same SAC, trained on episodes that cycle through all tasks
(:class:`contenv.multitask.MultiTaskEnv`) for the sequence's total steps. What that
means for the agent, as CW's code has it:

- one replay for everything (FIFO, its usual size), never emptied; batches mix tasks;
- one output head per task (the task one-hot picks it) and one entropy coefficient per
  task (each replayed row uses its own task's), exactly as in continual runs;
- no task changes: the random-steps phase, ``update_after`` and the optimizer are those
  of the run's start only (CW's env never reports a task change to its SAC loop);
- no protection (nothing is forgotten when nothing stops being trained).

CW's multi-task runs used learning rate 1e-4 and no PopArt for their published numbers
(``examples/paper_mt_experiments.sh``, CW10 with 2M steps per task, i.e. CW20's total);
pass ``--lr 1e-4`` to match. :class:`MultiTaskSAC` changes only what a task change does:
the first one starts the run as usual; later ones only switch the head the agent acts
with.

Example:
    >>> import gymnasium as gym, contenv
    >>> from agents.sac import SACConfig
    >>> from contenv.multitask import MultiTaskEnv
    >>> seq = gym.make("contenv/Sequence-v0", tasks=["repeat-first(d=2)", "copy(p=1,i=1)"], steps_per_task=30)
    >>> env = MultiTaskEnv.from_sequence(seq.unwrapped)
    >>> config = SACConfig(hidden_sizes=(8,), batch_size=4, random_steps=10, update_after=10, update_every=10)
    >>> agent = MultiTaskSAC(env, config, seed=0).learn(60)
    >>> sorted(set(agent.replay.sample(64).task[:, 0].tolist())), agent.task_steps
    ([0, 1], 60)
"""

from __future__ import annotations

from typing import Any

import torch

from agents.sac import SAC


class MultiTaskSAC(SAC):
    """SAC for :class:`~contenv.multitask.MultiTaskEnv`: a task change switches the head only."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        name = getattr(self.protection, "name", type(self.protection).__name__)
        if name != "finetune":
            raise ValueError(f"the multi-task baseline trains without protection, got protection {name!r}")

    def _start_task(self, task: int) -> None:
        if self.current_task < 0:  # the run's start: CW's task start (random steps, fresh optimizer)
            super()._start_task(task)
            return
        if not 0 <= task < self.num_tasks:
            raise ValueError(f"the env reports task {task}, outside this agent's 0..{self.num_tasks - 1}")
        self.current_task = task
        self._task_tensor = torch.full((1, 1), task, dtype=torch.long, device=self.device)
