"""``/v1/messages/count_tokens`` for a backend that does not answer it itself.

The count is the backend's own whenever it has a tokenizer endpoint: llama.cpp templates the
prompt (``/apply-template``) and tokenizes it (``/tokenize``), vLLM tokenizes the chat messages
(``/tokenize``). The prompt is the one a translated ``/v1/messages`` request would send. Only a
backend with no tokenizer to ask, or one whose tokenizer failed, gets an estimate, logged at
warning as one. Nothing is asked of anyone but the backend.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from potluck.agent.backend_client import BackendClient, BackendConnectError, BackendError
from potluck.agent.backends.base import Backend
from potluck.agent.dialects import anthropic_count
from potluck.agent.dialects.anthropic_count import CountError, CountRequest
from potluck.agent.dialects.anthropic_request import MessagesRequestError
from potluck.agent.dialects.select import control_for
from potluck.protocol.agent import RequestMessage
from potluck.protocol.anthropic_answer import ErrorType, error_body

log = logging.getLogger(__name__)

_ANSWER_LIMIT = 16 << 20


async def _answer(client: BackendClient, base: str, path: str, body: bytes) -> bytes:
    async with await client.post(base, path, body) as resp:
        answer = await resp.read(_ANSWER_LIMIT)
        if resp.status != 200:
            raise CountError(f"{path} answered HTTP {resp.status}: {answer[:200].decode('utf-8', 'replace')}")
    return answer


async def _llamacpp(client: BackendClient, base: str, count: CountRequest) -> int:
    prompt = anthropic_count.read_prompt(
        await _answer(client, base, "/apply-template", anthropic_count.apply_template_body(count))
    )
    tokens = await _answer(client, base, "/tokenize", anthropic_count.llamacpp_tokenize_body(prompt))
    return anthropic_count.read_token_count(tokens)


async def _vllm(client: BackendClient, base: str, count: CountRequest) -> int:
    return anthropic_count.read_token_count(
        await _answer(client, base, "/tokenize", anthropic_count.vllm_tokenize_body(count))
    )


TOKENIZERS: dict[str, Callable[[BackendClient, str, CountRequest], Awaitable[int]]] = {
    "llamacpp": _llamacpp,
    "vllm": _vllm,
}
"""The backend kinds with a tokenizer endpoint, and how to count with it."""


async def count_tokens(client: BackendClient, backend: Backend, req: RequestMessage, body: bytes) -> tuple[int, bytes]:
    """The answer to a count_tokens request: its status and its body, in Anthropic's shape.

    Raises BackendConnectError when the backend cannot be reached (another agent's may count).
    """
    try:
        count = anthropic_count.count_request(body, model=req.model, control=control_for(backend))
    except MessagesRequestError as exc:
        return 400, error_body(ErrorType.INVALID_REQUEST, exc.message)
    tokenizer = TOKENIZERS.get(backend.kind)
    why = f"a {backend.kind} backend has no tokenizer endpoint"
    if tokenizer is not None:
        try:
            return 200, anthropic_count.token_count_body(await tokenizer(client, backend.base, count))
        except BackendConnectError:
            raise
        except (BackendError, CountError) as exc:
            why = f"its tokenizer failed ({exc})"
    estimate = anthropic_count.estimate_input_tokens(count.request)
    log.warning(
        "count_tokens for %s on %s: %s; answering with an ESTIMATE of %d tokens, not a count",
        req.request_id,
        backend.url,
        why,
        estimate,
    )
    return 200, anthropic_count.token_count_body(estimate)
