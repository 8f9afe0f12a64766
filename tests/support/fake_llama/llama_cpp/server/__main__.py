"""``python -m llama_cpp.server --port P ...``: answers ``/v1/models``, crashes on a completion."""

import argparse
import json
import os
import signal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):  # http.server's naming
        body = json.dumps({"object": "list", "data": [{"id": "smollm2", "object": "model"}]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self):
        print("chat completion requested: crashing like a bad CPU build", flush=True)
        os.kill(os.getpid(), signal.SIGSEGV)


parser = argparse.ArgumentParser()
parser.add_argument("--host", default="127.0.0.1")
parser.add_argument("--port", type=int, default=8000)
args, _ = parser.parse_known_args()
signal.signal(signal.SIGSEGV, signal.SIG_DFL)
ThreadingHTTPServer((args.host, args.port), Handler).serve_forever()
