"""Continual World metrics over success tensors, in torch, on the tensors' device.

Shapes. ``success`` is ``[..., eval_points, tasks]``: one run is ``[E, T]``, many seeds
``[S, E, T]``; entry ``[e, i]`` is the stochastic success rate p_i of sequence position
``i`` at eval point ``e``. ``steps[e]`` is the number of env steps taken before eval
point ``e``. Task ``i`` is trained on steps ``[i * steps_per_task, (i+1) * steps_per_task)``.

Which eval points belong to task ``i`` (its *window*). An eval point at step ``s``
measures the policy after ``s`` steps, so it belongs to the task that was trained on
step ``s - 1``: window ``i`` holds the eval points with
``i * steps_per_task < s <= (i+1) * steps_per_task``. This is exactly how Continual
World tags its eval rows (``train/active_env`` of the last training step; CW logs at
``s = 20k, 40k, ..., T * 1M`` and has no eval at step 0). An eval at step 0, if logged,
belongs to no window: it is drawn in plots but enters no metric.

Definitions (Continual World, Wolczyk et al. 2021, and the official ``tables.py``):

- final value of a curve: mean of its last ``final_points`` (5) eval points;
- performance P = mean_i final(p_i);
- forgetting F_i = end_i(p_i) - final(p_i), where end_i is the mean of the last
  ``final_points`` eval points *inside task i's window* (CW: ``tail(5)`` of the rows with
  ``train/active_env == i``; ``final_points=1`` gives the single last point).
  F is averaged over all tasks, the last included; its F_i is 0 when the run ends at the
  end of its last window;
- forward transfer FT_i = (AUC_i - AUC^b_i) / (1 - AUC^b_i), AUC_i = mean of p_i over
  window i, AUC^b_i the same for a single-task reference run of that task (its window
  0); AUC and AUC^b are averaged over seeds *before* normalising; FT = mean_i FT_i;
- reference transfer RT = (1/N) sum_{i=2..N} max_{j<i} FT(j, i) of a transfer matrix
  (rows = source trained first, columns = target);
- learning speed (plasticity, not a CW metric): AUC_i itself, the success of task i
  averaged over its own window, i.e. how fast the task is learned from where the run
  stood when it started; its *trend* is the least-squares slope of AUC_i against the
  task index i (negative: later tasks are learned more slowly, a loss of plasticity),
  and ``early``/``late`` are the mean AUC of the first and the last quarter of tasks;
- 90 % bootstrap CIs over seeds, 4000 resamples, 5 % / 95 % quantiles ("midpoint"
  interpolation as CW's ``np.quantile``); for FT the CL runs and the reference runs are
  resampled independently.

Example:
    >>> import torch
    >>> steps = torch.tensor([0, 10, 20, 30, 40])            # 2 tasks of 20 steps
    >>> success = torch.tensor([[0.0, 0.0], [0.5, 0.0], [1.0, 0.0],
    ...                         [0.5, 0.5], [0.0, 1.0]])
    >>> average_performance(success, final_points=1).item()
    0.5
    >>> forgetting_per_task(success, steps, steps_per_task=20, final_points=1).tolist()
    [1.0, 0.0]
    >>> task_auc(success, steps, steps_per_task=20).tolist()
    [0.75, 0.75]
"""

from __future__ import annotations

import csv
import re
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Literal, NamedTuple, Sequence

import torch
from torch import Tensor

if TYPE_CHECKING:
    import pandas as pd

FINAL_POINTS = 5
NUM_RESAMPLES = 4000
CONFIDENCE = 0.9
# FT is undefined when the reference solved the task from its first eval point
# (AUC^b = 1); below this margin the denominator is replaced by 1 (see forward_transfer_per_task).
SATURATED_REFERENCE_MARGIN = 1e-9

__all__ = [
    "Estimate",
    "eval_task_index",
    "task_window_mask",
    "final_success",
    "average_performance",
    "end_of_task_success",
    "forgetting_per_task",
    "average_forgetting",
    "task_auc",
    "reference_auc",
    "forward_transfer_per_task",
    "forward_transfer",
    "reference_transfer",
    "transfer_targets",
    "tile_transfer_matrix",
    "sequence_transfer_matrix",
    "bootstrap_distribution",
    "bootstrap_ci",
    "bootstrap_mean_ci",
    "estimate",
    "cw_metrics",
    "learning_speed_trend",
    "learning_speed",
    "load_transfer_matrix",
    "load_published_results",
]


class Estimate(NamedTuple):
    """A point estimate with its bootstrap confidence interval (tensors of equal shape)."""

    value: Tensor
    lo: Tensor
    hi: Tensor


# --------------------------------------------------------------------------- windows


def eval_task_index(steps: Tensor, steps_per_task: int) -> Tensor:
    """Sequence position trained just before each eval point; -1 for step 0.

    Args:
        steps: ``[E]`` env step of every eval point.
        steps_per_task: training steps of every task.

    Returns:
        ``[E]`` int64: ``ceil(step / steps_per_task) - 1`` (positions past the sequence
        come out ``>= T`` and match no window).

    Example:
        >>> eval_task_index(torch.tensor([0, 1, 20, 21, 40]), 20).tolist()
        [-1, 0, 0, 1, 1]
    """
    if steps_per_task <= 0:
        raise ValueError(f"steps_per_task must be positive, got {steps_per_task}")
    steps = steps.long()
    return torch.where(steps > 0, (steps + steps_per_task - 1) // steps_per_task - 1, -1)


def task_window_mask(steps: Tensor, steps_per_task: int, num_tasks: int) -> Tensor:
    """``[E, T]`` bool: eval point ``e`` lies in task ``i``'s training window.

    Example:
        >>> task_window_mask(torch.tensor([0, 10, 20, 30, 40]), 20, 2).int().tolist()
        [[0, 0], [1, 0], [1, 0], [0, 1], [0, 1]]
    """
    index = eval_task_index(steps, steps_per_task)
    tasks = torch.arange(num_tasks, device=steps.device)
    return index[:, None] == tasks[None, :]


def _check_shapes(success: Tensor, steps: Tensor) -> None:
    if success.dim() < 2:
        raise ValueError(f"success must be [..., eval_points, tasks], got shape {tuple(success.shape)}")
    if steps.dim() != 1 or steps.shape[0] != success.shape[-2]:
        raise ValueError(
            f"steps must be [eval_points] = [{success.shape[-2]}], got shape {tuple(steps.shape)}"
        )


def _window_weights(mask: Tensor, like: Tensor, what: str) -> Tensor:
    """Column-normalised float weights of an ``[E, T]`` mask; every task needs a point."""
    counts = mask.sum(0)
    empty = (counts == 0).nonzero().flatten().tolist()
    if empty:
        raise ValueError(f"no eval point in the training window of task(s) {empty} ({what})")
    weights = mask.to(device=like.device, dtype=like.dtype)
    return weights / counts.to(device=like.device, dtype=like.dtype)


def _mean_over_points(success: Tensor, weights: Tensor) -> Tensor:
    # A plain product-sum: einsum picks a slow batched-matmul layout for this shape.
    return (success * weights).sum(-2)


# --------------------------------------------------------------------------- performance, forgetting


def final_success(success: Tensor, final_points: int = FINAL_POINTS) -> Tensor:
    """Final value of every task's curve: mean of the last ``final_points`` eval points.

    Args:
        success: ``[..., E, T]``.
        final_points: how many trailing eval points to average (CW: 5).

    Returns:
        ``[..., T]``.

    Example:
        >>> final_success(torch.tensor([[0.0], [0.2], [0.4]]), final_points=2).tolist()
        [0.30000001192092896]
    """
    if final_points < 1:
        raise ValueError(f"final_points must be >= 1, got {final_points}")
    num_points = success.shape[-2]
    last = torch.arange(num_points, device=success.device) >= num_points - final_points
    weights = last.to(success.dtype) / last.sum()
    # Same product-sum as end_of_task_success, so F_i of the last task is exactly 0.
    return _mean_over_points(success, weights[:, None])


def average_performance(success: Tensor, final_points: int = FINAL_POINTS) -> Tensor:
    """Performance P = mean over tasks of the final success; ``[..., E, T] -> [...]``.

    Example:
        >>> average_performance(torch.tensor([[1.0, 0.0]]), final_points=1).item()
        0.5
    """
    return final_success(success, final_points).mean(-1)


def end_of_task_success(
    success: Tensor, steps: Tensor, steps_per_task: int, final_points: int = FINAL_POINTS
) -> Tensor:
    """p_i at the end of task i's training: mean of its window's last ``final_points`` points.

    Args:
        success: ``[..., E, T]``.
        steps: ``[E]``.
        steps_per_task: training steps of every task.
        final_points: trailing points of the window to average (CW: 5, as for the
            final value); a window with fewer points uses all of them.

    Returns:
        ``[..., T]``.

    Example:
        >>> steps = torch.tensor([10, 20, 30, 40])
        >>> s = torch.tensor([[0.2, 0.0], [0.4, 0.0], [0.0, 0.6], [0.0, 0.8]])
        >>> end_of_task_success(s, steps, 20, final_points=1).tolist()
        [0.4000000059604645, 0.800000011920929]
    """
    _check_shapes(success, steps)
    if final_points < 1:
        raise ValueError(f"final_points must be >= 1, got {final_points}")
    window = task_window_mask(steps, steps_per_task, success.shape[-1])
    # Count the window's points at or after each point, to keep the trailing ones.
    from_end = window.flip(0).cumsum(0).flip(0)
    last = window & (from_end <= final_points)
    return _mean_over_points(success, _window_weights(last, success, "end of task"))


def forgetting_per_task(
    success: Tensor, steps: Tensor, steps_per_task: int, final_points: int = FINAL_POINTS
) -> Tensor:
    """F_i = end-of-task success - final success; ``[..., E, T] -> [..., T]``.

    Example:
        >>> steps = torch.tensor([10, 20, 30, 40])
        >>> s = torch.tensor([[0.5, 0.0], [1.0, 0.0], [0.5, 0.5], [0.0, 1.0]])
        >>> forgetting_per_task(s, steps, 20, final_points=1).tolist()
        [1.0, 0.0]
    """
    return end_of_task_success(success, steps, steps_per_task, final_points) - final_success(
        success, final_points
    )


def average_forgetting(
    success: Tensor, steps: Tensor, steps_per_task: int, final_points: int = FINAL_POINTS
) -> Tensor:
    """Forgetting F = mean over all tasks (the last included) of F_i; ``-> [...]``.

    Example:
        >>> steps = torch.tensor([10, 20, 30, 40])
        >>> s = torch.tensor([[0.5, 0.0], [1.0, 0.0], [0.5, 0.5], [0.0, 1.0]])
        >>> average_forgetting(s, steps, 20, final_points=1).item()
        0.5
    """
    return forgetting_per_task(success, steps, steps_per_task, final_points).mean(-1)


# --------------------------------------------------------------------------- forward transfer


def task_auc(success: Tensor, steps: Tensor, steps_per_task: int) -> Tensor:
    """AUC_i: mean of p_i over the eval points of task i's window; ``[..., E, T] -> [..., T]``.

    Example:
        >>> steps = torch.tensor([0, 10, 20, 30, 40])
        >>> s = torch.tensor([[0.0, 0.0], [0.5, 0.0], [1.0, 0.0], [1.0, 0.2], [1.0, 0.4]])
        >>> task_auc(s, steps, 20).tolist()
        [0.75, 0.30000001192092896]
    """
    _check_shapes(success, steps)
    window = task_window_mask(steps, steps_per_task, success.shape[-1])
    return _mean_over_points(success, _window_weights(window, success, "AUC"))


def reference_auc(success: Tensor, steps: Tensor, steps_per_task: int) -> Tensor:
    """AUC^b of single-task reference curves: mean over their first window; ``[..., E] -> [...]``.

    Eval points after ``steps_per_task`` (a reference trained longer) are left out so
    that AUC and AUC^b average the same span of training.

    Example:
        >>> reference_auc(torch.tensor([0.0, 0.2, 0.4, 1.0]), torch.tensor([0, 10, 20, 30]), 20).item()
        0.30000001192092896
    """
    return task_auc(success[..., None], steps, steps_per_task)[..., 0]


def forward_transfer_per_task(cl_auc: Tensor, ref_auc: Tensor) -> Tensor:
    """FT_i = (AUC_i - AUC^b_i) / (1 - AUC^b_i), seeds averaged before normalising.

    Args:
        cl_auc: ``[..., S, T]`` AUC_i of every CL seed.
        ref_auc: ``[..., R, T]`` AUC^b of every reference seed, column i being the
            reference of the task at position i (repeated tasks share a reference).

    Returns:
        ``[..., T]``. Where the reference mean is 1 (up to ``1e-9``; the reference
        solved the task from its first eval point) the ratio is undefined; the
        denominator is then replaced by 1, so FT_i = AUC_i - 1: 0 if the CL run is
        perfect too, negative otherwise (never inf/NaN).

    Example:
        >>> cl = torch.tensor([[0.6, 0.2], [0.8, 0.2]])
        >>> ref = torch.tensor([[0.5, 0.6], [0.5, 0.6]])
        >>> [round(v, 4) for v in forward_transfer_per_task(cl, ref).tolist()]
        [0.4, -1.0]
    """
    if cl_auc.shape[-1] != ref_auc.shape[-1]:
        raise ValueError(
            f"cl_auc has {cl_auc.shape[-1]} tasks but ref_auc has {ref_auc.shape[-1]}"
        )
    cl_mean = cl_auc.mean(-2)
    ref_mean = ref_auc.mean(-2)
    room = 1.0 - ref_mean
    room = torch.where(room > SATURATED_REFERENCE_MARGIN, room, torch.ones_like(room))
    return (cl_mean - ref_mean) / room


def forward_transfer(cl_auc: Tensor, ref_auc: Tensor) -> Tensor:
    """FT = mean over tasks of :func:`forward_transfer_per_task`; ``-> [...]``.

    Example:
        >>> round(forward_transfer(torch.tensor([[0.6, 0.2]]), torch.tensor([[0.5, 0.6]])).item(), 4)
        -0.4
    """
    return forward_transfer_per_task(cl_auc, ref_auc).mean(-1)


# --------------------------------------------------------------------------- transfer matrix


def transfer_targets(matrix: Tensor) -> tuple[Tensor, Tensor]:
    """Best transfer any earlier task offers: ``max_{j<i} FT(j, i)`` and its source ``j``.

    Args:
        matrix: ``[N, N]`` transfer matrix in sequence order, rows = source trained
            first, columns = target.

    Returns:
        ``(targets [N], sources [N])``; position 0 has no earlier task: NaN and -1.

    Example:
        >>> m = torch.tensor([[0.0, 0.3, 0.1], [0.0, 0.0, 0.5], [0.0, 0.0, 0.0]])
        >>> targets, sources = transfer_targets(m)
        >>> targets.tolist()[1:], sources.tolist()
        ([0.30000001192092896, 0.5], [-1, 0, 1])
    """
    if matrix.dim() != 2 or matrix.shape[0] != matrix.shape[1]:
        raise ValueError(f"transfer matrix must be square, got shape {tuple(matrix.shape)}")
    n = matrix.shape[0]
    earlier = torch.ones(n, n, dtype=torch.bool, device=matrix.device).triu(diagonal=1)
    masked = matrix.masked_fill(~earlier, float("-inf"))
    targets, sources = masked.max(dim=0)
    targets = targets.clone()
    sources = sources.clone()
    targets[0] = float("nan")
    sources[0] = -1
    return targets, sources


def reference_transfer(matrix: Tensor) -> Tensor:
    """RT = (1/N) * sum_{i=2..N} max_{j<i} FT(j, i) (the first task counts as 0).

    Example:
        >>> m = torch.tensor([[0.0, 0.3, 0.1], [0.0, 0.0, 0.5], [0.0, 0.0, 0.0]])
        >>> round(reference_transfer(m).item(), 4)
        0.2667
    """
    targets, _ = transfer_targets(matrix)
    return targets[1:].sum() / matrix.shape[0]


def tile_transfer_matrix(matrix: Tensor, reps: int = 2) -> Tensor:
    """The matrix of a sequence repeated ``reps`` times (CW20 = CW10 twice: ``reps=2``).

    Example:
        >>> tile_transfer_matrix(torch.tensor([[1, 2], [3, 4]])).tolist()
        [[1, 2, 1, 2], [3, 4, 3, 4], [1, 2, 1, 2], [3, 4, 3, 4]]
    """
    return matrix.repeat(reps, reps)


def _strip_version(task: str) -> str:
    return re.sub(r"-v\d+$", "", task)


def sequence_transfer_matrix(
    matrix: Tensor, matrix_tasks: Sequence[str], sequence: Sequence[str]
) -> Tensor:
    """Rows and columns of ``matrix`` picked in the order of ``sequence`` (repeats allowed).

    Names match exactly or after dropping a ``-vN`` suffix (``hammer-v3`` -> ``hammer``).

    Example:
        >>> m = torch.tensor([[1, 2], [3, 4]])
        >>> sequence_transfer_matrix(m, ["a", "b"], ["b-v3", "a", "b"]).tolist()
        [[4, 3, 4], [2, 1, 2], [4, 3, 4]]
    """
    lookup = {name: k for k, name in enumerate(matrix_tasks)}
    index = []
    for task in sequence:
        key = task if task in lookup else _strip_version(task)
        if key not in lookup:
            raise KeyError(f"task {task!r} is not in the transfer matrix ({', '.join(matrix_tasks)})")
        index.append(lookup[key])
    idx = torch.tensor(index, device=matrix.device)
    return matrix[idx][:, idx]


# --------------------------------------------------------------------------- bootstrap


def bootstrap_distribution(
    samples: Sequence[Tensor],
    statistic: Callable[..., Tensor],
    num_resamples: int = NUM_RESAMPLES,
    seed: int = 0,
) -> Tensor:
    """The statistic on ``num_resamples`` bootstrap resamples, ``[B, ...]``.

    Every sample is resampled independently along dim 0 (with replacement, its own size).
    All resamples are drawn at once and ``statistic`` runs once, vectorised, on the
    samples' device. Indices come from a seeded CPU ``torch.Generator``, drawn sample
    after sample, so the same seed gives the same resamples on every device.

    Args:
        samples: tensors ``[n_k, ...]`` (seeds first), e.g. per-seed performance ``[S]``,
            or CL AUCs ``[S, T]`` and reference AUCs ``[R, T]``.
        statistic: maps resampled tensors ``[B, n_k, ...]`` to ``[B, ...]`` (reduce dim 1).
        num_resamples: B (CW: 4000).
        seed: generator seed.

    Example:
        >>> bootstrap_distribution([torch.tensor([1.0, 3.0])], lambda b: b.mean(1), 5).shape
        torch.Size([5])
    """
    generator = torch.Generator().manual_seed(seed)
    resampled = []
    for sample in samples:
        n = sample.shape[0]
        if n == 0:
            raise ValueError("cannot bootstrap an empty sample")
        index = torch.randint(n, (num_resamples, n), generator=generator)
        resampled.append(sample[index.to(sample.device)])
    return statistic(*resampled)


def bootstrap_ci(
    samples: Sequence[Tensor],
    statistic: Callable[..., Tensor],
    num_resamples: int = NUM_RESAMPLES,
    confidence: float = CONFIDENCE,
    seed: int = 0,
) -> tuple[Tensor, Tensor]:
    """Percentile bootstrap CI of ``statistic`` (see :func:`bootstrap_distribution`).

    Args:
        samples: tensors ``[n_k, ...]``, each resampled independently along dim 0.
        statistic: maps resampled tensors ``[B, n_k, ...]`` to ``[B, ...]``.
        num_resamples: B (CW: 4000).
        confidence: 0.9 gives the 5 % and 95 % quantiles.
        seed: generator seed.

    Returns:
        ``(lo, hi)``, each ``[...]``.

    Example:
        >>> x = torch.tensor([0.8, 0.8, 0.8])
        >>> lo, hi = bootstrap_ci([x], lambda b: b.mean(1))
        >>> round(lo.item(), 6), round(hi.item(), 6)
        (0.8, 0.8)
    """
    return _percentiles(bootstrap_distribution(samples, statistic, num_resamples, seed), confidence)


def _percentiles(values: Tensor, confidence: float) -> tuple[Tensor, Tensor]:
    """(1-c)/2 and (1+c)/2 quantiles over dim 0, "midpoint" interpolation like CW's numpy."""
    alpha = (1.0 - confidence) / 2.0
    q = torch.tensor([alpha, 1.0 - alpha], dtype=values.dtype, device=values.device)
    # Quantiles along a contiguous last dim are markedly faster than along dim 0.
    lo, hi = torch.quantile(values.movedim(0, -1).contiguous(), q, dim=-1, interpolation="midpoint")
    return lo, hi


def bootstrap_mean_ci(
    sample: Tensor,
    num_resamples: int = NUM_RESAMPLES,
    confidence: float = CONFIDENCE,
    seed: int = 0,
) -> tuple[Tensor, Tensor]:
    """:func:`bootstrap_ci` of the mean over dim 0, for large samples (curves ``[S, E, T]``).

    Draws the same resamples as ``bootstrap_ci([sample], lambda b: b.mean(1))`` but
    turns each into per-seed weights, so the resampled means are one matrix product
    (``[B, S] @ [S, ...]``) instead of a ``[B, S, ...]`` gather.

    Example:
        >>> x = torch.tensor([[0.0, 1.0], [1.0, 1.0]], dtype=torch.float64)
        >>> lo, hi = bootstrap_mean_ci(x)
        >>> lo.tolist(), hi.tolist()
        ([0.0, 1.0], [1.0, 1.0])
    """
    n = sample.shape[0]
    if n == 0:
        raise ValueError("cannot bootstrap an empty sample")
    generator = torch.Generator().manual_seed(seed)
    index = torch.randint(n, (num_resamples, n), generator=generator).to(sample.device)
    weights = torch.zeros(num_resamples, n, dtype=sample.dtype, device=sample.device)
    weights.scatter_add_(1, index, torch.ones_like(weights)).div_(n)
    means = (weights @ sample.reshape(n, -1)).reshape(num_resamples, *sample.shape[1:])
    return _percentiles(means, confidence)


def estimate(
    samples: Sequence[Tensor],
    statistic: Callable[..., Tensor],
    num_resamples: int = NUM_RESAMPLES,
    confidence: float = CONFIDENCE,
    seed: int = 0,
) -> Estimate:
    """The statistic on the full samples plus its :func:`bootstrap_ci`.

    Example:
        >>> est = estimate([torch.tensor([0.0, 1.0])], lambda b: b.mean(1))
        >>> est.value.item(), est.lo.item(), est.hi.item()
        (0.5, 0.0, 1.0)
    """
    value = statistic(*(s.unsqueeze(0) for s in samples))[0]
    lo, hi = bootstrap_ci(samples, statistic, num_resamples, confidence, seed)
    return Estimate(value, lo, hi)


def cw_metrics(
    success: Tensor,
    steps: Tensor,
    steps_per_task: int,
    ref_auc: Tensor | None = None,
    final_points: int = FINAL_POINTS,
    num_resamples: int = NUM_RESAMPLES,
    confidence: float = CONFIDENCE,
    seed: int = 0,
) -> dict[str, Estimate]:
    """The Continual World table entries of one method, with bootstrap CIs over seeds.

    Args:
        success: ``[S, E, T]`` stochastic success of S seeds.
        steps: ``[E]``.
        steps_per_task: training steps of every task.
        ref_auc: ``[R, T]`` reference AUC^b per reference seed and position, or None
            (no forward transfer).
        final_points, num_resamples, confidence, seed: see the functions above.

    Returns:
        ``performance``, ``forgetting`` (scalars), ``forgetting_per_task`` ``[T]`` and,
        with ``ref_auc``, ``forward_transfer`` and ``forward_transfer_per_task``.

    Example:
        >>> steps = torch.tensor([10, 20, 30, 40])
        >>> one = torch.tensor([[0.5, 0.0], [1.0, 0.0], [0.5, 0.5], [0.0, 1.0]])
        >>> out = cw_metrics(torch.stack([one, one]), steps, 20, final_points=1)
        >>> out["performance"].value.item(), out["forgetting"].value.item()
        (0.5, 0.5)
    """
    if success.dim() != 3:
        raise ValueError(f"success must be [seeds, eval_points, tasks], got {tuple(success.shape)}")
    per_seed_performance = average_performance(success, final_points)  # [S]
    per_seed_forgetting = forgetting_per_task(success, steps, steps_per_task, final_points)  # [S, T]

    def mean_over_seeds(batch: Tensor) -> Tensor:
        return batch.mean(1)

    def with_ci(value: Tensor, distribution: Tensor) -> Estimate:
        return Estimate(value, *_percentiles(distribution, confidence))

    # Per-task and task-averaged values share one set of resamples (as in CW), and the
    # average of a resample is the average of its per-task values.
    performance = bootstrap_distribution([per_seed_performance], mean_over_seeds, num_resamples, seed)
    forgetting = bootstrap_distribution([per_seed_forgetting], mean_over_seeds, num_resamples, seed)
    out = {
        "performance": with_ci(per_seed_performance.mean(0), performance),
        "forgetting": with_ci(per_seed_forgetting.mean(0).mean(-1), forgetting.mean(-1)),
        "forgetting_per_task": with_ci(per_seed_forgetting.mean(0), forgetting),
    }
    if ref_auc is not None:
        cl_auc = task_auc(success, steps, steps_per_task)  # [S, T]
        ref_auc = ref_auc.to(device=cl_auc.device, dtype=cl_auc.dtype)
        per_task = forward_transfer_per_task(cl_auc, ref_auc)
        transfer = bootstrap_distribution([cl_auc, ref_auc], forward_transfer_per_task, num_resamples, seed)
        out["forward_transfer"] = with_ci(per_task.mean(-1), transfer.mean(-1))
        out["forward_transfer_per_task"] = with_ci(per_task, transfer)
    return out


# --------------------------------------------------------------------------- plasticity


def learning_speed_trend(auc: Tensor) -> Tensor:
    """Least-squares slope of per-task learning speed against the task index; ``[..., T] -> [...]``.

    Example:
        >>> round(learning_speed_trend(torch.tensor([0.9, 0.7, 0.5])).item(), 6)  # loses 0.2 per task
        -0.2
    """
    tasks = auc.shape[-1]
    if tasks < 2:
        raise ValueError(f"a learning-speed trend needs at least 2 tasks, got {tasks}")
    index = torch.arange(tasks, dtype=auc.dtype, device=auc.device)
    centred = index - index.mean()
    return ((auc - auc.mean(-1, keepdim=True)) * centred).sum(-1) / centred.square().sum()


def learning_speed(
    success: Tensor,
    steps: Tensor,
    steps_per_task: int,
    fraction: float = 0.25,
    num_resamples: int = NUM_RESAMPLES,
    confidence: float = CONFIDENCE,
    seed: int = 0,
) -> dict[str, Estimate]:
    """Per-task learning speed over a run and how it changes along the sequence, with
    bootstrap CIs over seeds.

    Args:
        success: ``[S, E, T]`` success of S seeds (only task i's own window of column i
            is read, so a matrix holding just the training curve of the active task
            works too).
        steps: ``[E]``.
        steps_per_task: training steps of every task.
        fraction: share of tasks in the ``early`` and ``late`` groups (at least one task each).
        num_resamples, confidence, seed: see :func:`bootstrap_ci`.

    Returns:
        ``auc`` ``[T]`` (AUC_i, success within task i's window), ``trend`` (slope of AUC_i
        against i), ``early`` and ``late`` (mean AUC_i of the first and last ``fraction``
        of tasks) and ``late_minus_early``.

    Example:
        >>> steps = torch.tensor([10, 20, 30, 40, 50, 60, 70, 80])
        >>> curve = torch.tensor([1.0, 1.0, 0.5, 1.0, 0.0, 1.0, 0.0, 0.0])  # learned ever later
        >>> success = torch.stack([curve[:, None].expand(8, 4)] * 2)
        >>> out = learning_speed(success, steps, 20)
        >>> out["auc"].value.tolist(), round(out["trend"].value.item(), 3)
        ([1.0, 0.75, 0.5, 0.0], -0.325)
        >>> out["early"].value.item(), out["late"].value.item()
        (1.0, 0.0)
    """
    if success.dim() != 3:
        raise ValueError(f"success must be [seeds, eval_points, tasks], got {tuple(success.shape)}")
    if not 0.0 < fraction <= 0.5:
        raise ValueError(f"fraction must lie in (0, 0.5], got {fraction}")
    auc = task_auc(success, steps, steps_per_task)  # [S, T]
    tasks = auc.shape[-1]
    group = max(1, int(round(fraction * tasks)))

    def statistics(batch: Tensor) -> dict[str, Tensor]:  # [B, S, T] -> per statistic [B, ...]
        mean = batch.mean(1)
        early, late = mean[..., :group].mean(-1), mean[..., -group:].mean(-1)
        return {"auc": mean, "trend": learning_speed_trend(mean), "early": early, "late": late,
                "late_minus_early": late - early}

    value = {k: v[0] for k, v in statistics(auc.unsqueeze(0)).items()}
    resampled = bootstrap_distribution([auc], lambda b: torch.cat([t.reshape(num_resamples, -1) for t in statistics(b).values()], -1),
                                       num_resamples, seed)
    out, start = {}, 0
    for key, v in value.items():
        width = max(v.numel(), 1)
        lo, hi = _percentiles(resampled[:, start : start + width], confidence)
        out[key] = Estimate(v, lo.reshape(v.shape), hi.reshape(v.shape))
        start += width
    return out


# --------------------------------------------------------------------------- shipped data


def _data_file(name: str) -> Path:
    return Path(str(resources.files("contenv") / "data" / name))


def load_transfer_matrix(
    path: str | Path | None = None, device: str | torch.device = "cpu"
) -> tuple[list[str], Tensor]:
    """Task names and the ``[N, N]`` float64 transfer matrix (rows = source, cols = target).

    Args:
        path: a CSV whose header is ``source,<task>,...`` and whose rows are
            ``<task>,<FT>,...``; default: the shipped CW10 matrix.
        device: where the tensor goes.

    Example:
        >>> names, m = load_transfer_matrix()
        >>> names[0], m.shape, round(reference_transfer(m).item(), 4)
        ('hammer', torch.Size([10, 10]), 0.4247)
    """
    path = Path(path) if path is not None else _data_file("cw10_transfer_matrix.csv")
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    header, body = rows[0][1:], [r for r in rows[1:] if r]
    sources = [r[0] for r in body]
    if sources != header:
        raise ValueError(f"{path}: row names {sources} differ from column names {header}")
    values = [[float(v) for v in r[1:]] for r in body]
    return header, torch.tensor(values, dtype=torch.float64, device=device)


_PUBLISHED = {
    "cw20": "cw20_published_results.csv",
    "cw10": "cw10_published_results_2022.csv",
}


def load_published_results(name: Literal["cw20", "cw10"]) -> "pd.DataFrame":
    """A published table: ``method`` plus performance / forgetting / forward_transfer
    with ``_lo`` / ``_hi`` CI bounds (see ``contenv/data/SOURCES.md``).

    Example:
        >>> table = load_published_results("cw20")
        >>> table.set_index("method").loc["packnet", "performance"]
        np.float64(0.8)
    """
    import pandas as pd  # only the loaders need pandas

    if name not in _PUBLISHED:
        raise ValueError(f"unknown published table {name!r}; choose from {sorted(_PUBLISHED)}")
    return pd.read_csv(_data_file(_PUBLISHED[name]))
