"""The official ``openai`` SDK's Responses client against the translation, over real loopback sockets.

A small front serves ``POST /v1/responses`` the way the agent will: translate the request, send the chat
body to a chat completions backend, and pass the backend's bytes through the translator as they arrive.
The backend is `testing.fake_backend` (a real server speaking OpenAI's chat API), or, for tool calls and
reasoning, which it cannot script, the golden streams of `responses_golden` served as they were recorded.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import openai
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from potluck.agent.dialects.responses import (
    ResponsesJSONTranslator,
    ResponsesStreamTranslator,
    translate_request,
    translator_for,
)
from potluck.protocol.responses import (
    ResponsesRequestError,
)
from testing.fake_backend import FakeBackend
from tests.agent.responses_golden import GOLDEN, START, message, pieces

GOLDEN_MODEL = "golden:"


def front(backends: dict[str, str], http: aiohttp.ClientSession) -> web.Application:
    """``POST /v1/responses``, translated for the backend that serves the model (``backends``: model -> URL)."""

    async def responses(request: web.Request) -> web.StreamResponse:
        body = await request.read()
        try:
            translation = translate_request(body)
        except ResponsesRequestError as exc:
            return web.Response(status=exc.status, body=exc.body(), content_type="application/json")
        translator = translator_for(translation)
        model = json.loads(body)["model"]
        if model.startswith(GOLDEN_MODEL):
            return await relay(request, translator, 200, pieces(GOLDEN[model.removeprefix(GOLDEN_MODEL)].raw, 3))
        async with http.post(f"{backends[model]}/v1/chat/completions", data=translation.body) as upstream:
            if upstream.status >= 400:
                error = translator.translate_error(upstream.status, await upstream.read())
                return web.Response(status=upstream.status, body=error, content_type="application/json")
            return await relay(request, translator, upstream.status, upstream.content.iter_any())

    async def relay(
        request: web.Request, translator: ResponsesStreamTranslator | ResponsesJSONTranslator, status: int, chunks: Any
    ) -> web.StreamResponse:
        response = web.StreamResponse(status=status, headers={"Content-Type": translator.content_type})
        await response.prepare(request)
        try:
            async for chunk in aiter_of(chunks):
                out = translator.feed(chunk)
                if out:
                    await response.write(out)
                if translator.error is not None:
                    break
            else:
                await response.write(translator.finish())
        except aiohttp.ClientPayloadError as exc:
            assert isinstance(translator, ResponsesStreamTranslator)
            await response.write(translator.abort(f"the backend broke off its response: {exc}"))
        await response.write_eof()
        return response

    app = web.Application()
    app.router.add_post("/v1/responses", responses)
    return app


async def aiter_of(chunks: Any) -> AsyncIterator[bytes]:
    if isinstance(chunks, list):
        for chunk in chunks:
            yield chunk
    else:
        async for chunk in chunks:
            yield chunk


@pytest.fixture
async def client() -> AsyncIterator[openai.AsyncOpenAI]:
    async with (
        TestServer(FakeBackend(["fake-model"], chunks=5).make_app(), host="127.0.0.1") as whole,
        TestServer(FakeBackend(["cut-model"], chunks=5, fail_after=2).make_app(), host="127.0.0.1") as cut,
        aiohttp.ClientSession() as http,
    ):
        url = str(whole.make_url("")).rstrip("/")
        backends = {"fake-model": url, "no-such-model": url, "cut-model": str(cut.make_url("")).rstrip("/")}
        server = TestServer(front(backends, http), host="127.0.0.1")
        await server.start_server()
        sdk = openai.AsyncOpenAI(base_url=str(server.make_url("/v1")), api_key="k", max_retries=0, timeout=10)
        try:
            async with sdk:
                yield sdk
        finally:
            await server.close()


async def test_a_whole_response(client: openai.AsyncOpenAI) -> None:
    response = await client.responses.create(model="fake-model", input="Hi", instructions="Be brief.")
    assert response.status == "completed"
    assert response.output_text == "tok0 tok1 tok2 tok3 tok4 "
    assert response.usage is not None
    assert response.usage.output_tokens == 5
    assert response.usage.total_tokens == response.usage.input_tokens + 5


async def test_the_stream_helper_reads_a_translated_stream(client: openai.AsyncOpenAI) -> None:
    deltas = []
    async with client.responses.stream(model="fake-model", input="Hi") as stream:
        kinds = []
        async for event in stream:
            kinds.append(event.type)
            if event.type == "response.output_text.delta":
                deltas.append(event.delta)
        final = await stream.get_final_response()
    assert kinds == [*START, *message(5), "response.completed"]
    assert "".join(deltas) == final.output_text == "tok0 tok1 tok2 tok3 tok4 "
    assert final.usage is not None
    assert final.usage.output_tokens == 5


async def test_a_token_limit_ends_the_stream_incomplete(client: openai.AsyncOpenAI) -> None:
    stream = await client.responses.create(model="fake-model", input="Hi", max_output_tokens=2, stream=True)
    events = [event async for event in stream]
    last = events[-1]
    assert last.type == "response.incomplete"
    assert last.response.incomplete_details is not None
    assert last.response.incomplete_details.reason == "max_output_tokens"
    assert last.response.output_text == "tok0 tok1 "


@pytest.mark.parametrize("name", ["one function call", "parallel function calls", "reasoning then text"])
async def test_tool_calls_and_reasoning_reach_the_sdk(client: openai.AsyncOpenAI, name: str) -> None:
    async with client.responses.stream(model=GOLDEN_MODEL + name, input="Hi") as stream:
        final = await stream.get_final_response()
    assert [summary(item) for item in final.output] == GOLDEN[name].output


def summary(item: Any) -> tuple[str, ...]:
    if item.type == "function_call":
        return (item.type, item.call_id, item.name, item.arguments, item.status)
    return (item.type, item.content[0].text, item.status)


async def test_a_backend_that_breaks_off_gives_response_failed(client: openai.AsyncOpenAI) -> None:
    stream = await client.responses.create(model="cut-model", input="Hi", stream=True)
    events = [event async for event in stream]
    last = events[-1]
    assert last.type == "response.failed"
    assert last.response.error is not None
    assert last.response.error.code == "server_error"
    assert last.response.output_text == "tok0 tok1 "
    assert [e.type for e in events].count("response.failed") == 1


async def test_a_backend_error_is_the_sdks_exception(client: openai.AsyncOpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        await client.responses.create(model="no-such-model", input="Hi")  # the fake serves only fake-model
    assert caught.value.status_code == 404
    assert isinstance(caught.value.body, dict)
    assert (caught.value.body["type"], caught.value.body["code"]) == ("invalid_request_error", "model_not_found")


async def test_previous_response_id_is_the_sdks_bad_request(client: openai.AsyncOpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        await client.responses.create(model="fake-model", input="and?", previous_response_id="resp_1")
    assert isinstance(caught.value.body, dict)
    assert caught.value.body["param"] == "previous_response_id"
