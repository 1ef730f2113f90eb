"""A webhook receiver for tests/tests/webhooks.rs: Python's own HTTP server. Every POST's
X-Quicft-Signature is checked against the HMAC-SHA256 of the body under SECRET; each request is
appended to OUT as one JSON line (event id, whether the signature matched, the body). Answers 200
when the signature matches, 401 otherwise.

  webhook_receiver.py PORT SECRET OUT    (PORT 0: a free port; prints the port)
"""

import hashlib
import hmac
import json
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

PORT, SECRET, OUT = int(sys.argv[1]), sys.argv[2].encode(), sys.argv[3]


class Handler(BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        want = hmac.new(SECRET, body, hashlib.sha256).hexdigest()
        ok = hmac.compare_digest(want, self.headers.get("X-Quicft-Signature", ""))
        with open(OUT, "a") as f:
            f.write(json.dumps({"id": self.headers.get("X-Quicft-Event-Id"), "sig_ok": ok,
                                "body": json.loads(body)}) + "\n")
        self.send_response(200 if ok else 401)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


server = ThreadingHTTPServer(("127.0.0.1", PORT), Handler)
print(server.server_address[1], flush=True)
server.serve_forever()
