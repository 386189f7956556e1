"""An SMS provider's HTTP API on 127.0.0.1 for the delivery tests: keeps each request and
answers with a message id (`msg-1`, `msg-2`...)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class Provider(BaseHTTPRequestHandler):
    """The SMS provider's API: keeps each request, answers with a message id."""

    received: list[dict[str, Any]]

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.received.append({"path": self.path, "body": body, "headers": dict(self.headers)})
        answer = json.dumps({"id": f"msg-{len(self.received)}"}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextmanager
def sms_server() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """(messages URL, requests received) of a provider listening until the block ends."""
    received: list[dict[str, Any]] = []
    handler = type("Handler", (Provider,), {"received": received})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1/messages", received
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
