"""A local OpenID configuration and JWKS server on 127.0.0.1, run in a thread by the auth tests.

It replaces the tenant's Entra ID endpoints in tests. It serves whatever JWKS a test publishes, counts
requests per endpoint, and can be set to respond with an error status or slowly.
"""

from __future__ import annotations

import json
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

CONFIG_PATH_TEMPLATE = "/{tenant}/v2.0/.well-known/openid-configuration"
JWKS_PATH = "/discovery/v2.0/keys"


class JwksServer:
    """OpenID configuration and JWKS endpoints for one tenant; use as a context manager."""

    def __init__(self, tenant_id: str) -> None:
        self.tenant_id = tenant_id
        self.error_status: int | None = None
        self.delay_seconds = 0.0
        self.jwks_uri_override: str | None = None
        self._jwks: object = {"keys": []}
        self._counts: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._released = threading.Event()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _make_handler(self))
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.05,), name="jwks-server", daemon=True)

    def __enter__(self) -> JwksServer:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def stop(self) -> None:
        """Stop the server, so later requests get connection refused. Safe to call twice."""
        self._released.set()
        if self._thread.is_alive():
            self._httpd.shutdown()
            self._thread.join(timeout=5)
        self._httpd.server_close()

    @property
    def base_url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host!s}:{port}"

    @property
    def openid_config_url(self) -> str:
        return self.base_url + CONFIG_PATH_TEMPLATE.format(tenant=self.tenant_id)

    @property
    def jwks_url(self) -> str:
        return self.base_url + JWKS_PATH

    def publish(self, jwks: object) -> None:
        """Serve ``jwks`` (any JSON value, so tests can publish broken documents) from now on."""
        with self._lock:
            self._jwks = jwks

    @property
    def config_requests(self) -> int:
        with self._lock:
            return self._counts["config"]

    @property
    def jwks_requests(self) -> int:
        with self._lock:
            return self._counts["jwks"]

    def _respond(self, path: str) -> tuple[int, bytes]:
        with self._lock:
            if path == CONFIG_PATH_TEMPLATE.format(tenant=self.tenant_id):
                self._counts["config"] += 1
                document: object = {
                    "issuer": f"https://login.microsoftonline.com/{self.tenant_id}/v2.0",
                    "jwks_uri": self.jwks_uri_override or self.jwks_url,
                }
            elif path == JWKS_PATH:
                self._counts["jwks"] += 1
                document = self._jwks
            else:
                document = None
            error_status = self.error_status
            delay = self.delay_seconds

        if delay:
            # An Event wait, not sleep, so stop() releases slow handlers at once.
            self._released.wait(delay)
        if document is None:
            return 404, b'{"error": "not found"}'
        if error_status is not None:
            return error_status, b'{"error": "server_error"}'
        return 200, json.dumps(document).encode()


def _make_handler(server: JwksServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            status, body = server._respond(self.path)
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler
