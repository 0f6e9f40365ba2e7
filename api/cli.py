"""The `tasktrail` command line: serve the API; see and rebuild the read models."""

from __future__ import annotations

import argparse
import sys

import uvicorn

from api import projections_cli
from api.admin_token import ensure_admin_token, token_path
from api.settings import Settings


def serve(args: argparse.Namespace) -> int:
    settings = Settings()
    token, generated = ensure_admin_token(settings)
    if generated:
        # Printed once, on the run that generated it; afterwards it is in var/admin-token.
        print(
            f"tasktrail: generated the admin token (kept in {token_path(settings)}, mode 0600):\n"
            f"  {token}",
            flush=True,
        )
    uvicorn.run(
        "api.app:create_app",
        factory=True,
        host=args.host,
        port=args.port,
        workers=args.workers,
        log_level=settings.log_level,
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tasktrail", description="tasktrail audit service")
    commands = parser.add_subparsers(dest="command", required=True)
    serve_parser = commands.add_parser("serve", help="serve the HTTP API")
    serve_parser.add_argument("--host", default="127.0.0.1")
    serve_parser.add_argument("--port", type=int, default=8000)
    serve_parser.add_argument("--workers", type=int, default=1)
    serve_parser.set_defaults(handler=serve)
    projections_cli.register(commands)
    args = parser.parse_args(argv)
    return int(args.handler(args))


if __name__ == "__main__":
    sys.exit(main())
