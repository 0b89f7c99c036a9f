"""The relay's normal path through real processes: official openai SDK → hub → agent → fake backend."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

import aiohttp
import openai
import pytest

from tests.e2e.conftest import Fleet

pytestmark = pytest.mark.slow


def test_chat_completion_round_trip_keeps_unknown_fields(fleet: Fleet) -> None:
    model = fleet.model()
    backend, url = fleet.backend(model, chunks=5)
    fleet.agent(url)
    client = fleet.client()

    raw = client.chat.completions.with_raw_response.create(
        model=model,
        messages=[{"role": "user", "content": "hello there friend"}],
        extra_body={"custom_field": {"nested": [1, 2, 3]}},
    )
    completion = raw.parse()

    assert raw.headers["x-request-id"].startswith("req_")
    assert completion.choices[0].message.content == "tok0 tok1 tok2 tok3 tok4 "
    assert completion.usage is not None
    assert completion.usage.completion_tokens == 5
    # The backend got the client's body as sent: unknown fields kept, no client credential.
    record = backend.records[-1]
    assert record.json is not None
    assert record.json["custom_field"] == {"nested": [1, 2, 3]}
    assert "authorization" not in record.headers
    assert fleet.key not in json.dumps(record.headers)


def test_stream_without_include_usage_hides_usage_chunk_but_meters_it(fleet: Fleet) -> None:
    model = fleet.model()
    backend, url = fleet.backend(model, chunks=6)
    fleet.agent(url)
    client = fleet.client()

    raw = client.chat.completions.with_raw_response.create(
        model=model, messages=[{"role": "user", "content": "a b c"}], stream=True
    )
    chunks = list(raw.parse())

    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "".join(f"tok{i} " for i in range(6))
    assert all(c.usage is None for c in chunks), "the client did not ask for a usage chunk"
    assert all(c.choices for c in chunks)
    # The hub asked the backend for usage anyway, and recorded it.
    assert backend.records[-1].json is not None
    assert backend.records[-1].json["stream_options"] == {"include_usage": True}
    record = fleet.hub.usage_of(raw.headers["x-request-id"])
    assert record["outcome"] == "ok"
    assert record["completion_tokens"] == 6
    assert record["prompt_tokens"] == 3


def test_stream_with_include_usage_shows_usage_chunk_and_body_passes_byte_for_byte(fleet: Fleet) -> None:
    model = fleet.model()
    backend, url = fleet.backend(model, chunks=4)
    fleet.agent(url)
    client = fleet.client()

    stream = client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": "x"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)

    assert chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == 4
    assert chunks[-1].choices == []
    sent = json.loads(backend.records[-1].body)
    assert sent["stream_options"] == {"include_usage": True}


async def test_stream_bytes_arrive_unchanged_and_end_with_done(fleet: Fleet) -> None:
    model = fleet.model()
    _backend, url = fleet.backend(model, chunks=3)
    fleet.agent(url)
    body = {
        "model": model,
        "messages": [{"role": "user", "content": "x"}],
        "stream": True,
        "stream_options": {"include_usage": True},
    }

    async with aiohttp.ClientSession() as http:
        async with http.post(url + "/v1/chat/completions", json=body) as direct:
            direct_bytes = await direct.read()
        async with http.post(
            fleet.hub.url + "/v1/chat/completions", json=body, headers={"x-api-key": fleet.key}
        ) as relayed:
            assert relayed.status == 200
            assert relayed.headers["Content-Type"].startswith("text/event-stream")
            assert relayed.headers["x-request-id"].startswith("req_")
            relayed_bytes = await relayed.read()

    assert relayed_bytes.endswith(b"data: [DONE]\n\n")

    def shape(raw: bytes) -> list[object]:
        events = [e for e in raw.split(b"\n\n") if e]
        out: list[object] = []
        for event in events:
            payload = event.removeprefix(b"data: ")
            if payload == b"[DONE]":
                out.append("DONE")
                continue
            obj = json.loads(payload)
            obj.pop("id")
            obj.pop("created")
            out.append(obj)
        return out

    assert shape(relayed_bytes) == shape(direct_bytes)


def test_completions_and_embeddings(fleet: Fleet) -> None:
    model = fleet.model()
    _backend, url = fleet.backend(model, chunks=3)
    fleet.agent(url)
    client = fleet.client()

    completion = client.completions.create(model=model, prompt="once upon a time")
    assert completion.choices[0].text == "tok0 tok1 tok2 "
    streamed = "".join(
        c.choices[0].text for c in client.completions.create(model=model, prompt="x", stream=True) if c.choices
    )
    assert streamed == "tok0 tok1 tok2 "
    embedding = client.embeddings.create(model=model, input=["a", "b c"])
    assert len(embedding.data) == 2
    assert embedding.usage.prompt_tokens == 3


def test_models_lists_what_connected_agents_serve(fleet: Fleet) -> None:
    first, second = fleet.model("alpha"), fleet.model("beta")
    _b1, url1 = fleet.backend(first)
    _b2, url2 = fleet.backend(first, second)
    fleet.agent(url1)
    fleet.agent(url2)

    listed = {m.id: m for m in fleet.client().models.list()}

    assert first in listed
    assert second in listed
    first_extra, second_extra = listed[first].model_extra, listed[second].model_extra
    assert first_extra is not None
    assert second_extra is not None
    assert first_extra["agents"] == 2
    assert second_extra["agents"] == 1


def test_concurrent_requests_spread_over_equal_agents_by_load(fleet: Fleet) -> None:
    model = fleet.model()
    b1, url1 = fleet.backend(model, first_delay=0.3)
    b2, url2 = fleet.backend(model, first_delay=0.3)
    fleet.agent(url1)
    fleet.agent(url2)
    client = fleet.client()

    with ThreadPoolExecutor(6) as pool:
        replies = list(
            pool.map(
                lambda _: client.chat.completions.create(model=model, messages=[{"role": "user", "content": "x"}]),
                range(6),
            )
        )
    assert all(r.choices[0].message.content for r in replies)

    served = [sum(1 for r in b.records if r.path == "/v1/chat/completions") for b in (b1, b2)]
    assert served == [3, 3]


def test_admin_agents_lists_models_state_and_load(fleet: Fleet) -> None:
    model = fleet.model()
    _backend, url = fleet.backend(model)
    agent = fleet.agent(url, max_concurrency=3)

    listed = fleet.hub.wait_agent(agent.name, models={model})

    assert listed["state"] == "online"
    assert listed["models"] == [{"id": model, "hot": True}]
    assert listed["in_flight"] == 0
    assert listed["max_concurrency"] == 3
    assert listed["last_seen"]
    assert listed["id"].startswith("agt_")


def test_models_retrieve_finds_a_served_model_and_404s_others(fleet: Fleet) -> None:
    model = fleet.model("org/name")  # ids with a slash, as Hugging Face names them
    _backend, url = fleet.backend(model)
    fleet.agent(url)
    client = fleet.client()
    found = client.models.retrieve(model)
    assert (found.id, found.object) == (model, "model")
    with pytest.raises(openai.NotFoundError) as caught:
        client.models.retrieve(fleet.model("nobody"))
    assert caught.value.response.headers["x-request-id"]
    assert caught.value.body["code"] == "model_not_found"  # type: ignore[index]
