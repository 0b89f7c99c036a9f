"""protocol/responses.py: event framing, the pre-framed delta events, and the refusal of stateful requests."""

from __future__ import annotations

import json
import random

import msgspec
import pytest

from potluck.protocol.responses import (
    ResponsesRequest,
    refusal,
)
from potluck.protocol.responses_output import (
    DeltaFrame,
    FunctionCallArgumentsDelta,
    OutputTextDelta,
    ReasoningTextDelta,
    sse_event,
)

ALPHABET = 'ab "\\\n\t\x00é✓😀{}:,0123456789' + "918273645"


@pytest.mark.parametrize("seed", range(5))
def test_a_delta_frame_writes_exactly_what_the_event_struct_would(seed: int) -> None:
    rng = random.Random(seed)
    frames = [
        (
            DeltaFrame(OutputTextDelta, item_id="msg_1", output_index=3, content_index=0),
            OutputTextDelta,
            {"content_index": 0},
        ),
        (
            DeltaFrame(ReasoningTextDelta, item_id="msg_1", output_index=3, content_index=0),
            ReasoningTextDelta,
            {"content_index": 0},
        ),
        (DeltaFrame(FunctionCallArgumentsDelta, item_id="msg_1", output_index=3), FunctionCallArgumentsDelta, {}),
    ]
    for frame, kind, extra in frames:
        for _ in range(50):
            delta = "".join(rng.choice(ALPHABET) for _ in range(rng.randint(0, 12)))
            n = rng.randint(0, 10**9)
            assert frame.render(delta, n) == sse_event(
                kind(item_id="msg_1", output_index=3, delta=delta, sequence_number=n, **extra)
            )


def test_an_event_is_framed_with_its_type() -> None:
    raw = sse_event(OutputTextDelta("msg_1", 0, 0, "hi", 4))
    head, data = raw.removesuffix(b"\n\n").split(b"\n")
    assert head == b"event: response.output_text.delta"
    assert json.loads(data.removeprefix(b"data: ")) == {
        "type": "response.output_text.delta",
        "item_id": "msg_1",
        "output_index": 0,
        "content_index": 0,
        "delta": "hi",
        "sequence_number": 4,
        "logprobs": [],
    }


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"previous_response_id": "resp_1"}, "previous_response_id"),
        ({"conversation": {"id": "conv_1"}}, "conversation"),
        ({"conversation": "conv_1"}, "conversation"),
        ({"prompt": {"id": "pmpt_1", "version": "2"}}, "prompt"),
        ({"background": True}, "background"),
        (
            {"previous_response_id": None, "conversation": None, "prompt": None, "background": False, "store": True},
            None,
        ),
        ({}, None),
    ],
)
def test_stateful_fields_are_refused_and_their_absence_or_null_is_not(
    fields: dict[str, object], param: str | None
) -> None:
    request = msgspec.json.decode(json.dumps({"model": "m", "input": "hi", **fields}), type=ResponsesRequest)
    refused = refusal(request)
    assert (refused.param if refused is not None else None) == param
    if refused is not None:
        assert refused.status == 400
        assert json.loads(refused.body())["error"]["param"] == param
