"""A fake OpenAI-compatible server on 127.0.0.1 with switchable faults, for the fault table.

    with FakeOpenAIServer() as server:            # a free port, a daemon thread
        server.faults = ["500", "ok"]             # one fault per completion request, in order
        server.default = "ok"                     # then this one for every further request
        server.kill()                             # die mid-run: stop listening, reset open connections
        ... OpenAIBackend(base_url=server.url) ...

Completion requests answer "The answer is 42. \\boxed{42}" for every one of the `n` choices, so a
gsm8k or math500 run through the CLI finishes. Each fault is one way a real server (or the proxy in
front of it) misbehaves; FAULTS lists them. The server stops by itself after `lifetime` seconds
whatever the test does, and a hang waits at most `hang_seconds` (or until the server stops).

A request with `"stream": true` is answered as vllm serve streams it: server-sent events, one chunk per
token with its logprobs (the chat endpoint first sends the role), `stream_options` usage (on every chunk
with `continuous_usage_stats`), then `data: [DONE]`. The text is ANSWER in four tokens, then " more" for
each token beyond `stream_tokens` = 4. Before each token the server waits up to `stream_delay` seconds for
the client to hang up and stops generating when it does, as vllm serve aborts a request whose client
disconnected; `streams` records each stream (tokens sent, disconnected or finished). STREAM_FAULTS are
faults only a stream can have; FAULTS served to a stream answer as they do without one.
"""

from __future__ import annotations

import json
import select
import socket
import struct
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

ANSWER = "The answer is 42. \\boxed{42}"

FAULTS = {
    "ok": "a correct answer",
    "truncated": "JSON cut off half-way (Content-Length matches the cut body)",
    "cut-off": "Content-Length promises more than is sent, then the connection closes",
    "not-json": "status 200 with a plain-text body",
    "html": "status 200 with an HTML page (a proxy's error page)",
    "empty": "status 200 with an empty body",
    "no-choices": "JSON with `choices: []`",
    "fewer-choices": "JSON with one choice whatever n was asked",
    "no-text": "choices without text/message",
    "not-object": "a JSON array instead of an object",
    "bad-logprobs": "logprobs of the wrong shape",
    "500": "HTTP 500",
    "429": "HTTP 429 with Retry-After",
    "400": "HTTP 400 with a multi-line body",
    "hang": "accepts the request and never answers (up to hang_seconds)",
    "reset": "closes the connection without answering (TCP reset)",
    "wrong-content-type": "a correct JSON answer labelled text/plain",
    "huge": "a body of huge_bytes bytes",
}

# Faults of a streamed answer, served after FAULT_AT token chunks (a non-stream request is refused with 400).
STREAM_FAULTS = {
    "sse-garbage": "a line that is not a server-sent event",
    "sse-bad-json": "a data line whose JSON is cut off",
    "sse-no-choices": "a chunk without `choices`",
    "sse-early-done": "[DONE] before any chunk has a finish_reason",
    "sse-error": "an error object, as vllm serve sends when generation fails, then [DONE]",
    "sse-cut": "the connection closes without ending the chunked body",
    "sse-no-logprobs": "every token chunk without logprobs (from the first token on)",
    "sse-usage-mismatch": "a final usage counting one completion token more than were streamed",
}
FAULT_AT = 2


@dataclass
class StreamRecord:
    """What the fake server did with one streamed request."""

    path: str
    fault: str
    sent: int = 0               # token chunks written
    disconnected: bool = False  # the client hung up before the end; no token was generated after that
    finished: bool = False      # the last token and the usage were written; [DONE] follows


def stream_pieces(tokens: int) -> list[str]:
    """The streamed text, one piece per token: ANSWER in four pieces, then " more" per further token."""
    q = -(-len(ANSWER) // 4)
    return [ANSWER[i * q:(i + 1) * q] for i in range(4)][:tokens] + [" more"] * max(tokens - 4, 0)


def token_chunk(payload: dict[str, Any], chat: bool, piece: str, finish: str | None,
                logprobs: bool = True) -> dict[str, Any]:
    """One token's chunk: its text and the same logprobs as `completion` gives each token."""
    k = int(payload.get("top_logprobs") or 0) if chat else int(payload.get("logprobs") or 0)
    top = [("x", -0.5), *[(f"y{j}", -1.5 - j) for j in range(1, k)]]
    choice: dict[str, Any] = {"index": 0, "finish_reason": finish}
    if chat:
        choice["delta"] = {"content": piece}
        entry: dict[str, Any] = {"token": "x", "logprob": -0.5}
        if k:
            entry["top_logprobs"] = [{"token": t, "logprob": lp} for t, lp in top]
        choice["logprobs"] = {"content": [entry]} if logprobs else None
    else:
        choice["text"] = piece
        lps: dict[str, Any] = {"tokens": ["x"], "token_logprobs": [-0.5]}
        if k:
            lps["top_logprobs"] = [dict(top)]
        choice["logprobs"] = lps if logprobs else None
    return {"id": "fake", "object": "chat.completion.chunk" if chat else "text_completion", "choices": [choice]}


def completion(payload: dict[str, Any], chat: bool, choices: int | None = None) -> dict[str, Any]:
    n = int(payload.get("n") or 1) if choices is None else choices
    # top-k log-probabilities when asked (a judge's request): chat `top_logprobs: k`, completions `logprobs: k`
    k = int(payload.get("top_logprobs") or 0) if chat else int(payload.get("logprobs") or 0)
    alternatives = [(f"y{j}", -1.5 - j) for j in range(1, k)]
    out = []
    for i in range(n):
        choice: dict[str, Any] = {"index": i, "finish_reason": "stop"}
        if chat:
            choice["message"] = {"role": "assistant", "content": ANSWER}
            token: dict[str, Any] = {"token": "x", "logprob": -0.5}
            if k:
                token["top_logprobs"] = [{"token": t, "logprob": lp} for t, lp in [("x", -0.5), *alternatives]]
            choice["logprobs"] = {"content": [token] * 4}
        else:
            choice["text"] = ANSWER
            choice["logprobs"] = {"token_logprobs": [-0.5] * 4}
            if k:
                choice["logprobs"]["top_logprobs"] = [{"x": -0.5, **dict(alternatives)}] * 4
        out.append(choice)
    return {"id": "fake", "object": "chat.completion" if chat else "text_completion", "choices": out,
            "usage": {"prompt_tokens": 10, "completion_tokens": 4 * n}}


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False

    def handle_error(self, request, client_address) -> None:  # a client that hangs up is part of the test
        pass


class FakeOpenAIServer:
    def __init__(self, *, lifetime: float = 60.0, hang_seconds: float = 5.0, huge_bytes: int = 3 * 2**20,
                 retry_after: str = "0.2", model: str = "fake-model"):
        self.faults: list[str] = []
        self.default = "ok"
        self.models_fault = "ok"
        self.lifetime = lifetime
        self.hang_seconds = hang_seconds
        self.huge_bytes = huge_bytes
        self.retry_after = retry_after
        self.model = model
        self.requests: list[tuple[float, str, str]] = []  # (time, path, fault served)
        self.stream_tokens = 4
        self.stream_delay = 0.0
        self.streams: list[StreamRecord] = []
        self.bodies: list[dict[str, Any]] = []  # each completion request's JSON body, in order
        self._connections: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self._server = _QuietServer(("127.0.0.1", 0), self._handler_class())
        self.port = self._server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/v1"
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        daemon=True, name=f"fake-openai-{self.port}")
        self._timer = threading.Timer(lifetime, self.stop)
        self._timer.daemon = True

    # ---- lifecycle ----------------------------------------------------------------------------
    def start(self) -> FakeOpenAIServer:
        self._thread.start()
        self._timer.start()
        return self

    def stop(self) -> None:
        if self._stopped.is_set():
            return
        self._stopped.set()  # releases hangs
        self._timer.cancel()
        self._server.shutdown()
        self._server.server_close()

    def kill(self) -> None:
        """Die as a killed process does: stop listening and reset every open connection (requests in flight
        and idle keep-alive connections alike)."""
        self.stop()
        with self._lock:
            connections = list(self._connections)
        for conn in connections:
            try:
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def __enter__(self) -> FakeOpenAIServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # ---- what to serve -------------------------------------------------------------------------
    def set(self, *faults: str, default: str = "ok") -> None:
        for f in (*faults, default):
            if f not in FAULTS and f not in STREAM_FAULTS:
                raise ValueError(f"unknown fault {f!r}")
        with self._lock:
            self.faults = list(faults)
            self.default = default
            self.requests.clear()
            self.streams.clear()
            self.bodies.clear()

    def _next_fault(self, path: str) -> str:
        with self._lock:
            fault = self.faults.pop(0) if self.faults else self.default
            self.requests.append((time.monotonic(), path, fault))
            return fault

    @property
    def completion_requests(self) -> list[tuple[float, str, str]]:
        with self._lock:
            return [r for r in self.requests if r[1].endswith("completions")]

    def _handler_class(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:  # quiet
                pass

            def setup(self) -> None:
                super().setup()
                with server._lock:
                    server._connections.add(self.connection)

            def finish(self) -> None:
                with server._lock:
                    server._connections.discard(self.connection)
                try:
                    super().finish()
                except OSError:  # a killed server's reset connection
                    pass

            def _send(self, status: int, body: bytes, content_type: str = "application/json",
                      headers: dict[str, str] | None = None, length: int | None = None) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body) if length is None else length))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(body)
                self.wfile.flush()

            def _json(self, obj: Any, status: int = 200, content_type: str = "application/json") -> None:
                self._send(status, json.dumps(obj).encode(), content_type)

            def _reset(self) -> None:
                self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                self.connection.close()
                self.close_connection = True

            def do_GET(self) -> None:
                if not self.path.rstrip("/").endswith("/models"):
                    self._json({"error": "not found"}, 404)
                    return
                if server.models_fault != "ok":
                    self._serve_fault(server.models_fault, {}, chat=False)
                    return
                self._json({"object": "list", "data": [{"id": server.model, "object": "model"}]})

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                payload = json.loads(self.rfile.read(length) or b"{}")
                if not self.path.endswith("completions"):
                    self._json({"error": "not found"}, 404)
                    return
                with server._lock:
                    server.bodies.append(payload)
                fault = server._next_fault(self.path)
                chat = self.path.endswith("chat/completions")
                if fault in STREAM_FAULTS and not payload.get("stream"):
                    self._json({"error": f"the fault {fault} needs a request with stream: true"}, 400)
                elif payload.get("stream") and (fault == "ok" or fault in STREAM_FAULTS):
                    self._stream(payload, chat, fault)
                else:
                    self._serve_fault(fault, payload, chat=chat)

            def _client_gone(self, wait: float) -> bool:
                """Whether the client hung up, waiting up to `wait` seconds for it (uvicorn tells vllm serve
                the same way, with an http.disconnect, and vllm aborts the request)."""
                readable, _, _ = select.select([self.connection], [], [], wait)
                if not readable:
                    return False
                try:
                    return self.connection.recv(1, socket.MSG_PEEK) == b""
                except OSError:
                    return True

            def _event(self, data: str | dict[str, Any]) -> None:
                text = data if isinstance(data, str) else f"data: {json.dumps(data)}\n\n"
                body = text.encode()
                self.wfile.write(b"%x\r\n%s\r\n" % (len(body), body))
                self.wfile.flush()

            def _stream(self, payload: dict[str, Any], chat: bool, fault: str) -> None:
                record = StreamRecord(self.path, fault)
                with server._lock:
                    server.streams.append(record)
                options = payload.get("stream_options") or {}
                continuous = bool(options.get("include_usage") and options.get("continuous_usage_stats"))
                pieces = stream_pieces(server.stream_tokens)
                self.close_connection = True
                try:
                    self.send_response(200)
                    self.send_header("Content-Type", "text/event-stream; charset=utf-8")
                    self.send_header("Transfer-Encoding", "chunked")
                    self.end_headers()
                    if chat:  # vllm serve's first chunk: the role, no token
                        first: dict[str, Any] = {"id": "fake", "object": "chat.completion.chunk", "choices": [
                            {"index": 0, "delta": {"role": "assistant", "content": ""}, "logprobs": None,
                             "finish_reason": None}]}
                        if continuous:
                            first["usage"] = {"prompt_tokens": 10, "completion_tokens": 0, "total_tokens": 10}
                        self._event(first)
                    for i, piece in enumerate(pieces):
                        if self._client_gone(server.stream_delay):
                            record.disconnected = True
                            return
                        if i == FAULT_AT and self._stream_fault(fault):
                            return
                        last = i == len(pieces) - 1
                        chunk = token_chunk(payload, chat, piece, "stop" if last else None,
                                            logprobs=fault != "sse-no-logprobs")
                        if continuous:
                            chunk["usage"] = {"prompt_tokens": 10, "completion_tokens": i + 1,
                                              "total_tokens": 11 + i}
                        self._event(chunk)
                        record.sent += 1
                    if options.get("include_usage"):
                        used = len(pieces) + (fault == "sse-usage-mismatch")
                        self._event({"id": "fake", "choices": [], "usage": {
                            "prompt_tokens": 10, "completion_tokens": used, "total_tokens": 10 + used}})
                    # marked before [DONE] goes out: a client that has read [DONE] sees the record finished
                    record.finished = True
                    self._event("data: [DONE]\n\n")
                    self.wfile.write(b"0\r\n\r\n")
                    self.wfile.flush()
                except (BrokenPipeError, ConnectionResetError):
                    record.disconnected = True

            def _stream_fault(self, fault: str) -> bool:
                """Serve a stream fault after FAULT_AT tokens; True when the stream ends there."""
                if fault == "sse-garbage":
                    self._event("this line is not an event\n\n")
                elif fault == "sse-bad-json":
                    self._event('data: {"choices": [{"index": 0, "text\n\n')
                elif fault == "sse-no-choices":
                    self._event({"id": "fake", "object": "chat.completion.chunk"})
                elif fault == "sse-early-done":
                    self._event("data: [DONE]\n\n")
                elif fault == "sse-error":
                    self._event({"error": {"message": "EngineDeadError: the engine died", "code": 500}})
                    self._event("data: [DONE]\n\n")
                elif fault == "sse-cut":  # a FIN, not a reset: the client reads the tokens sent, then the cut
                    self.connection.shutdown(socket.SHUT_WR)
                    return True
                else:
                    return False
                self.wfile.write(b"0\r\n\r\n")
                self.wfile.flush()
                return True

            def _serve_fault(self, fault: str, payload: dict, chat: bool) -> None:
                good = json.dumps(completion(payload, chat)).encode()
                if fault == "ok":
                    self._send(200, good)
                elif fault == "truncated":
                    self._send(200, good[: len(good) // 2])
                elif fault == "cut-off":
                    self._send(200, good[: len(good) // 2], length=len(good))
                    self._reset()
                elif fault == "not-json":
                    self._send(200, b"Internal error, please try again later", "text/plain")
                elif fault == "html":
                    self._send(200, b"<html>\n<head><title>502 Bad Gateway</title></head>\n"
                                    b"<body>nginx</body>\n</html>\n", "text/html")
                elif fault == "empty":
                    self._send(200, b"")
                elif fault == "no-choices":
                    self._json({"choices": [], "usage": {}})
                elif fault == "fewer-choices":
                    self._json(completion(payload, chat, choices=1))
                elif fault == "no-text":
                    self._json({"choices": [{"index": 0, "finish_reason": "stop"}]})
                elif fault == "not-object":
                    self._json([completion(payload, chat)])
                elif fault == "bad-logprobs":
                    body = completion(payload, chat)
                    for c in body["choices"]:
                        c["logprobs"] = {"content": [{"token": "x"}], "token_logprobs": ["high"]}
                    self._json(body)
                elif fault == "500":
                    self._send(500, b"Internal Server Error", "text/plain")
                elif fault == "429":
                    self._send(429, b'{"error": "rate limited"}', headers={"Retry-After": server.retry_after})
                elif fault == "400":
                    self._send(400, b'{"error": {"message": "max_tokens is too large",\n "code": 400}}\n')
                elif fault == "hang":
                    server._stopped.wait(server.hang_seconds)
                    self._reset()
                elif fault == "reset":
                    self._reset()
                elif fault == "wrong-content-type":
                    self._send(200, good, "text/plain; charset=utf-8")
                elif fault == "huge":
                    self._send(200, b"[" + b" " * server.huge_bytes + b"]")
                else:
                    raise ValueError(fault)

        return Handler
