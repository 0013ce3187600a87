"""The qlisten web app: Gradio Blocks (Compare · Inspect · Runs · Listen) mounted at "/" on the
FastAPI app that also serves the listening-test pages (/mos/...), on one port.

    python app.py          # or: python -m ui.app
    GRADIO_SERVER_NAME=0.0.0.0 GRADIO_SERVER_PORT=7860 QLISTEN_HOME=/data python app.py

Why one FastAPI app rather than ``demo.launch()``: raters of a listening test get plain pages
under /mos (no Gradio), admins use the Listen tab, and both must share the same store and port
(a Hugging Face Space exposes one). Gradio is mounted with ``gr.mount_gradio_app`` and served
by uvicorn directly.

Hosting choices: analytics off (``GRADIO_ANALYTICS_ENABLED=False`` before gradio is imported),
no share link, no server-side rendering (it would need a Node server), nothing fetched at
start. The Gradio queue only schedules page sessions that *wait* on jobs (the work runs in
``backend.api``'s own queue, one worker by default, which survives restarts), so its limits
are about memory and fairness: ``MAX_QUEUE`` waiting events at most.

Environment: ``QLISTEN_HOME`` (store root; default ``<repo>/.qlisten``), ``GRADIO_SERVER_NAME``
/ ``GRADIO_SERVER_PORT``, ``QLISTEN_MOS_ADMIN_TOKEN`` (Listen tab; printed once if unset),
``QLISTEN_WORKERS`` (job workers, default 1), ``QLISTEN_PREWARM_EXAMPLES=1`` (queue the Compare
examples at start, so their first click is already answered from the run store).
"""

from __future__ import annotations

import os

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import logging  # noqa: E402 - after the analytics switch, which gradio reads at import
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import gradio as gr  # noqa: E402

from ui.api_endpoints import register_api  # noqa: E402
from ui.compare_tab import build_compare_tab  # noqa: E402
from ui.inspect_tab import build_inspect_tab  # noqa: E402
from ui.runs_tab import build_runs_tab  # noqa: E402

log = logging.getLogger(__name__)

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 7860
MAX_QUEUE = 64
TITLE = "qlisten — quantize and listen"
CSS = """
.pixelated img { image-rendering: pixelated; width: 100% !important; height: 100% !important;
                 object-fit: contain; }
#status, #runs-message { min-height: 1.5em; }
"""
INTRO = ("Quantize a diffusion model, generate with the **same seeds** in floating point (FP) and "
         "quantized, and compare by ear and by eye. Audio is served as written, at its true level "
         "(no normalisation).")


def _api_root(api: Any) -> Path | None:
    root = getattr(api, "root", None)
    return Path(root) if root is not None else None


def build_blocks(api: Any, mos_service: Any = None, runs_root: str | Path | None = None) -> gr.Blocks:
    """The Gradio UI over ``api`` (a started ``backend.api.QlistenAPI``).

    ``mos_service`` (``backend.mos.service.MosService``) adds the Listen tab; without it the tab
    says how to enable it. The queue is configured here, so the result is ready to mount.
    """
    with gr.Blocks(title=TITLE, analytics_enabled=False) as demo:
        gr.Markdown(f"## {TITLE}\n{INTRO}")
        current_run = gr.State("")
        with gr.Tabs(elem_id="tabs") as tabs:
            with gr.Tab("Compare", id="compare", elem_id="tab-compare"):
                compare = build_compare_tab(api, current_run)
            with gr.Tab("Inspect", id="inspect", elem_id="tab-inspect"):
                inspect = build_inspect_tab(api, current_run)
            with gr.Tab("Runs", id="runs", elem_id="tab-runs") as runs_tab:
                runs = build_runs_tab(api, current_run, tabs, compare)
            with gr.Tab("Listen", id="listen", elem_id="tab-listen"):
                if mos_service is not None:
                    from ui.listen_tab import build_listen_tab

                    build_listen_tab(mos_service, runs_root)
                else:
                    gr.Markdown("Listening tests are served with the full app (`python app.py`).")
        runs_tab.select(runs["on_refresh"], None, [runs["table"], runs["pick"]], api_visibility="private")
        demo.load(runs["on_refresh"], None, [runs["table"], runs["pick"]], api_visibility="private")
        register_api(api)
    demo.queue(max_size=MAX_QUEUE, default_concurrency_limit=2)
    demo.qlisten = {"compare": compare, "inspect": inspect, "runs": runs, "current_run": current_run}
    return demo


def build_app(api: Any, root: str | Path | None = None, admin_token: str | None = None):
    """FastAPI app: /mos/... (listening tests) + the Gradio UI at "/". Returns ``(app, demo)``."""
    from backend.mos.server import create_app

    root = Path(root or _api_root(api) or ".qlisten")
    runs_root = root / "runs"
    runs_root.mkdir(parents=True, exist_ok=True)
    app = create_app(root / "mos.sqlite", admin_token, runs_root=runs_root)
    demo = build_blocks(api, app.state.mos, runs_root)
    app = gr.mount_gradio_app(app, demo, path="/", footer_links=["api"], allowed_paths=[str(root)],
                              ssr_mode=False, show_error=False, css=CSS)
    return app, demo


class BackgroundServer:
    """The full app served by uvicorn on a thread of this process (tests, benchmarks).

        with BackgroundServer(api, port=free_port()) as url:
            Client(url).predict(..., api_name="/submit")

    Why a thread, not a subprocess: the caller keeps the same ``api`` object (and its store)
    to check against, and startup is seconds shorter. ``api`` is not stopped on exit.
    """

    def __init__(self, api: Any, host: str = "127.0.0.1", port: int = 0, root: str | Path | None = None,
                 admin_token: str | None = None, timeout: float = 60.0) -> None:
        import socket

        if not port:
            with socket.socket() as s:
                s.bind((host, 0))
                port = s.getsockname()[1]
        self.api, self.host, self.port, self.timeout = api, host, int(port), timeout
        self.app, self.demo = build_app(api, root=root, admin_token=admin_token)
        self.url = f"http://{host}:{self.port}/"
        self._server: Any = None
        self._thread: Any = None

    def __enter__(self) -> str:
        import threading
        import time

        import uvicorn

        config = uvicorn.Config(self.app, host=self.host, port=self.port, log_level="warning", access_log=False,
                                timeout_graceful_shutdown=3)  # clients may hold event streams open
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, name="qlisten-http", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + self.timeout
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"the app did not start on {self.url}")
            time.sleep(0.05)
        return self.url

    def __exit__(self, *exc: object) -> None:
        if self._server is not None:
            self._server.should_exit = True
            self._thread.join(timeout=15)


def make_api(root: str | Path | None = None) -> Any:
    """The app's ``QlistenAPI``, started (crash recovery + worker thread)."""
    from backend.api import QlistenAPI

    api = QlistenAPI(root=root, workers=int(os.environ.get("QLISTEN_WORKERS", "1")))
    api.start()
    return api


def launch(host: str | None = None, port: int | None = None, root: str | Path | None = None) -> None:
    """Serve until interrupted on ``GRADIO_SERVER_NAME``:``GRADIO_SERVER_PORT`` (default 127.0.0.1:7860)."""
    import uvicorn

    from backend.mos.tokens import new_token

    host = host or os.environ.get("GRADIO_SERVER_NAME") or DEFAULT_HOST
    port = int(port or os.environ.get("GRADIO_SERVER_PORT") or DEFAULT_PORT)
    token = os.environ.get("QLISTEN_MOS_ADMIN_TOKEN")
    if not token:
        token = new_token()
        print(f"Listen tab admin token (set QLISTEN_MOS_ADMIN_TOKEN to choose one): {token}", flush=True)
    api = make_api(root)
    app, _ = build_app(api, root=root, admin_token=token)
    if os.environ.get("QLISTEN_PREWARM_EXAMPLES", "") in ("1", "true", "yes"):
        from ui.compare_tab import prewarm_examples

        print(f"prewarming {len(prewarm_examples(api))} examples in the job queue", flush=True)
    print(f"qlisten on http://{host}:{port}/ (store: {_api_root(api)})", flush=True)
    try:
        uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False)
    finally:
        api.stop()


if __name__ == "__main__":
    launch()
