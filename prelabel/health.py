"""``prelabel-health``: the container health check of the backend (exit 0 when /health says UP).

Kept free of heavy imports (a check runs every few seconds) and aware of basic auth, so a
backend protected by PRELABEL_BASIC_AUTH_* is still reported healthy.
"""

from __future__ import annotations

import base64
import json
import os
import sys
import urllib.request


def main() -> int:
    port = os.environ.get("PRELABEL_PORT", "9090")
    request = urllib.request.Request(f"http://127.0.0.1:{port}/health")
    user, password = os.environ.get("PRELABEL_BASIC_AUTH_USER"), os.environ.get("PRELABEL_BASIC_AUTH_PASSWORD")
    if user and password:
        request.add_header("Authorization", "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode())
    try:
        with urllib.request.urlopen(request, timeout=3) as response:  # loopback only
            return 0 if json.load(response).get("status") == "UP" else 1
    except (OSError, ValueError) as exc:
        print(f"unhealthy: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
