"""The verdict logic (contenv/studies/verdict.py) against hand-made outcomes, every claim type giving each of
the three verdicts, and Kendall's tau-b (contenv/studies/ranking.py) against hand computations."""

from __future__ import annotations

import math

import pytest
import torch

from contenv.studies.ranking import kendall_tau_b, rank_agreement
from contenv.studies.verdict import (
    FAILS,
    HOLDS,
    INCONCLUSIVE,
    Verdict,
    above_zero,
    below_zero,
    best,
    combine,
    greater,
    reaches,
)

NAN = (float("nan"),) * 3


@pytest.mark.parametrize("estimate,outcome,words", [
    ((0.3, 0.1, 0.5), HOLDS, "above 0"),
    ((-0.3, -0.5, -0.1), FAILS, "below 0"),
    ((0.1, -0.2, 0.4), INCONCLUSIVE, "straddles 0"),
    (NAN, INCONCLUSIVE, "could not be measured"),
])
def test_above_zero(estimate, outcome, words):
    verdict = above_zero("the drop is positive", "drop", estimate)
    assert verdict.outcome == outcome and words in verdict.reason
    if outcome != INCONCLUSIVE or words != "could not be measured":
        assert "drop = " in verdict.reason  # the numbers are in the reason


@pytest.mark.parametrize("estimate,outcome", [((-0.3, -0.5, -0.1), HOLDS), ((0.3, 0.1, 0.5), FAILS),
                                              ((0.0, -0.1, 0.1), INCONCLUSIVE)])
def test_below_zero(estimate, outcome):
    verdict = below_zero("learning speed falls", "late - early", estimate)
    assert verdict.outcome == outcome
    assert f"late - early = {estimate[0]:.2f} [{estimate[1]:.2f}, {estimate[2]:.2f}]" in verdict.reason  # as measured


@pytest.mark.parametrize("a,b,outcome,words", [
    ((0.8, 0.7, 0.9), (0.3, 0.2, 0.4), HOLDS, "separate"),
    ((0.3, 0.2, 0.4), (0.8, 0.7, 0.9), FAILS, "the other way"),
    ((0.6, 0.4, 0.8), (0.5, 0.3, 0.7), INCONCLUSIVE, "overlap"),
])
def test_greater(a, b, outcome, words):
    verdict = greater("cbp keeps plasticity better", "cbp", a, "finetune", b)
    assert verdict.outcome == outcome and words in verdict.reason
    assert set(verdict.numbers) == {"cbp", "finetune"}


@pytest.mark.parametrize("estimates,outcome,words", [
    ({"hnet": (0.9, 0.85, 0.95), "ewc": (0.6, 0.5, 0.7), "si": (0.7, 0.6, 0.8)}, HOLDS, "next: si"),
    ({"hnet": (0.4, 0.3, 0.5), "ewc": (0.6, 0.55, 0.7), "si": (0.45, 0.3, 0.6)}, FAILS, "ewc above hnet"),
    ({"hnet": (0.9, 0.8, 1.0), "ewc": (0.85, 0.75, 0.95)}, INCONCLUSIVE, "overlaps ewc"),
    ({"ewc": (0.85, 0.75, 0.95)}, INCONCLUSIVE, "not measured"),
])
def test_best(estimates, outcome, words):
    verdict = best("hnet protects best", "hnet", estimates)
    assert verdict.outcome == outcome and words in verdict.reason


@pytest.mark.parametrize("reached,target,floor,outcome,words", [
    ((0.6, 0.5, 0.7), (0.65, 0.55, 0.75), (0.1, 0.0, 0.2), HOLDS, "clear of the floor"),
    ((0.1, 0.0, 0.2), (0.65, 0.55, 0.75), (0.1, 0.0, 0.2), FAILS, "below the target"),
    ((0.4, 0.1, 0.7), (0.65, 0.55, 0.75), (0.1, 0.0, 0.2), INCONCLUSIVE, "both the target and the floor"),
    ((0.6, 0.5, 0.7), (0.65, 0.55, 0.75), (0.6, 0.5, 0.7), INCONCLUSIVE, "cannot tell"),
])
def test_reaches(reached, target, floor, outcome, words):
    verdict = reaches("C keeps A's transfer", "FT on C", reached, "FT(A->C)", target, "FT(B->C)", floor)
    assert verdict.outcome == outcome and words in verdict.reason


def test_combine_fails_on_any_failure_holds_only_when_all_hold():
    held, failed, open_ = (Verdict(name, outcome, "") for name, outcome in
                           (("a", HOLDS), ("b", FAILS), ("c", INCONCLUSIVE)))
    assert combine("all", [held, held]).outcome == HOLDS
    assert combine("all", [held, failed, open_]).outcome == FAILS and "b" in combine("all", [held, failed]).reason
    assert combine("all", [held, open_]).outcome == INCONCLUSIVE and "1 of 2" in combine("all", [held, open_]).reason
    assert combine("all", []).outcome == INCONCLUSIVE
    with pytest.raises(ValueError, match="outcomes: holds, fails, inconclusive"):
        Verdict("x", "maybe", "")


def test_a_verdict_reads_as_plain_words_and_serialises():
    verdict = above_zero("tau > 0", "tau", torch.tensor([0.5, 0.2, 0.7]))
    assert str(verdict) == "holds: tau > 0 (tau = 0.50 [0.20, 0.70], above 0)"
    assert verdict.as_dict()["numbers"]["tau"] == pytest.approx({"value": 0.5, "lo": 0.2, "hi": 0.7})


# ---------------------------------------------------------------------- Kendall's tau-b
def tau_by_hand(x, y):
    """Concordant minus discordant pairs over sqrt((n0 - n1)(n0 - n2)), pair by pair."""
    n = len(x)
    concordant = discordant = tied_x = tied_y = 0
    for i in range(n):
        for j in range(i + 1, n):
            dx, dy = x[i] - x[j], y[i] - y[j]
            tied_x += dx == 0
            tied_y += dy == 0
            if dx * dy > 0:
                concordant += 1
            elif dx * dy < 0:
                discordant += 1
    n0 = n * (n - 1) / 2
    return (concordant - discordant) / math.sqrt((n0 - tied_x) * (n0 - tied_y))


def test_kendall_tau_b_by_hand_with_ties():
    # 5 methods; ties in both (forgetting 0.02 twice in the published CW10 table, as here)
    ours = [0.70, 0.10, 0.10, 0.05, 0.65]
    published = [0.75, 0.02, 0.06, 0.02, 0.68]
    # of the 10 pairs, (1,2) is tied in ours only, (1,3) in published only, the other 8 are concordant:
    # tau_b = (8 - 0) / sqrt((10 - 1) * (10 - 1))
    assert tau_by_hand(ours, published) == pytest.approx(8 / 9)
    assert kendall_tau_b(torch.tensor(ours), torch.tensor(published)).item() == pytest.approx(8 / 9)
    assert kendall_tau_b(torch.tensor(ours), -torch.tensor(published)).item() == pytest.approx(-8 / 9)
    generator = torch.Generator().manual_seed(0)
    for _ in range(20):  # random cases with ties, against the pair-by-pair count
        x = torch.randint(4, (7,), generator=generator).double()
        y = torch.randint(4, (7,), generator=generator).double()
        expected = tau_by_hand(x.tolist(), y.tolist())
        assert kendall_tau_b(x, y).item() == pytest.approx(expected)
    assert math.isnan(kendall_tau_b(torch.ones(4), torch.arange(4.0)).item())  # all tied: undefined
    with pytest.raises(ValueError, match="at least 2"):
        kendall_tau_b(torch.ones(1), torch.ones(1))


def test_rank_agreement_bootstraps_seeds_of_each_method():
    published = {"a": 0.1, "b": 0.5, "c": 0.9, "d": 0.3}
    clear = {"a": torch.tensor([0.0, 0.02]), "b": torch.tensor([0.5, 0.52]), "c": torch.tensor([0.9, 0.88]),
             "d": torch.tensor([0.3, 0.28])}
    est = rank_agreement(clear, published)
    assert (est.value.item(), est.lo.item(), est.hi.item()) == (1.0, 1.0, 1.0)
    noisy = {"a": torch.tensor([0.0, 0.6]), "b": torch.tensor([0.1, 0.7]), "c": torch.tensor([0.9, 0.2]),
             "d": torch.tensor([0.3, 0.5])}
    est = rank_agreement(noisy, published)
    assert est.lo.item() < 0 < est.hi.item()  # seeds that disagree: a CI straddling 0
    assert above_zero("agree", "tau", est).outcome == INCONCLUSIVE
    with pytest.raises(ValueError, match="at least 2 methods"):
        rank_agreement({"a": torch.zeros(2)}, published)
