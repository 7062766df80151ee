"""A mutating webhook that changes nothing and keeps what it was sent.

For the end-to-end tests: registered to run before spark-admission (webhook configurations are
called in name order), it records each AdmissionReview body exactly as the apiserver sent it,
so a test can compare what spark-admission stored against the object before any mutation.

    python3 capture_webhook.py PORT CERT KEY OUT_DIR

Answers every POST with allowed: true and writes the body to OUT_DIR/<n>.json (n counts from
1). Prints "listening" once it accepts connections. Standard library only.
"""

import http.server
import json
import os
import ssl
import sys
import threading


def main() -> int:
    port, cert, key, out_dir = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
    os.makedirs(out_dir, exist_ok=True)
    lock = threading.Lock()
    count = [0]

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            with lock:
                count[0] += 1
                path = os.path.join(out_dir, "%d.json" % count[0])
            with open(path + ".tmp", "wb") as f:
                f.write(body)
            os.rename(path + ".tmp", path)
            uid = json.loads(body)["request"]["uid"]
            answer = json.dumps(
                {
                    "apiVersion": "admission.k8s.io/v1",
                    "kind": "AdmissionReview",
                    "response": {"uid": uid, "allowed": True},
                }
            ).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    print("listening", flush=True)
    server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
