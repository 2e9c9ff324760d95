"""benchmarks/plan_speed.py's PlanTimer: an iteration is the difference of a k- and a 1-iteration plan, or, for a
one-iteration solver whose plan can encode alone, the plan less its encoding; the fastest of every round is kept.
Timed on a fake clock that each fake plan advances by its own cost, so the figures are exact."""

import plan_speed
import pytest
import torch

CPU = torch.device("cpu")


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def fake_plans(clock, encode_s: float, iter_s: float, with_encode: bool, slow_first: float = 0.0):
    """make_plan(k) -> a plan that costs encode_s + k iter_s on `clock` (its first call `slow_first` more)."""
    calls = []

    def make_plan(k):
        def run():
            clock.now += encode_s + k * iter_s + (slow_first if not calls else 0.0)
            calls.append(k)

        if with_encode:
            run.encode = lambda: setattr(clock, "now", clock.now + encode_s)
        return run

    return make_plan


def test_iteration_from_the_difference_of_two_plans():
    clock = FakeClock()
    timer = plan_speed.PlanTimer(fake_plans(clock, 0.5, 0.1, with_encode=True), 30, budget=6.0, device=CPU,
                                 clock=clock, warm=False)  # fmt: skip
    timer.measure()
    per_iter, k, encode, consistent = timer.result()
    assert k == 10 and per_iter == pytest.approx(0.1) and encode == pytest.approx(0.5) and consistent
    assert all(run[2] is None for run in timer.runs)  # the difference isolates the encoding: not timed apart


def test_one_iteration_solver_less_its_encoding_timed_apart():
    clock = FakeClock()
    timer = plan_speed.PlanTimer(fake_plans(clock, 0.04, 0.08, with_encode=True, slow_first=1.0), 1, budget=1.0,
                                 device=CPU, clock=clock, warm=False)  # fmt: skip
    timer.measure()  # the first round held a slow spell; the fastest of each is kept
    per_iter, k, encode, consistent = timer.result()
    assert k == 1 and per_iter == pytest.approx(0.08) and encode == pytest.approx(0.04) and consistent
    assert [r[1] for r in timer.runs] == [None, None] and timer.runs[1][2] == pytest.approx(0.04)


def test_one_iteration_solver_without_an_encoding_counts_the_whole_plan():
    clock = FakeClock()
    timer = plan_speed.PlanTimer(fake_plans(clock, 0.04, 0.08, with_encode=False), 1, budget=1.0, device=CPU,
                                 clock=clock, warm=False)  # fmt: skip
    per_iter, k, encode, consistent = timer.result()
    assert (k, encode, consistent) == (1, 0.0, True) and per_iter == pytest.approx(0.12)


def test_the_ceiling_runs_after_each_round_for_as_long_as_its_longest_plan():
    clock, asked = FakeClock(), []

    def ceiling(seconds):
        asked.append(seconds)
        clock.now += seconds  # the ceiling's own time is not the plans'
        return {"gflops": 100.0 + len(asked)}

    timer = plan_speed.PlanTimer(fake_plans(clock, 0.5, 0.1, with_encode=True), 30, budget=6.0, device=CPU,
                                 clock=clock, warm=False, ceiling=ceiling)  # fmt: skip
    timer.measure()
    assert asked == pytest.approx([0.5 + 10 * 0.1] * 2)  # the k-iteration plan of each round
    assert [c["gflops"] for c in timer.ceilings] == [101.0, 102.0]
    assert timer.result()[0] == pytest.approx(0.1)  # the ceiling's time does not enter the plan's
    one = plan_speed.PlanTimer(fake_plans(clock, 0.04, 0.08, with_encode=True), 1, budget=1.0, device=CPU,
                               clock=clock, warm=False, ceiling=ceiling)  # fmt: skip
    assert asked[-1] == pytest.approx(0.12)  # a one-iteration solver: its whole plan
    assert len(one.ceilings) == 1
