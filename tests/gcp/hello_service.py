"""A tiny web service the stand-in "deploys" on Cloud Run in tests: it answers GET / with its
Cloud Run environment and the service account its metadata server names."""

import json
import os
import urllib.request
from http.server import BaseHTTPRequestHandler, HTTPServer


def metadata(path: str) -> str:
    url = f"http://{os.environ['GCE_METADATA_HOST']}/computeMetadata/v1/{path}"
    request = urllib.request.Request(url, headers={"Metadata-Flavor": "Google"})
    with urllib.request.urlopen(request, timeout=5) as response:
        return response.read().decode()


class Handler(BaseHTTPRequestHandler):
    def log_message(self, format, *args):
        pass

    def do_GET(self):
        body = json.dumps({
            "pid": os.getpid(),
            "env": {k: os.environ.get(k) for k in ("PORT", "K_SERVICE", "K_REVISION", "K_CONFIGURATION",
                                                   "GREETING", "SECRET_TOKEN", "BURLA_GCP_STANDIN")},
            "email": metadata("instance/service-accounts/default/email"),
            "region": metadata("instance/region"),
        }).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


HTTPServer(("127.0.0.1", int(os.environ["PORT"])), Handler).serve_forever()
