"""`python -m burla_backend_gcp.service`: the cluster service as Cloud Run runs its container
(and as the stand-in "deploys" it): listen on $PORT, configured by its environment."""

from __future__ import annotations

import logging
import os
import sys


def main() -> int:
    from aiohttp import web

    from .. import netguard
    from .app import make_app
    from .settings import ServiceSettings

    netguard.install_if_asked()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s burla-cluster %(levelname)s %(message)s", stream=sys.stderr)
    port = int(os.environ.get("PORT") or 8080)
    web.run_app(make_app(ServiceSettings.from_environment()), host="0.0.0.0" if os.environ.get("K_SERVICE") and not os.environ.get("BURLA_GCP_STANDIN") else "127.0.0.1",
                port=port, print=None, access_log=None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
