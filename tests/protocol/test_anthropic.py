"""The Messages API Structs: what Claude Code and the SDK send decodes; what Potluck writes is the SDK's own shape."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest
from anthropic.types import Message as SDKMessage
from anthropic.types import RawMessageStreamEvent
from pydantic import TypeAdapter

from potluck.protocol.anthropic import (
    MessagesRequest,
    TextBlock,
    ThinkingBlock,
    ThinkingType,
    ToolChoiceType,
    ToolResultBlock,
    ToolUseBlock,
)
from potluck.protocol.anthropic_answer import (
    ContentBlockDeltaEvent,
    ContentBlockStartEvent,
    ContentBlockStopEvent,
    ErrorType,
    InputJSONDelta,
    Message,
    MessageDelta,
    MessageDeltaEvent,
    MessageDeltaUsage,
    MessageStartEvent,
    MessageStopEvent,
    SignatureDelta,
    StopReason,
    TextDelta,
    ThinkingDelta,
    Usage,
    error_body,
    error_type_for_status,
)

EVENTS: TypeAdapter[Any] = TypeAdapter(RawMessageStreamEvent)

# What Claude Code sends on a turn after a tool call (trimmed): cache_control everywhere, extra top-level fields.
CLAUDE_CODE_TURN: dict[str, Any] = {
    "model": "claude-sonnet-4-5-20250929",
    "max_tokens": 32000,
    "stream": True,
    "system": [
        {"type": "text", "text": "x-anthropic-billing-header: cc_version=2.1.101.e51; cc_entrypoint=cli; cch=a5145;"},
        {"type": "text", "text": "You are Claude Code.", "cache_control": {"type": "ephemeral"}},
    ],
    "messages": [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "<system-reminder>x</system-reminder>"},
                {"type": "text", "text": "list files"},
            ],
        },
        {
            "role": "assistant",
            "content": [
                {"type": "thinking", "thinking": "Use Bash.", "signature": "EqQBCkgIBRAC"},
                {
                    "type": "tool_use",
                    "id": "toolu_01A",
                    "name": "Bash",
                    "input": {"command": "ls", "description": "List"},
                },
            ],
        },
        {
            "role": "user",
            "content": [
                {
                    "type": "tool_result",
                    "tool_use_id": "toolu_01A",
                    "content": "a.py\nb.py",
                    "is_error": False,
                    "cache_control": {"type": "ephemeral"},
                }
            ],
        },
    ],
    "tools": [
        {
            "name": "Bash",
            "description": "Run a command",
            "input_schema": {
                "type": "object",
                "properties": {"command": {"type": "string"}},
                "required": ["command"],
                "additionalProperties": False,
                "$schema": "http://json-schema.org/draft-07/schema#",
            },
        }
    ],
    "tool_choice": {"type": "auto"},
    "metadata": {"user_id": "user_abc_account__session_123"},
    "thinking": {"type": "enabled", "budget_tokens": 31999},
    "context_management": {"edits": []},
    "temperature": 1,
}


def test_claude_code_turn_decodes() -> None:
    req = msgspec.json.decode(msgspec.json.encode(CLAUDE_CODE_TURN), type=MessagesRequest)
    assert req.max_tokens == 32000
    assert req.thinking is not None
    assert (req.thinking.type, req.thinking.budget_tokens) == (ThinkingType.ENABLED, 31999)
    assert req.tool_choice is not None
    assert req.tool_choice.type is ToolChoiceType.AUTO
    assert isinstance(req.system, list)
    assert req.system[1] == TextBlock("You are Claude Code.")
    assistant = req.messages[1].content
    assert assistant == [
        ThinkingBlock("Use Bash.", "EqQBCkgIBRAC"),
        ToolUseBlock("toolu_01A", "Bash", {"command": "ls", "description": "List"}),
    ]
    assert req.messages[2].content == [ToolResultBlock("toolu_01A", "a.py\nb.py")]
    assert req.tools is not None
    assert req.tools[0].input_schema is not None
    assert req.tools[0].input_schema["required"] == ["command"]


def test_an_unknown_block_type_does_not_decode() -> None:
    bad = {**CLAUDE_CODE_TURN, "messages": [{"role": "user", "content": [{"type": "hologram", "data": "x"}]}]}
    with pytest.raises(msgspec.ValidationError, match="hologram"):
        msgspec.json.decode(msgspec.json.encode(bad), type=MessagesRequest)


def test_a_message_is_the_sdk_message() -> None:
    message = Message(
        id="msg_1",
        model="claude-x",
        content=[ThinkingBlock("hm"), TextBlock("Hi"), ToolUseBlock("toolu_1", "f", {"a": [1]})],
        stop_reason=StopReason.TOOL_USE,
        stop_sequence=None,
        usage=Usage(input_tokens=3, output_tokens=4, cache_creation_input_tokens=0, cache_read_input_tokens=9),
    )
    raw = msgspec.json.encode(message)
    sdk = SDKMessage.model_validate_json(raw)
    assert sdk.model_dump(exclude_none=True, mode="json") == {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "model": "claude-x",
        "content": [
            {"type": "thinking", "thinking": "hm", "signature": ""},
            {"type": "text", "text": "Hi"},
            {"type": "tool_use", "id": "toolu_1", "name": "f", "input": {"a": [1]}},
        ],
        "stop_reason": "tool_use",
        "usage": {
            "input_tokens": 3,
            "output_tokens": 4,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 9,
        },
    }
    assert b'"stop_sequence":null' in raw  # explicitly null, as Anthropic writes it


@pytest.mark.parametrize(
    "event",
    [
        MessageStartEvent(Message("msg_1", "m", [], None, None, Usage(input_tokens=0, output_tokens=0))),
        ContentBlockStartEvent(0, TextBlock("")),
        ContentBlockStartEvent(1, ThinkingBlock("")),
        ContentBlockStartEvent(2, ToolUseBlock("toolu_1", "f", {})),
        ContentBlockDeltaEvent(0, TextDelta("a")),
        ContentBlockDeltaEvent(1, ThinkingDelta("b")),
        ContentBlockDeltaEvent(1, SignatureDelta("sig")),
        ContentBlockDeltaEvent(2, InputJSONDelta('{"x":')),
        ContentBlockStopEvent(2),
        MessageDeltaEvent(
            MessageDelta(StopReason.STOP_SEQUENCE, "###"), MessageDeltaUsage(output_tokens=5, input_tokens=2)
        ),
        MessageStopEvent(),
    ],
)
def test_stream_events_are_the_sdks(event: Any) -> None:
    raw = msgspec.json.encode(event)
    parsed = EVENTS.validate_json(raw)
    assert parsed.type == type(event).__struct_config__.tag
    assert parsed.model_dump(mode="json", exclude_none=True) == without_nulls(msgspec.json.decode(raw))


def without_nulls(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: without_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [without_nulls(v) for v in value]
    return value


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        (400, ErrorType.INVALID_REQUEST),
        (401, ErrorType.AUTHENTICATION),
        (402, ErrorType.BILLING),
        (403, ErrorType.PERMISSION),
        (404, ErrorType.NOT_FOUND),
        (409, ErrorType.INVALID_REQUEST),
        (413, ErrorType.REQUEST_TOO_LARGE),
        (429, ErrorType.RATE_LIMIT),
        (500, ErrorType.API),
        (502, ErrorType.API),
        (503, ErrorType.OVERLOADED),
        (504, ErrorType.TIMEOUT),
        (529, ErrorType.OVERLOADED),
    ],
)
def test_error_types_by_status(status: int, kind: ErrorType) -> None:
    assert error_type_for_status(status) is kind
    assert msgspec.json.decode(error_body(kind, "why")) == {
        "type": "error",
        "error": {"type": kind.value, "message": "why"},
    }
