"""Real local servers for the alert channels: an HTTP server standing in for the Telegram Bot API and a webhook
receiver (answering 200, 500, or hanging), and an SMTP server (aiosmtpd)."""
from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from tests.ports import free_port


class HttpReceiver:
    """Records every POST as (path, json body). `mode`: ok (200), fail (500) or hang (no answer for 30 s)."""

    def __init__(self) -> None:
        self.posts: list[tuple[str, dict[str, Any]]] = []
        self.mode = "ok"
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - the stdlib's name
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])) or b"{}")
                if receiver.mode == "hang":
                    time.sleep(30)
                    return
                receiver.posts.append((self.path, body))
                self.send_response(500 if receiver.mode == "fail" else 200)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(b'{"ok": true}')

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def bodies(self) -> list[dict[str, Any]]:
        return [body for _, body in self.posts]

    def close(self) -> None:
        self.server.shutdown()


class SmtpReceiver:
    """aiosmtpd on 127.0.0.1, keeping every message it is handed."""

    def __init__(self) -> None:
        from aiosmtpd.controller import Controller
        from aiosmtpd.handlers import Message

        self.messages: list[Any] = []
        receiver = self

        class Keep(Message):
            def handle_message(self, message: Any) -> None:
                receiver.messages.append(message)

        self.port = free_port()  # aiosmtpd needs the port before it starts
        self.controller = Controller(Keep(), hostname="127.0.0.1", port=self.port)
        self.controller.start()

    def close(self) -> None:
        self.controller.stop()
