"""What the scheduler learns from finished requests: only hot requests teach latencies and service times."""

from __future__ import annotations

from potluck.hub.learning import Learning
from potluck.hub.scoring import DEFAULT_SERVICE_S, AgentSlots, EjectionSettings, Load

GB = 1_000_000_000


def report(learning: Learning, *, hot: bool, ok: bool = True, **timings: float | int | None) -> None:
    values: dict[str, float | int | None] = {"ttft": None, "decode_rate": None, "duration": None, "prompt_tokens": None}
    values.update(timings)
    learning.report("a", "m", 100.0, ok=ok, hot=hot, listing=["a", "b"], **values)  # type: ignore[arg-type]


def test_cold_requests_teach_neither_ttft_nor_service_time() -> None:
    learning = Learning(EjectionSettings())
    report(learning, hot=False, ttft=30.0, duration=40.0, decode_rate=50.0, prompt_tokens=500)
    stats = learning.stats[("a", "m")]
    assert (stats.ttft, stats.prefill, stats.service) == (None, None, None)
    assert stats.decode == 50.0  # decoding runs after the load: it still says how fast the agent is
    assert learning.service_s("m", "a") == DEFAULT_SERVICE_S


def test_hot_requests_teach_the_service_time_of_the_agent_and_of_the_model() -> None:
    learning = Learning(EjectionSettings())
    report(learning, hot=True, duration=4.0)
    report(learning, hot=True, duration=8.0)
    assert learning.service_s("m", "a") == 4.0 + 0.3 * 4.0
    assert learning.service_s("m", "b") == 4.0 + 0.3 * 4.0  # b never served it: the model's figure
    assert learning.service_s("other") == DEFAULT_SERVICE_S


def test_a_finished_load_teaches_the_agents_weight_loading_speed() -> None:
    learning = Learning(EjectionSettings())
    agent = AgentSlots("a", frozenset({"m", "n"}), 1, sizes={"m": 8 * GB})
    learning.loaded(agent, "m", Load(started=100.0, expected_s=8.0), now=104.0)
    assert agent.load_rate == 2 * GB
    learning.loaded(agent, "n", Load(started=100.0, expected_s=8.0), now=104.0)  # size unknown: nothing learnt
    assert agent.load_rate == 2 * GB


def test_a_prompt_of_zero_tokens_says_nothing_about_prefill_speed() -> None:
    learning = Learning(EjectionSettings())
    report(learning, hot=True, ttft=0.5, prompt_tokens=0)
    stats = learning.stats[("a", "m")]
    assert (stats.ttft, stats.prefill) == (0.5, None)
