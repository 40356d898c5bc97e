"""Endpoints: the order in which one request tries the addresses of a dependency. Pure
logic, with an injected clock; the clients that use it are proved against real processes
in tests/integration/ha/test_replicas.py, tests/integration/vault/test_vault_client.py and
the run-ha drills (tests/integration/ha/test_ha_drills.py)."""

from __future__ import annotations

from collections import Counter

import pytest

from service.web.failover import Endpoints

A, B, C = "http://a:1", "http://b:1", "http://c:1"


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_one_address_is_always_the_order() -> None:
    only = Endpoints([A], name="vault", spread=False)
    only.failed(A)
    assert only.order() == [A] and only.current == A


def test_spread_takes_turns_and_shares_the_load() -> None:
    backends = Endpoints([A, B], name="backend", spread=True)
    firsts = Counter(backends.order()[0] for _ in range(10))
    assert firsts == {A: 5, B: 5}
    assert sorted(backends.order()) == [A, B]  # every address once


def test_sticky_stays_on_the_address_that_last_worked() -> None:
    nodes = Endpoints([A, B, C], name="vault", spread=False)
    assert [nodes.order()[0] for _ in range(3)] == [A, A, A]
    nodes.worked(C)
    assert nodes.order() == [C, A, B] and nodes.current == C


def test_a_failed_address_goes_last_for_the_cooldown_then_comes_back() -> None:
    clock = Clock()
    nodes = Endpoints([A, B, C], name="vault", spread=False, cooldown=2.0, clock=clock)
    nodes.failed(A)
    assert nodes.order() == [B, C, A]
    clock.now += 1.0
    nodes.failed(B)
    assert nodes.order() == [C, A, B]  # the longest-failed first among those cooling
    clock.now += 1.5  # A's cooldown is over, B's is not
    assert nodes.order() == [A, C, B]
    nodes.worked(B)  # B answered (a request that had nothing else): no longer cooling
    assert nodes.order() == [B, C, A]


def test_spread_skips_a_failed_replica_until_it_answers_again() -> None:
    clock = Clock()
    backends = Endpoints([A, B], name="backend", spread=True, cooldown=2.0, clock=clock)
    backends.failed(A)
    assert [backends.order() for _ in range(4)] == [[B, A]] * 4
    clock.now += 2.5
    assert {backends.order()[0] for _ in range(4)} == {A, B}


def test_an_unknown_address_is_a_bug() -> None:
    nodes = Endpoints([A], name="vault", spread=False)
    with pytest.raises(ValueError):
        nodes.failed(B)
    with pytest.raises(ValueError):
        Endpoints([], name="vault", spread=False)
