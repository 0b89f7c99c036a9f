"""Spot checks: the hub asks every agent serving a model in a group the same question and compares.

A check is a short chat completion, greedy (``temperature`` 0), seeded and capped at ``max_tokens``,
sent to each agent that may serve the model in the group, all at once. It goes through the same
dispatch path as a client's request (`RequestOwner.probe`): the same request frame, the same
forwarded headers, a request id from the same generator, a body shaped as an OpenAI SDK's; nothing on
the wire marks it. It is recorded nowhere: no usage, no charge, no earnings.

**Comparison.** Honest agents on the same weights decode greedily to the same text, or nearly (GPU
kernels and batch sizes can flip a late token). So only the first ``compare_words`` words of each
answer count, and two answers agree when their similarity (difflib's ratio) is at least
``similarity``. Where the group pinned a reference answer for the model (with its prompt), each agent
is compared with it. Otherwise the majority decides: an agent agrees when its answer is like those of
more than half the agents that answered; when no answer has such a majority (two agents that differ),
nobody is blamed. An agent that fails to answer is not judged (failures have their own ejection).

**Flagging.** An agent is flagged for the model in the group, and taken out of routing there, once
``strikes`` of its last ``window`` judged checks disagreed; one odd answer never flags anyone. Its
owner sees why in their agent listing and in the hub's log; a group owner or admin lifts the flag.

Only agents with the model hot are checked: a check never makes an agent load a model (10-60 s, and
an eviction). An agent that reports the model cold is checked once it reports it hot; until then the
scheduler sends it a request only when every agent with the model hot is busy.

**Cost.** On its own clock (`run`), the hub checks a (group, model) at most once every
``interval_s``, and only while the checks sent stay within ``percent`` of the requests the group's
keys made for that model. `check` runs one at once (the admin API's ``POST .../spot-checks``).
"""

from __future__ import annotations

import asyncio
import difflib
import logging
import secrets
from collections import deque
from dataclasses import dataclass
from enum import StrEnum

import msgspec

from potluck._shared.clock import Clock
from potluck.hub.claims import Claims, Sample
from potluck.hub.errors import HubError
from potluck.hub.outcome import outcome_of_response
from potluck.hub.registry import Registry
from potluck.hub.requests import RequestOwner
from potluck.hub.scheduler import Want
from potluck.protocol.accounts import HoldKind

log = logging.getLogger(__name__)

MAX_ANSWER_BYTES = 64 * 1024

PROMPTS = (
    "Write one sentence about the sea.",
    "What is the capital of France? Answer briefly.",
    "List three colours.",
    "Say hello in three languages.",
    "Describe a cat in one line.",
    "What is 12 times 7?",
    "Give me a short title for a story about a fox.",
    "Name a famous painter and one of their works.",
    "Explain what a relay does, in one sentence.",
    "Complete the sentence: Once upon a time",
    "Write a haiku about the morning.",
    "Which planet is closest to the sun?",
)
"""Ordinary questions, one drawn per check (a group that pins a reference uses its own prompt)."""


class Mode(StrEnum):
    """How a check judged the answers."""

    MAJORITY = "majority"
    """Against the answers of the other agents."""
    REFERENCE = "reference"
    """Against the answer the group pinned."""
    UNDECIDED = "undecided"
    """Too few answers, or no majority: nobody judged."""


@dataclass(frozen=True, slots=True)
class SpotCheckSettings:
    percent: float = 1.0
    """At most this share of the group's requests for the model, in check requests."""
    interval_s: float = 300.0
    """At least this long between two checks of a (group, model) on the hub's own clock."""
    max_tokens: int = 16
    compare_words: int = 12
    """Only the first this many words of an answer are compared."""
    similarity: float = 0.8
    """Two answers agree at this difflib ratio or above (1: identical)."""
    strikes: int = 3
    window: int = 5
    """Flag after ``strikes`` disagreements among the last ``window`` judged checks."""
    timeout_s: float = 60.0
    """A check's answers must all come within this long (a slow agent is not judged)."""

    @property
    def tick_s(self) -> float:
        """How often the hub looks for a (group, model) due for a check: every 10 s, or each interval if shorter."""
        return min(10.0, max(0.05, self.interval_s))

    def affordable(self, served: int, spent: int, needed: int) -> bool:
        """Whether ``needed`` more check requests keep the checks within ``percent`` of ``served`` requests."""
        return (spent + needed) * 100 <= served * self.percent


@dataclass(frozen=True, slots=True)
class Answer:
    agent_id: str
    text: str | None
    """The answer's first words; None when the agent did not answer."""
    agrees: bool | None = None
    """None when not judged."""
    error: str | None = None


@dataclass(frozen=True, slots=True)
class CheckRound:
    group_id: str
    model: str
    mode: Mode
    answers: tuple[Answer, ...]
    flagged: tuple[str, ...]
    """Agents this check flagged."""


class SpotChecker:
    """Sends spot checks and flags agents whose answers disagree (see the module docstring)."""

    def __init__(
        self,
        claims: Claims,
        registry: Registry,
        requests: RequestOwner,
        clock: Clock,
        settings: SpotCheckSettings,
    ) -> None:
        self._claims = claims
        self._registry = registry
        self._requests = requests
        self._clock = clock
        self.settings = settings
        self._served: dict[tuple[str, str], int] = {}
        """(group, model) -> requests the group's keys made and an agent served."""
        self._spent: dict[tuple[str, str], int] = {}
        self._last: dict[tuple[str, str], float] = {}
        self._history: dict[tuple[str, str, str], deque[bool]] = {}
        """(group, agent, model) -> the last judged checks: True where it disagreed."""

    def served(self, sample: Sample) -> None:
        """Count a served request toward the checks' budget (`RequestOwner`'s hook)."""
        for group_id in self._claims.groups_for(sample.agent_id, sample.key_groups):
            key = (group_id, sample.model)
            self._served[key] = self._served.get(key, 0) + 1

    async def run(self) -> None:
        """Check what is due, every ``tick_s`` (a lifecycle loop)."""
        while True:
            await asyncio.sleep(self.settings.tick_s)
            await self.tick()

    async def tick(self) -> None:
        """Run the checks due now, one at a time, within the budget."""
        settings = self.settings
        for key, served in list(self._served.items()):
            group_id, model = key
            now = self._clock.now()
            if now - self._last.get(key, -settings.interval_s) < settings.interval_s:
                continue
            targets = self.targets(group_id, model)
            if len(targets) < (1 if self._reference(group_id, model) else 2):
                continue
            if not settings.affordable(served, self._spent.get(key, 0), len(targets)):
                continue
            self._last[key] = now
            self._spent[key] = self._spent.get(key, 0) + len(targets)
            try:
                await self.check(group_id, model)
            except Exception:  # a failed check must not stop the hub; it is logged loudly
                log.exception("a spot check of %s in group %s failed", model, group_id)

    def targets(self, group_id: str, model: str) -> list[str]:
        """The agents that may serve ``model`` in the group now (connected, taking work, not held) and have it hot."""
        access = self._claims.view
        groups = frozenset({group_id})
        scheduler = self._registry.scheduler
        found = []
        for agent_id in sorted(self._registry.sessions):
            slots = scheduler.agent(agent_id)
            if slots is None or model not in slots.hot or not slots.available or slots.draining or slots.own_only:
                continue  # a cold model is not loaded for a check: that would cost a load and evict others
            if slots.groups is not None and group_id not in slots.groups:
                continue
            if access.refusal(agent_id, slots.groups, model, groups):
                continue
            found.append(agent_id)
        return found

    def _reference(self, group_id: str, model: str) -> tuple[str, str] | None:
        rule = self._claims.view.rules.get((group_id, model))
        if rule is None or rule.reference_prompt is None or rule.reference_answer is None:
            return None
        return rule.reference_prompt, rule.reference_answer

    async def check(self, group_id: str, model: str) -> CheckRound:
        """One check of every agent serving ``model`` in the group, judged, with flags taken."""
        settings = self.settings
        targets = self.targets(group_id, model)
        reference = self._reference(group_id, model)
        prompt = reference[0] if reference is not None else secrets.choice(PROMPTS)
        body = msgspec.json.encode(
            {
                "messages": [{"role": "user", "content": prompt}],
                "model": model,
                "max_tokens": settings.max_tokens,
                "seed": secrets.randbelow(2**31),
                "temperature": 0,
            }
        )
        everyone = frozenset(targets)
        async with asyncio.TaskGroup() as tasks:
            asks = [
                tasks.create_task(self._ask(agent_id, group_id, model, body, everyone - {agent_id}))
                for agent_id in targets
            ]
        answered = [a.result() for a in asks]
        texts = {a.agent_id: a.text for a in answered if a.text is not None}
        verdicts = judge(
            texts,
            None if reference is None else self._first_words(reference[1]),
            settings.similarity,
        )
        mode = Mode.UNDECIDED if verdicts is None else Mode.REFERENCE if reference is not None else Mode.MAJORITY
        flagged = []
        answers = []
        for answer in answered:
            agrees = None if verdicts is None else verdicts.get(answer.agent_id)
            answers.append(Answer(answer.agent_id, answer.text, agrees, answer.error))
            if agrees is not None and self._strike(group_id, answer.agent_id, model, not agrees, mode):
                flagged.append(answer.agent_id)
        return CheckRound(group_id, model, mode, tuple(answers), tuple(flagged))

    def _strike(self, group_id: str, agent_id: str, model: str, disagreed: bool, mode: Mode) -> bool:
        """Record a judged check; True when it flags the agent."""
        settings = self.settings
        key = (group_id, agent_id, model)
        history = self._history.get(key)
        if history is None:
            history = self._history[key] = deque(maxlen=settings.window)
        history.append(disagreed)
        strikes, judged = sum(history), len(history)
        if strikes < settings.strikes:
            return False
        history.clear()  # a clean slate if a group admin lifts the flag
        against = "the group's pinned reference" if mode is Mode.REFERENCE else "the other agents serving it"
        self._claims.hold(
            group_id,
            agent_id,
            model,
            HoldKind.FLAGGED,
            f"spot checks: its answers for {model} differed from {against} in {strikes} of its last {judged} checks",
        )
        return True

    async def _ask(self, agent_id: str, group_id: str, model: str, body: bytes, others: frozenset[str]) -> Answer:
        want = Want((model,), exclude=others, groups=frozenset({group_id}))
        try:
            async with asyncio.timeout(self.settings.timeout_s):
                exchange = await self._requests.probe(model, body, want)
                try:
                    raw = await exchange.read_all(MAX_ANSWER_BYTES)
                finally:
                    exchange.close(
                        outcome_of_response(
                            status=exchange.status, failure=exchange.failure, client_gone=False, done_sent=False
                        )
                    )
        except (HubError, TimeoutError) as exc:
            return Answer(agent_id, None, error=str(exc) or type(exc).__name__)
        if exchange.slot.placement.agent_id != agent_id:
            return Answer(agent_id, None, error="placed elsewhere")
        if exchange.status != 200:
            return Answer(agent_id, None, error=f"status {exchange.status}")
        text = _answer_text(raw)
        if text is None:
            return Answer(agent_id, None, error="no answer text")
        return Answer(agent_id, self._first_words(text))

    def _first_words(self, text: str) -> str:
        return " ".join(text.split()[: self.settings.compare_words])


def judge(answers: dict[str, str], reference: str | None, similarity: float) -> dict[str, bool] | None:
    """Agent -> whether its answer agrees (with ``reference``, or with the majority); None when undecided."""
    if reference is not None:
        return {agent: _alike(text, reference, similarity) for agent, text in answers.items()}
    if len(answers) < 2:
        return None
    agents = list(answers)
    alike = {(a, b): _alike(answers[a], answers[b], similarity) for i, a in enumerate(agents) for b in agents[i + 1 :]}

    def agree(a: str, b: str) -> bool:
        return a == b or alike.get((a, b), False) or alike.get((b, a), False)

    majority = {a for a in agents if sum(agree(a, b) for b in agents) * 2 > len(agents)}
    if not majority:
        return None
    return {a: any(agree(a, m) for m in majority) for a in agents}


def _alike(a: str, b: str, similarity: float) -> bool:
    return a == b or difflib.SequenceMatcher(None, a, b, autojunk=False).ratio() >= similarity


def _answer_text(raw: bytes) -> str | None:
    try:
        document = msgspec.json.decode(raw)
        choice = document["choices"][0]
        text = choice["message"]["content"] if "message" in choice else choice["text"]
    except (msgspec.DecodeError, KeyError, IndexError, TypeError):
        return None
    return text if isinstance(text, str) else None
