"""A real llama.cpp server for tests: a tiny random llama GGUF made at test time, served by `xllamacpp`.

`make_tiny_gguf` writes a ~0.5 MB llama-architecture model with random weights and a byte-level BPE tokenizer.
It is useless as a language model but llama.cpp loads and runs it for real: real tokenisation, token counts,
streaming and timings. Special tokens are suppressed in the output layer (unless `allow_eos`), so generation
never stops early (completion_tokens == max_tokens, finish_reason "length"), and so are tokens holding bytes
outside printable ASCII, so streamed deltas always join to the non-streamed text.

`xllamacpp` embeds llama.cpp's own HTTP server (the C++ `llama-server` code). Run it in the foreground:

    python -m testing.llama serve -m tiny.gguf --port 0 --alias tiny [--parallel 2] [--embedding]

It prints one line, `listening http://127.0.0.1:PORT`, then serves until SIGTERM or SIGINT. Tests use
`start_llama_server`, which makes the model, runs that command and waits for `/health`.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import itertools
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")
CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
# Text the tokenizer's merges are learnt from: what prompts in tests look like.
_CORPUS = """
Hello, how are you today? I am fine, thank you. Say hello to the world. What is the capital of France?
A relay pools local language model servers behind one endpoint, and the hub picks the agent with the
fewest requests in flight. Tokens are counted for the prompt and for the completion; the stream sends
one chunk for each token. Write a short poem about the sea, the sky and the quick brown fox that jumps
over the lazy dog. Once upon a time a small model could only say random words, but said them quickly.
{"role": "user", "content": "ping"} def main(): return 42  # the answer 0123456789
"""
_PRINTABLE = frozenset(range(32, 127)) | {10}
_STARTUP_TIMEOUT_S = 30.0


def _byte_alphabet() -> dict[int, str]:
    """GPT-2's reversible map from bytes to printable characters (byte-level BPE token spelling)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    alphabet = {b: chr(b) for b in printable}
    extra = 0
    for b in range(256):
        if b not in alphabet:
            alphabet[b] = chr(256 + extra)
            extra += 1
    return alphabet


def _learn_merges(text: str, count: int, alphabet: dict[int, str]) -> list[tuple[str, str]]:
    """Plain byte-pair encoding over GPT-2-style pre-tokenised words."""
    pieces = re.findall(r" ?[A-Za-z]+| ?[0-9]+| ?[^\sA-Za-z0-9]+|\s+", text)
    words: Counter[tuple[str, ...]] = Counter(tuple(alphabet[b] for b in p.encode()) for p in pieces)
    merges: list[tuple[str, str]] = []
    for _ in range(count):
        pairs: Counter[tuple[str, str]] = Counter()
        for word, freq in words.items():
            for pair in itertools.pairwise(word):
                pairs[pair] += freq
        if not pairs:
            break
        best = max(pairs.items(), key=lambda item: (item[1], item[0]))[0]
        merges.append(best)
        merged: Counter[tuple[str, ...]] = Counter()
        for word, freq in words.items():
            out: list[str] = []
            i = 0
            while i < len(word):
                if word[i : i + 2] == best:
                    out.append(best[0] + best[1])
                    i += 2
                else:
                    out.append(word[i])
                    i += 1
            merged[tuple(out)] += freq
        words = merged
    return merges


def make_tiny_gguf(
    path: Path,
    *,
    allow_eos: bool = False,
    seed: int = 0,
    layers: int = 2,
    hidden: int = 64,
    heads: int = 4,
    merges: int = 200,
    context_length: int = 4096,
) -> Path:
    """Write a tiny random-weight llama GGUF to `path` (deterministic for a seed) and return `path`.

    The file is written beside `path` and renamed into place, so concurrent writers (xdist) never see half a file.
    """
    import gguf
    import numpy as np

    if hidden % heads:
        raise ValueError("hidden must be a multiple of heads")
    rng = np.random.default_rng(seed)
    alphabet = _byte_alphabet()
    learnt = _learn_merges(_CORPUS, merges, alphabet)
    tokens = [alphabet[b] for b in range(256)] + [a + b for a, b in learnt] + list(SPECIAL_TOKENS)
    if len(set(tokens)) != len(tokens):
        raise AssertionError("duplicate tokens in the vocabulary")
    n_vocab = len(tokens)
    token_id = {t: i for i, t in enumerate(tokens)}
    types = [gguf.TokenType.NORMAL] * (n_vocab - len(SPECIAL_TOKENS)) + [gguf.TokenType.CONTROL] * len(SPECIAL_TOKENS)
    ff = 2 * hidden
    head_dim = hidden // heads

    def matrix(rows: int, cols: int) -> Any:  # numpy (rows, cols) is ggml's ne (cols, rows)
        return (rng.standard_normal((rows, cols)) * 0.02).astype(np.float32)

    tensors: dict[str, Any] = {}
    embeddings = rng.standard_normal((n_vocab, hidden)).astype(np.float32) * 0.5
    # Dimension 0 carries a constant through the residual stream (the blocks add little), so after the
    # final RMSNorm it is positive, and an output row with a very negative weight there is never sampled.
    embeddings[:, 0] = 4.0
    tensors["token_embd.weight"] = embeddings
    for i in range(layers):
        tensors[f"blk.{i}.attn_norm.weight"] = np.ones(hidden, np.float32)
        tensors[f"blk.{i}.attn_q.weight"] = matrix(hidden, hidden)
        tensors[f"blk.{i}.attn_k.weight"] = matrix(hidden, hidden)
        tensors[f"blk.{i}.attn_v.weight"] = matrix(hidden, hidden)
        tensors[f"blk.{i}.attn_output.weight"] = matrix(hidden, hidden)
        tensors[f"blk.{i}.ffn_norm.weight"] = np.ones(hidden, np.float32)
        tensors[f"blk.{i}.ffn_gate.weight"] = matrix(ff, hidden)
        tensors[f"blk.{i}.ffn_up.weight"] = matrix(ff, hidden)
        tensors[f"blk.{i}.ffn_down.weight"] = matrix(hidden, ff)
    tensors["output_norm.weight"] = np.ones(hidden, np.float32)
    output = rng.standard_normal((n_vocab, hidden)).astype(np.float32) * 0.3
    output[:, 0] = 0.0
    to_byte = {c: b for b, c in alphabet.items()}
    for text, i in token_id.items():
        # Special tokens end a reply; other bytes than printable ASCII could split a UTF-8 character.
        suppress = not allow_eos if text in SPECIAL_TOKENS else not {to_byte[c] for c in text} <= _PRINTABLE
        if suppress:
            output[i, 0] = -1000.0
    tensors["output.weight"] = output

    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.partial")
    writer = gguf.GGUFWriter(str(partial), "llama")
    writer.add_name("potluck-tiny-random-llama")
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    writer.add_context_length(context_length)
    writer.add_embedding_length(hidden)
    writer.add_block_count(layers)
    writer.add_feed_forward_length(ff)
    writer.add_head_count(heads)
    writer.add_head_count_kv(heads)
    writer.add_rope_dimension_count(head_dim)
    writer.add_rope_freq_base(10000.0)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_vocab_size(n_vocab)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("gpt-2")
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges([f"{a} {b}" for a, b in learnt])
    writer.add_bos_token_id(token_id["<|endoftext|>"])
    writer.add_eos_token_id(token_id["<|im_end|>"])
    writer.add_eot_token_id(token_id["<|im_end|>"])
    writer.add_pad_token_id(token_id["<|endoftext|>"])
    writer.add_add_bos_token(False)
    writer.add_chat_template(CHATML_TEMPLATE)
    for name, tensor in tensors.items():
        writer.add_tensor(name, tensor)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    partial.replace(path)
    return path


# ---------------------------------------------------------------------- the server process


def serve(argv: Sequence[str]) -> int:
    """`serve`: run llama.cpp's server on a GGUF in the foreground until SIGTERM or SIGINT."""
    parser = argparse.ArgumentParser(prog="python -m testing.llama serve")
    parser.add_argument("-m", "--model", required=True, help="the .gguf file")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 (the default) picks a free port")
    parser.add_argument("--alias", default=None, help="the model id (default: the file's path)")
    parser.add_argument("--parallel", type=int, default=1, help="slots (concurrent requests)")
    parser.add_argument("--ctx", type=int, default=2048, help="context length per slot")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--embedding", action="store_true", help="serve embeddings (mean pooling) only")
    args = parser.parse_args(argv)

    # Block the signals before the server's threads start, so that they inherit the mask and only
    # sigwait() below sees SIGTERM: no handler runs in the middle of the C++ server.
    stop_signals = {signal.SIGTERM, signal.SIGINT}
    signal.pthread_sigmask(signal.SIG_BLOCK, stop_signals)

    import xllamacpp

    params = xllamacpp.CommonParams()
    params.model.path = args.model
    params.hostnames = [args.host]
    params.port = args.port
    params.n_parallel = args.parallel
    params.n_ctx = args.ctx * args.parallel  # the server splits n_ctx between its slots
    params.cpuparams.n_threads = args.threads
    params.cpuparams_batch.n_threads = args.threads
    params.endpoint_metrics = True
    params.endpoint_slots = True
    params.warmup = False
    if args.alias:
        params.model_alias = {args.alias}
    if args.embedding:
        params.embedding = True
        params.pooling_type = xllamacpp.llama_pooling_type.LLAMA_POOLING_TYPE_MEAN
    # The constructor returns once the model is loaded and the socket listens (on the real port when 0).
    server = xllamacpp.Server(params)
    sys.stdout.write(f"listening {str(server.listening_address).rstrip('/')}\n")
    sys.stdout.flush()
    signal.sigwait(stop_signals)
    del server  # joins the server's threads
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m testing.llama serve ...` or `python -m testing.llama make-gguf PATH`."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["serve"]:
        return serve(args[1:])
    if args[:1] == ["make-gguf"]:
        parser = argparse.ArgumentParser(prog="python -m testing.llama make-gguf")
        parser.add_argument("path", type=Path)
        parser.add_argument("--allow-eos", action="store_true")
        parser.add_argument("--seed", type=int, default=0)
        made = parser.parse_args(args[1:])
        make_tiny_gguf(made.path, allow_eos=made.allow_eos, seed=made.seed)
        return 0
    sys.stderr.write("usage: python -m testing.llama {serve,make-gguf} ...\n")
    return 2


# ---------------------------------------------------------------------- for tests


def require_xllamacpp() -> None:
    """Skip the calling test when xllamacpp is not installed; fail it instead under CI (CI=true)."""
    import pytest

    try:
        import xllamacpp  # noqa: F401
    except ImportError as exc:
        reason = f"xllamacpp is not installed ({exc}); `pip install xllamacpp` runs llama.cpp's real server"
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):  # as tests/conftest.py's IN_CI
            pytest.fail(reason)
        pytest.skip(reason)


def _read_line(stream: Any, timeout: float) -> str | None:
    """The first line of a pipe, or None if none came within `timeout` seconds."""
    lines: queue.Queue[str] = queue.Queue(maxsize=1)
    reader = threading.Thread(target=lambda: lines.put(stream.readline()), daemon=True)
    reader.start()
    try:
        return lines.get(timeout=timeout)
    except queue.Empty:
        return None


def _wait_healthy(url: str, deadline: float) -> None:
    host, _, port = url.removeprefix("http://").partition(":")
    while True:
        conn = http.client.HTTPConnection(host, int(port), timeout=max(0.1, deadline - time.monotonic()))
        try:
            conn.request("GET", "/health")
            if conn.getresponse().status == 200:
                return
        except OSError:
            pass  # not listening yet
        finally:
            conn.close()
        if time.monotonic() >= deadline:
            raise TimeoutError(f"{url}/health did not answer 200 in time")
        time.sleep(0.05)


@contextlib.contextmanager
def start_llama_server(
    tmp_dir: Path, alias: str = "tiny", parallel: int = 2, *, embedding: bool = False, seed: int = 0
) -> Iterator[str]:
    """Run llama.cpp's server on the tiny model in a subprocess; yield its base URL (`http://127.0.0.1:PORT`).

    The model is made once in `tmp_dir` (reused by later calls with the same directory and ``seed``; another
    seed makes other random weights: a model that answers differently under the same name). The server's log
    goes to a file in `tmp_dir`, quoted in the error if it does not start. Skips (fails under CI=true)
    when xllamacpp is missing.
    """
    require_xllamacpp()
    model = tmp_dir / ("tiny-llama.gguf" if seed == 0 else f"tiny-llama-{seed}.gguf")
    if not model.exists():
        make_tiny_gguf(model, seed=seed)
    log_path = tmp_dir / f"llama-server-{alias}-{os.getpid()}-{time.monotonic_ns()}.log"
    command = [sys.executable, "-m", "testing.llama", "serve", "-m", str(model), "--port", "0"]
    command += ["--alias", alias, "--parallel", str(parallel)] + (["--embedding"] if embedding else [])
    repo_root = Path(__file__).resolve().parents[1]
    with log_path.open("wb") as log:
        proc = subprocess.Popen(command, cwd=repo_root, stdout=subprocess.PIPE, stderr=log, text=True)
    assert proc.stdout is not None
    try:
        deadline = time.monotonic() + _STARTUP_TIMEOUT_S
        line = _read_line(proc.stdout, _STARTUP_TIMEOUT_S) or ""
        if not line.startswith("listening http://"):
            proc.kill()
            proc.wait()
            tail = log_path.read_text(errors="replace")[-4000:]
            raise RuntimeError(f"llama server did not start (exit {proc.returncode}): {line!r}\n{tail}")
        url = line.split()[1]
        _wait_healthy(url, deadline)
        yield url
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        proc.stdout.close()


if __name__ == "__main__":
    sys.exit(main())
