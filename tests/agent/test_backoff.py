"""Reconnect delays: about a second after losing a hub that was up, exponential otherwise, always jittered."""

from __future__ import annotations

import random

from potluck.agent.backoff import FAST_MAX_S, FAST_WINDOW_S, STABLE_AFTER_S, Backoff

BASE, CAP = 0.5, 30.0


def failures(backoff: Backoff, start: float, count: int) -> list[tuple[float, float]]:
    """``count`` failed tries in a row from ``start``, each after the delay before it: (when, delay) pairs."""
    now, out = start, []
    for _ in range(count):
        delay = backoff.next_delay(now)
        out.append((now, delay))
        now += delay
    return out


def delays(backoff: Backoff, start: float, count: int) -> list[float]:
    return [delay for _, delay in failures(backoff, start, count)]


def test_after_losing_an_accepted_connection_every_retry_comes_within_a_second() -> None:
    backoff = Backoff(BASE, CAP, random.Random(1))
    backoff.connected(0.0)

    # A hub restart: the connection drops after 3 s, then connecting keeps failing past the window.
    tries = failures(backoff, 3.0, 150)
    fast = [delay for when, delay in tries if when < 3.0 + FAST_WINDOW_S]

    assert tries[-1][0] > 3.0 + FAST_WINDOW_S
    assert len(fast) > 40
    assert all(BASE / 2 <= d <= FAST_MAX_S for d in fast)
    assert len(set(fast)) == len(fast), "delays are jittered, so a fleet does not reconnect in lockstep"


def test_after_the_fast_window_the_delay_grows_again_up_to_the_cap() -> None:
    backoff = Backoff(BASE, CAP, random.Random(2))
    backoff.connected(0.0)
    backoff.next_delay(100.0)  # lost a stable connection at t=100

    later = delays(backoff, 100.0 + FAST_WINDOW_S, 12)

    ceilings = [min(CAP, BASE * 2**i) for i in range(12)]
    assert all(BASE / 2 <= d <= max(BASE, c) for d, c in zip(later, ceilings, strict=True))
    assert max(later[-4:]) > 8 * FAST_MAX_S, later


def test_a_hub_that_was_never_reached_gets_exponential_backoff() -> None:
    backoff = Backoff(BASE, CAP, random.Random(3))

    out = delays(backoff, 0.0, 10)

    assert out[0] <= BASE
    assert all(d <= min(CAP, BASE * 2**i) for i, d in enumerate(out))
    assert max(out[5:]) > 2 * FAST_MAX_S, out


def test_connections_that_keep_dropping_soon_after_they_are_made_back_off() -> None:
    # A hub in a crash loop, or two agents sharing one key and replacing each other.
    backoff = Backoff(BASE, CAP, random.Random(4))
    now, out = 0.0, []
    for _ in range(12):
        backoff.connected(now)
        now += 1.0  # each connection lasts a second
        delay = backoff.next_delay(now)
        out.append(delay)
        now += delay

    assert out[0] <= FAST_MAX_S  # the first drop may be a restart: retry soon
    assert max(out[6:]) > 4 * FAST_MAX_S, out


def test_a_stable_connection_after_flapping_brings_the_fast_retries_back() -> None:
    backoff = Backoff(BASE, CAP, random.Random(5))
    now = 0.0
    for _ in range(8):
        backoff.connected(now)
        now += 1.0
        now += backoff.next_delay(now)
    backoff.connected(now)
    now += STABLE_AFTER_S + 1

    out = delays(backoff, now, 20)

    assert all(d <= FAST_MAX_S for d in out), out
