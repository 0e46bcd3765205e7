"""The fake's HTTP side: XRPC under /xrpc/, test hooks under /_fake/, and the rest (OAuth's
/.well-known/ and /oauth/ endpoints, the PLC directory's /did:plc:..., /.well-known/atproto-did)
in oauth.py, routed by path whatever the Host.

Test hooks (never part of Bluesky's API; JSON in, JSON out):
  POST /_fake/accounts  {"handle", "password", "follows": [DID, ...]}  create or update
  POST /_fake/targets   {"handle", "followers"}   register a synthetic target
  POST /_fake/posts     {"author", "rkey", "likes", "reposts", "quotes", "replies"}   a post with
                        computed engagement (posts.py); answers its "uri" and "cid"
  POST /_fake/arrivals  {"subject", "kind", "per_minute", "backdate_every"}   new followers of a
                        target or engagers of a post from now on (arrivals.py); answers the
                        stream: how many arrived, the handles' pattern
  POST /_fake/reset     forget everything but the start-up settings and seeds
  POST /_fake/revoke    {"handle"}   revoke the account's app password
  POST /_fake/status    {"handle", "status": "takendown" | "deactivated" | "active"}
  POST /_fake/faults    {"fail_status", "fail_count", "stall_s", "stall_count", "drop_count",
                         "only": [NSID, ...]}   see faults.py
  GET|POST /_fake/config   read or change settings (config.py)
  GET /_fake/state[?handle=H]   per account: blocks held, duplicates, writes refused, 429s;
                        per client address: requests, writes, per-address 429s;
                        the posts and arrival streams; OAuth's counts
  GET|POST /_fake/oauth {"authorize_url", "granular_scopes", "expire_access_tokens": true,
                         "nonce_rotate": true}   OAuth settings; every access token expired
                        now; every DPoP nonce handed out void. Answers OAuth's counts
"""

import contextlib
import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

from .fake import FakeBluesky, Request
from .oauth import HttpRequest
from .posts import KIND_NAMES


class Handler(BaseHTTPRequestHandler):
    server_version = "fakesky/2"
    protocol_version = "HTTP/1.1"
    # Headers and body go out in two writes: without TCP_NODELAY, Nagle's algorithm and the
    # client's delayed ACK hold every answer back 40 ms.
    disable_nagle_algorithm = True

    def log_message(self, fmt, *args):  # quiet: tests read /_fake/state, not logs
        pass

    @property
    def fake(self) -> FakeBluesky:
        return self.server.fake

    def do_GET(self):
        self._dispatch("GET")

    def do_POST(self):
        self._dispatch("POST")

    def _read_raw(self):
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    @staticmethod
    def _json(raw):
        if not raw:
            return None
        try:
            return json.loads(raw)
        except ValueError:
            return _NOT_JSON

    def _reply(self, status, body=None, headers=None):
        data = b"" if body is None else json.dumps(body).encode()
        self.send_response(status)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        if body is not None:
            self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _drop(self):
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)

    def _reply_http(self, answer):
        self.send_response(answer.status)
        for name, value in answer.headers.items():
            self.send_header(name, value)
        if answer.content_type:
            self.send_header("Content-Type", answer.content_type)
        self.send_header("Content-Length", str(len(answer.body)))
        self.end_headers()
        self.wfile.write(answer.body)

    def _dispatch(self, method):
        url = urlsplit(self.path)
        query = parse_qs(url.query)
        raw = self._read_raw()
        if url.path.startswith("/_fake/"):
            return self._test_hook(method, url.path[len("/_fake/") :], query, self._json(raw))
        if not url.path.startswith("/xrpc/"):
            answer = self.fake.oauth.http(
                HttpRequest(
                    method, url.path, query, self.headers, raw, self.headers.get("Host", "")
                )
            )
            if answer is None:
                return self._reply(404, {"error": "NotFound", "message": "no such endpoint"})
            return self._reply_http(answer)
        body = self._json(raw)
        auth = self.headers.get("Authorization", "")
        scheme, token = None, None
        if auth.startswith("Bearer "):
            scheme, token = "Bearer", auth[len("Bearer ") :]
        elif auth[: len("DPoP ")].lower() == "dpop ":
            scheme, token = "DPoP", auth[len("DPoP ") :]
        request = Request(
            method=method,
            nsid=url.path[len("/xrpc/") :],
            params=query,
            body=None if body is _NOT_JSON else body,
            content_type=(self.headers.get("Content-Type") or "").lower(),
            token=token,
            client_ip=self.client_address[0],
            auth_scheme=scheme,
            dpop=tuple(self.headers.get_all("DPoP") or ()),
            path=url.path,
            atproto_proxy=self.headers.get("atproto-proxy"),
        )
        if body is _NOT_JSON:
            return self._reply(400, {"error": "InvalidRequest", "message": "Invalid JSON"})
        answer = self.fake.handle(request)
        if answer.drop:
            return self._drop()
        return self._reply(answer.status, answer.body, answer.headers)

    def _test_hook(self, method, name, query, body):
        fake = self.fake
        body = body if isinstance(body, dict) else {}
        try:
            if (name, method) == ("accounts", "POST"):
                account = fake.add_account(
                    body["handle"], body["password"], body.get("follows", ())
                )
                return self._reply(200, {"did": account.did, "handle": account.handle})
            if (name, method) == ("targets", "POST"):
                target = fake.add_target(body["handle"], int(body["followers"]))
                return self._reply(
                    200, {"did": target.did, "handle": target.handle, "followers": target.count}
                )
            if (name, method) == ("posts", "POST"):
                post = fake.add_post(
                    body["author"],
                    body["rkey"],
                    *(body.get(kind, 0) for kind in KIND_NAMES),
                )
                return self._reply(200, post.summary())
            if (name, method) == ("arrivals", "POST"):
                return self._reply(
                    200,
                    fake.add_arrivals(
                        body["subject"],
                        body["kind"],
                        body["per_minute"],
                        body.get("backdate_every", 0),
                    ),
                )
            if (name, method) == ("reset", "POST"):
                fake.reset()
                return self._reply(200, {})
            if (name, method) == ("revoke", "POST"):
                fake.revoke(body["handle"])
                return self._reply(200, {})
            if (name, method) == ("status", "POST"):
                fake.set_status(body["handle"], body.get("status"))
                return self._reply(200, {})
            if (name, method) == ("faults", "POST"):
                with fake.lock:
                    return self._reply(200, fake.faults.arm(body).report())
            if name == "config" and method in ("GET", "POST"):
                with fake.lock:
                    if method == "POST":
                        fake.config.update(body)
                    return self._reply(200, vars(fake.config))
            if name == "oauth" and method in ("GET", "POST"):
                with fake.lock:
                    if method == "POST":
                        fake.oauth.hook(body)
                    return self._reply(200, fake.oauth.report())
            if (name, method) == ("state", "GET"):
                handle = (query.get("handle") or [None])[0]
                return self._reply(200, fake.state(handle))
        except KeyError as error:
            return self._reply(404, {"error": "NotFound", "message": f"no such {error}"})
        except (TypeError, ValueError) as error:
            return self._reply(400, {"error": "InvalidRequest", "message": str(error)})
        return self._reply(404, {"error": "NotFound", "message": name})


_NOT_JSON = object()


class Server(ThreadingHTTPServer):
    daemon_threads = True
    # Many workers keep connections open; the default backlog of 5 refuses bursts.
    request_queue_size = 128


def serve(host="127.0.0.1", port=0, config=None, fake=None):
    """Start the server in a background thread (with a fake restored from a state file, or
    a new one); returns (server, base_url)."""
    server = Server((host, port), Handler)
    server.fake = fake or FakeBluesky(config)
    shown = "127.0.0.1" if host in ("0.0.0.0", "") else host  # noqa: S104
    shown = f"[{shown}]" if ":" in shown else shown
    url = f"http://{shown}:{server.server_address[1]}"
    server.fake.own_url = url
    threading.Thread(target=server.serve_forever, name="fakesky", daemon=True).start()
    return server, url
