"""A scripted stand-in for an OpenAI-compatible /v1/chat/completions endpoint on 127.0.0.1.

Each request takes the next action from `script` (then `default`):
  ("ok", content)          200 with a chat completion whose message content is `content`
  ("status", code)         that HTTP status with an OpenAI-style error body
  ("echo_key", code)       that status, with the caller's bearer token echoed in the message
                           (as some providers do) to test that keys are scrubbed
  ("sleep", seconds, content)  wait (interruptibly), then answer like "ok"
Hostile endpoints (tests/test_judge_hostile.py):
  ("hang", seconds)        read the request, answer nothing for `seconds` (or until the server
                           stops), then close the connection without a response
  ("drop",)                close the connection at once, without a response
  ("drip", interval, content)  send a 200 header, then the completion body one byte every
                           `interval` seconds: the connection never idles for a full read timeout
  ("raw", code, text)      that status with a body that is not JSON (a proxy's error page)
Every request is recorded in `requests` as (path, headers dict with lowercased names, parsed JSON body);
`max_in_flight` is the most chat requests answered at once.

Bounded: the server listens on 127.0.0.1 only; every wait ends when the server stops; after
`max_requests` chat requests it answers 400 (not retried by any client), so a client stuck in
a loop ends, and `over_budget` counts those requests.
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class FakeOpenAIServer:
    def __init__(
        self, script=(), default=("ok", '{"Factuality Score": 7, "Justification": "ok"}'), max_requests: int = 1000
    ):
        self.script = deque(script)
        self.default = default
        self.max_requests, self.over_budget = max_requests, 0
        self.requests: list[tuple[str, dict, dict]] = []
        self.in_flight = self.max_in_flight = 0  # concurrent chat requests being answered
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.02,), daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._httpd.server_address[1]}/v1"

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()  # wakes sleeping handlers
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)

    def _next_action(self):
        with self._lock:
            if len(self.requests) > self.max_requests:
                self.over_budget += 1
                return ("status", 400)
            return self.script.popleft() if self.script else self.default

    def _handler(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output clean
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
                with server._lock:
                    server.requests.append((self.path, {k.lower(): v for k, v in self.headers.items()}, body))
                if self.path != "/v1/chat/completions":
                    return self._send(404, {"error": {"message": "not found", "type": "invalid_request_error"}})
                action = server._next_action()
                with server._lock:
                    server.in_flight += 1
                    server.max_in_flight = max(server.max_in_flight, server.in_flight)
                try:
                    self._act(action, body)
                finally:
                    with server._lock:
                        server.in_flight -= 1

            def _act(self, action, body):
                kind = action[0]
                if kind == "hang":
                    server._stop.wait(action[1])
                    self.close_connection = True
                    return None
                if kind == "drop":
                    self.close_connection = True
                    return None
                if kind == "drip":
                    return self._drip(action[1], json.dumps(_completion(body.get("model", "fake"), action[2])).encode())
                if kind == "raw":
                    return self._send(action[1], action[2].encode(), content_type="text/html")
                if kind == "sleep":
                    if server._stop.wait(action[1]):
                        return
                    kind, action = "ok", ("ok", action[2])
                if kind == "ok":
                    return self._send(200, _completion(body.get("model", "fake"), action[1]))
                if kind == "status":
                    return self._send(action[1], {"error": {"message": f"scripted {action[1]}", "type": "error"}})
                if kind == "echo_key":
                    token = self.headers.get("authorization", "").removeprefix("Bearer ")
                    return self._send(
                        action[1],
                        {"error": {"message": f"Incorrect API key provided: {token}", "type": "invalid_request_error"}},
                    )
                raise ValueError(f"unknown scripted action {action!r}")

            def _drip(self, interval, data):
                try:
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.flush()
                    for i in range(
                        len(data)
                    ):  # bounded: one byte per interval, until the body ends or the server stops
                        if server._stop.wait(interval):
                            break
                        self.wfile.write(data[i : i + 1])
                        self.wfile.flush()
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up
                self.close_connection = True

            def _send(self, code, payload, content_type="application/json"):
                data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
                try:
                    self.send_response(code)
                    self.send_header("Content-Type", content_type)
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (timeout test)

        return Handler


def _completion(model: str, content: str) -> dict:
    return {
        "id": "chatcmpl-fake",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": content}}],
        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
    }
