"""Standalone server: ``python -m backend.mos.server --db mos.sqlite --port 8765``.

Why standalone as well as mountable: tests need a real process to kill -9, and a lab may run
the rater page on its own machine. The admin token comes from ``--admin-token`` or the
environment (``QLISTEN_MOS_ADMIN_TOKEN``); if neither is given a fresh one is printed once.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from fastapi import FastAPI

from .http import make_router
from .service import MosService
from .tokens import new_token


def create_app(
    db_path: str | Path,
    admin_token: str | None = None,
    runs_root: str | Path | None = None,
    base_url: str = "",
) -> FastAPI:
    """A FastAPI app serving only the /mos routes over the store at ``db_path``."""
    token = admin_token or os.environ.get("QLISTEN_MOS_ADMIN_TOKEN") or new_token()
    service = MosService(db_path, token, base_url=base_url, runs_root=runs_root)
    app = FastAPI(title="qlisten listening tests", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.mos = service
    app.include_router(make_router(service))
    return app


def main(argv: list[str] | None = None) -> None:
    import uvicorn

    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--db", required=True, help="SQLite file (created if missing)")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8765)
    ap.add_argument("--runs", default=None, help="folder holding runs/<run_id>/run.json")
    ap.add_argument("--admin-token", default=None)
    ap.add_argument("--base-url", default="", help="public URL prefix for rater links")
    args = ap.parse_args(argv)
    token = args.admin_token or os.environ.get("QLISTEN_MOS_ADMIN_TOKEN")
    if not token:
        token = new_token()
        print(f"admin token: {token}", flush=True)
    app = create_app(
        args.db,
        token,
        runs_root=args.runs,
        base_url=args.base_url or f"http://{args.host}:{args.port}",
    )
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
