"""A tiny HTTP backend for the helios-server tests (stdlib only).

Prints `PORT <n>` on stdout once listening on 127.0.0.1:0, then serves:
  POST /rpc        method calls forwarded by helios
  POST /connect    connect hook: denies when the query contains "deny"
  POST /subscribe  subscribe hook: denies rooms starting with "secret:"
It exits when stdin closes (the test process ended) or after 120 s.
"""
import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def answer(self, status, body):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self):
        length = int(self.headers.get("content-length", "0"))
        body = json.loads(self.rfile.read(length) or b"{}")
        if self.path == "/connect":
            deny = "deny" in (body.get("query") or "")
            return self.answer(200, {"allow": not deny, "reason": "connect hook says no"})
        if self.path == "/subscribe":
            ok = not body.get("topic", "").startswith("secret:")
            return self.answer(200, {"allow": ok, "reason": "not for you"})
        method = body.get("method")
        if method == "order:create":
            return self.answer(200, {"data": {
                "id": 42, "echo": body.get("payload"), "user": body.get("user"),
                "starlingId": body.get("starlingId"),
                "hasRequestId": bool((body.get("meta") or {}).get("requestId")),
            }})
        if method == "order:refuse":
            return self.answer(200, {"error": {"code": "OUT_OF_STOCK", "message": "no more widgets"}})
        if method == "order:crash":
            return self.answer(500, {"oops": True})
        if method == "order:slow":
            time.sleep(3)
            return self.answer(200, {"data": "late"})
        return self.answer(404, {"error": {"code": "METHOD_NOT_FOUND", "message": "backend has no " + str(method)}})


def main():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    print("PORT", server.server_address[1], flush=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    deadline = time.time() + 120
    # Stop when the test closes our stdin, or at the deadline.
    def watch_stdin():
        sys.stdin.read()
        server.shutdown()
    t = threading.Thread(target=watch_stdin, daemon=True)
    t.start()
    while t.is_alive() and time.time() < deadline:
        time.sleep(0.2)


if __name__ == "__main__":
    main()
