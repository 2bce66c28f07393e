"""Continual World metrics against cases computed by hand, and the shipped reference data."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from contenv.evaluation import metrics
from contenv.evaluation.metrics import (
    average_forgetting,
    average_performance,
    bootstrap_ci,
    bootstrap_distribution,
    bootstrap_mean_ci,
    cw_metrics,
    end_of_task_success,
    eval_task_index,
    final_success,
    forgetting_per_task,
    forward_transfer,
    forward_transfer_per_task,
    load_published_results,
    load_transfer_matrix,
    reference_auc,
    reference_transfer,
    sequence_transfer_matrix,
    task_auc,
    tile_transfer_matrix,
    transfer_targets,
)

F64 = torch.float64
# Two tasks of 100 steps, an eval every 20 steps including step 0: 11 eval points.
STEPS = torch.arange(0, 201, 20)
SPT = 100


def curves(*columns: list[float]) -> torch.Tensor:
    return torch.tensor(columns, dtype=F64).T.contiguous()


# Task 0 learned in its window then forgotten; task 1 learned at the end.
LEARNED_THEN_FORGOTTEN = [0.0, 0.2, 0.4, 0.6, 0.8, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0]
LEARNED_LAST = [0.0] * 6 + [0.2, 0.4, 0.6, 0.8, 1.0]
NEVER_LEARNED = [0.0] * 11


# --------------------------------------------------------------------------- windows


def test_eval_points_belong_to_the_task_trained_just_before_them():
    # CW tags an eval at step s with the task of step s-1: 100 closes task 0, 120 is task 1.
    assert eval_task_index(STEPS, SPT).tolist() == [-1, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1]


def test_window_without_eval_point_is_an_error():
    with pytest.raises(ValueError, match=r"task\(s\) \[1\]"):
        task_auc(torch.zeros(2, 2), torch.tensor([50, 100]), SPT)


def test_steps_must_match_eval_points():
    with pytest.raises(ValueError, match="steps must be"):
        task_auc(torch.zeros(3, 2), torch.tensor([50, 100]), SPT)


# --------------------------------------------------------------------------- performance and forgetting


def test_learned_then_forgotten_by_hand():
    success = curves(LEARNED_THEN_FORGOTTEN, LEARNED_LAST)
    # final = mean of the last 5 points (steps 120..200): task 0 -> 0, task 1 -> 0.6.
    assert final_success(success).tolist() == pytest.approx([0.0, 0.6])
    assert average_performance(success).item() == pytest.approx(0.3)
    # end of task = mean of the last 5 points of its window: task 0 steps 20..100 -> 0.6.
    assert end_of_task_success(success, STEPS, SPT).tolist() == pytest.approx([0.6, 0.6])
    assert forgetting_per_task(success, STEPS, SPT).tolist() == pytest.approx([0.6, 0.0])
    assert average_forgetting(success, STEPS, SPT).item() == pytest.approx(0.3)
    # final_points=1: the single last point of the window (1.0) and of the run (0.0).
    assert forgetting_per_task(success, STEPS, SPT, final_points=1).tolist() == pytest.approx([1.0, 0.0])


def test_task_never_learned_neither_performs_nor_forgets():
    success = curves(NEVER_LEARNED, LEARNED_LAST)
    assert average_performance(success).item() == pytest.approx(0.3)
    assert forgetting_per_task(success, STEPS, SPT).tolist() == pytest.approx([0.0, 0.0])
    assert task_auc(success, STEPS, SPT).tolist() == pytest.approx([0.0, 0.6])


def test_last_task_forgetting_is_exactly_zero_and_counted_in_the_average():
    success = torch.rand(4, 11, 2, dtype=F64, generator=torch.Generator().manual_seed(1))
    per_task = forgetting_per_task(success, STEPS, SPT)
    assert torch.equal(per_task[:, -1], torch.zeros(4, dtype=F64))
    # averaged over all tasks, the last one included (CW averages every column)
    assert torch.allclose(average_forgetting(success, STEPS, SPT), per_task.sum(-1) / 2)


def test_window_shorter_than_final_points_uses_what_it_has():
    steps = torch.tensor([50, 100, 200])  # task 0 has 2 eval points, task 1 one
    success = curves([0.2, 0.4, 0.0], [0.0, 0.0, 1.0])
    assert end_of_task_success(success, steps, SPT).tolist() == pytest.approx([0.3, 1.0])


def test_cw20_repeated_task_positions_are_separate_columns():
    # [a, b, a, b], 10 steps per task, eval every 5: positions 0 and 2 are the same task
    # with their own head. Position 0 decays, then recovers while position 2 trains.
    steps = torch.arange(0, 41, 5)
    pos0 = [0, 0.5, 1.0, 0.5, 0.5, 1.0, 1.0, 1.0, 1.0]
    pos1 = [0, 0, 0, 0.5, 1.0, 0.0, 0.0, 0.0, 0.0]
    pos2 = [0, 0, 0, 0, 0, 1.0, 1.0, 1.0, 1.0]
    pos3 = [0, 0, 0, 0, 0, 0, 0, 0.5, 1.0]
    success = curves(pos0, pos1, pos2, pos3)
    end = end_of_task_success(success, steps, 10, final_points=2)
    final = final_success(success, final_points=2)
    assert end.tolist() == pytest.approx([0.75, 0.75, 1.0, 0.75])
    assert final.tolist() == pytest.approx([1.0, 0.0, 1.0, 0.75])
    # recovery of position 0 shows as negative forgetting (backward transfer)
    assert forgetting_per_task(success, steps, 10, final_points=2).tolist() == pytest.approx([-0.25, 0.75, 0.0, 0.0])
    assert task_auc(success, steps, 10).tolist() == pytest.approx([0.75, 0.75, 1.0, 0.75])


# --------------------------------------------------------------------------- forward transfer


def test_forward_transfer_by_hand_positive_and_negative():
    cl = torch.tensor([[0.6, 0.4]], dtype=F64)
    ref = torch.tensor([[0.5, 0.8]], dtype=F64)
    # (0.6-0.5)/0.5 = 0.2 ; (0.4-0.8)/0.2 = -2.0 (negative transfer)
    assert forward_transfer_per_task(cl, ref).tolist() == pytest.approx([0.2, -2.0])
    assert forward_transfer(cl, ref).item() == pytest.approx(-0.9)


def test_forward_transfer_normalises_after_averaging_seeds():
    cl = torch.tensor([[0.2], [0.6]], dtype=F64)
    ref = torch.tensor([[0.0], [0.8]], dtype=F64)
    # means 0.4 and 0.4 -> 0; normalising per seed pair would give (0.2 + -1.0) / 2 = -0.4
    assert forward_transfer(cl, ref).item() == pytest.approx(0.0)


def test_forward_transfer_with_saturated_reference_is_finite():
    ref = torch.ones(3, 2, dtype=F64)
    cl = torch.tensor([[1.0, 0.5]] * 2, dtype=F64)
    out = forward_transfer_per_task(cl, ref)
    assert torch.isfinite(out).all()
    assert out.tolist() == pytest.approx([0.0, -0.5])


def test_reference_auc_uses_only_the_first_window():
    steps = torch.tensor([0, 50, 100, 150])
    assert reference_auc(torch.tensor([0.0, 0.4, 0.6, 1.0], dtype=F64), steps, SPT).item() == pytest.approx(0.5)


def test_auc_excludes_the_step_zero_eval():
    success = curves(LEARNED_THEN_FORGOTTEN, LEARNED_LAST)
    # 5 points of each window; with step 0 task 0 would be 3.0 / 6 = 0.5
    assert task_auc(success, STEPS, SPT).tolist() == pytest.approx([0.6, 0.6])


# --------------------------------------------------------------------------- transfer matrix


def test_shipped_matrix_orientation_and_names():
    names, matrix = load_transfer_matrix()
    assert names[:3] == ["hammer", "push-wall", "faucet-close"] and len(names) == 10
    assert matrix.dtype == F64 and matrix.shape == (10, 10)
    # row = source trained first: hammer -> push-wall is 0.1302, push-wall -> hammer 0.1280
    assert matrix[0, 1].item() == 0.1302 and matrix[1, 0].item() == 0.1280


def test_reference_transfer_of_shipped_matrix_cw10_and_cw20():
    _, matrix = load_transfer_matrix()
    rt10 = reference_transfer(matrix).item()
    rt20 = reference_transfer(tile_transfer_matrix(matrix, 2)).item()
    # exact sums; the README quotes them at 4 decimals (both are ties: 0.4247 and 0.4636)
    assert rt10 == pytest.approx(0.42475, abs=1e-9)
    assert rt20 == pytest.approx(0.46355, abs=1e-9)
    assert abs(rt10 - 0.4247) <= 5e-5 + 1e-12 and abs(rt20 - 0.4636) <= 5e-5 + 1e-12
    # the transposed matrix gives 0.535: the orientation matters
    assert reference_transfer(tile_transfer_matrix(matrix.T, 2)).item() == pytest.approx(0.53505, abs=1e-9)


def test_reference_transfer_by_hand():
    m = torch.tensor([[9.0, 0.3, 0.1], [9.0, 9.0, 0.5], [9.0, 9.0, 9.0]])
    # (0 + max(0.3) + max(0.1, 0.5)) / 3 ; diagonal and later sources ignored
    assert reference_transfer(m).item() == pytest.approx(0.8 / 3)


def test_sequence_matrix_of_cw20_equals_the_tiled_matrix():
    names, matrix = load_transfer_matrix()
    cw20 = [f"{n}-v3" for n in names] * 2
    assert torch.equal(sequence_transfer_matrix(matrix, names, cw20), tile_transfer_matrix(matrix))
    with pytest.raises(KeyError, match="not-a-task"):
        sequence_transfer_matrix(matrix, names, ["not-a-task"])


def test_transfer_target_of_distractor_triplet():
    # push -> window-close -> hammer: push is the useful source for hammer
    names, matrix = load_transfer_matrix()
    seq = sequence_transfer_matrix(matrix, names, ["push", "window-close", "hammer"])
    targets, sources = transfer_targets(seq)
    assert math.isnan(targets[0].item()) and sources[0].item() == -1
    assert targets[1].item() == pytest.approx(0.4175)  # FT(push, window-close)
    assert targets[2].item() == pytest.approx(0.2034) and sources[2].item() == 0  # not window-close's -0.0993


def test_load_published_results():
    cw20 = load_published_results("cw20").set_index("method")
    assert cw20.loc["packnet", ["performance", "performance_lo", "performance_hi"]].tolist() == [0.80, 0.79, 0.82]
    assert load_published_results("cw10").set_index("method").loc["behavioral-cloning", "performance"] == 0.84
    with pytest.raises(ValueError, match="cw30"):
        load_published_results("cw30")  # type: ignore[arg-type]


# --------------------------------------------------------------------------- bootstrap


def mean_over_seeds(batch: torch.Tensor) -> torch.Tensor:
    return batch.mean(1)


def test_constant_sample_ci_is_the_constant():
    sample = torch.full((7,), 0.8, dtype=F64)
    est = metrics.estimate([sample], mean_over_seeds)
    assert est.lo.item() == est.value.item() == est.hi.item()
    assert est.value.item() == pytest.approx(0.8)


def test_bootstrap_same_seed_same_ci_other_seed_other_ci():
    sample = torch.rand(10, generator=torch.Generator().manual_seed(3), dtype=F64)
    a = bootstrap_ci([sample], mean_over_seeds, seed=5)
    b = bootstrap_ci([sample], mean_over_seeds, seed=5)
    c = bootstrap_ci([sample], mean_over_seeds, seed=6)
    assert torch.equal(torch.stack(a), torch.stack(b))
    assert not torch.equal(torch.stack(a), torch.stack(c))


def test_bootstrap_two_seeds_by_hand():
    # resampled means of {0, 1}: 0 (p=.25), .5 (p=.5), 1 (p=.25): the 5/95 % quantiles are 0 and 1
    lo, hi = bootstrap_ci([torch.tensor([0.0, 1.0], dtype=F64)], mean_over_seeds)
    assert (lo.item(), hi.item()) == (0.0, 1.0)


def test_bootstrap_matches_numpy_midpoint_quantiles_of_the_same_resamples():
    sample = torch.rand(6, generator=torch.Generator().manual_seed(4), dtype=F64)
    index = torch.randint(6, (4000, 6), generator=torch.Generator().manual_seed(0))
    means = sample[index].mean(1).numpy()
    expected = np.quantile(means, [0.05, 0.95], method="midpoint")
    lo, hi = bootstrap_ci([sample], mean_over_seeds, num_resamples=4000, confidence=0.9, seed=0)
    assert [lo.item(), hi.item()] == pytest.approx(expected.tolist(), abs=1e-12)


def test_bootstrap_mean_ci_equals_generic_bootstrap():
    sample = torch.rand(5, 7, 3, generator=torch.Generator().manual_seed(2), dtype=F64)
    fast = bootstrap_mean_ci(sample, seed=9)
    slow = bootstrap_ci([sample], mean_over_seeds, seed=9)
    assert torch.allclose(fast[0], slow[0]) and torch.allclose(fast[1], slow[1])


def test_forward_transfer_ci_resamples_cl_and_reference_independently():
    gen = torch.Generator().manual_seed(7)
    cl = torch.rand(3, 2, generator=gen, dtype=F64) * 0.5 + 0.5
    ref = torch.rand(5, 2, generator=gen, dtype=F64) * 0.5  # other seed count: cannot be paired
    dist = bootstrap_distribution([cl, ref], forward_transfer, num_resamples=100, seed=0)
    # the same draws by hand: CL indices first, then the reference's, from one generator
    g = torch.Generator().manual_seed(0)
    i = torch.randint(3, (100, 3), generator=g)
    j = torch.randint(5, (100, 5), generator=g)
    assert torch.allclose(dist, forward_transfer(cl[i], ref[j]))
    # only the reference varies: the CI still has width
    lo, hi = bootstrap_ci([cl[:1].repeat(3, 1), ref], forward_transfer)
    assert hi.item() > lo.item()


def test_cw_metrics_keys_and_values():
    one = curves(LEARNED_THEN_FORGOTTEN, LEARNED_LAST)
    success = torch.stack([one, one, one])
    out = cw_metrics(success, STEPS, SPT)
    assert set(out) == {"performance", "forgetting", "forgetting_per_task"}
    assert out["performance"].value.item() == pytest.approx(0.3)
    assert out["forgetting"].value.item() == pytest.approx(0.3)
    ref = torch.tensor([[0.5, 0.2]], dtype=F64)
    out = cw_metrics(success, STEPS, SPT, ref_auc=ref)
    # (0.6 - 0.5) / 0.5 = 0.2 ; (0.6 - 0.2) / 0.8 = 0.5
    assert out["forward_transfer_per_task"].value.tolist() == pytest.approx([0.2, 0.5])
    assert out["forward_transfer"].value.item() == pytest.approx(0.35)
    assert out["forward_transfer"].lo.item() == pytest.approx(0.35)  # constant seeds


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cpu_and_cuda_give_the_same_table():
    gen = torch.Generator().manual_seed(0)
    success = (torch.rand(6, 11, 2, generator=gen, dtype=F64) * 10).round() / 10
    ref = torch.rand(4, 2, generator=gen, dtype=F64) * 0.9
    cpu = cw_metrics(success, STEPS, SPT, ref)
    cuda = cw_metrics(success.cuda(), STEPS.cuda(), SPT, ref.cuda())
    assert set(cpu) == set(cuda)
    for name in cpu:
        for a, b in zip(cpu[name], cuda[name]):
            assert b.device.type == "cuda"
            assert torch.allclose(a, b.cpu(), rtol=0, atol=1e-12), name
