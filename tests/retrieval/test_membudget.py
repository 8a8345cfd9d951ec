"""Tests of retrieval.membudget.MemoryBudget with real threads: holds that fit run together, one that does
not waits for room, and one larger than the whole budget runs alone."""

from __future__ import annotations

import threading

import pytest

from retrieval.membudget import MemoryBudget

WAIT = 0.3
"""Long enough for a thread that could enter to have entered."""


def _holder(budget: MemoryBudget, amount: int) -> tuple[threading.Thread, threading.Event, threading.Event]:
    """A thread that holds `amount` from `entered` until `leave` is set."""
    entered, leave = threading.Event(), threading.Event()

    def hold() -> None:
        with budget.hold(amount):
            entered.set()
            leave.wait(20)

    thread = threading.Thread(target=hold, daemon=True)
    thread.start()
    return thread, entered, leave


def test_holds_that_fit_together_run_together_and_a_third_waits() -> None:
    budget = MemoryBudget(100)
    first, first_in, first_out = _holder(budget, 60)
    second, second_in, second_out = _holder(budget, 40)
    assert first_in.wait(5) and second_in.wait(5)
    assert budget.held == 100
    third, third_in, third_out = _holder(budget, 1)
    assert not third_in.wait(WAIT)
    second_out.set()
    assert third_in.wait(5)
    assert budget.held == 61
    first_out.set()
    third_out.set()
    for thread in (first, second, third):
        thread.join(5)
    assert budget.held == 0


def test_larger_than_the_budget_waits_for_all_and_runs_alone() -> None:
    budget = MemoryBudget(100)
    small, small_in, small_out = _holder(budget, 10)
    assert small_in.wait(5)
    big, big_in, big_out = _holder(budget, 1000)
    assert not big_in.wait(WAIT)
    small_out.set()
    assert big_in.wait(5)
    assert budget.held == 100
    other, other_in, other_out = _holder(budget, 1)
    assert not other_in.wait(WAIT)
    big_out.set()
    assert other_in.wait(5)
    other_out.set()
    for thread in (small, big, other):
        thread.join(5)
    assert budget.held == 0


def test_a_failing_holder_gives_its_share_back() -> None:
    budget = MemoryBudget(10)
    with pytest.raises(RuntimeError), budget.hold(10):
        raise RuntimeError("decode failed")
    assert budget.held == 0


def test_capacity_must_be_positive() -> None:
    with pytest.raises(ValueError, match="capacity must be positive"):
        MemoryBudget(0)
