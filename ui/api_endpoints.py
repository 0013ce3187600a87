"""Named Gradio API endpoints over ``backend.api``, for ``gradio_client`` and scripts.

    from gradio_client import Client
    c = Client("http://127.0.0.1:7860/")
    job = c.predict({"model": "tiny-sounds", "inputs": ["a high beep"], "seeds": [0], "steps": 8,
                     "recipe": {"w_bits": 8, "a_bits": 8, "method": "ptq"}}, api_name="/submit")
    c.predict(job, 600, api_name="/wait")      # -> status once finished
    c.predict(job, api_name="/result")         # -> the result dict (paths relative to the run folder)
    c.predict(job, api_name="/artifacts")      # -> a local copy of the run's zip

Why endpoints of their own rather than the page's events: the page's handlers take widget
values and return widget updates; a client wants the same request JSON the Python API takes,
and a job id that survives its connection. These are thin: every rule lives in backend.api.
Bad requests come back as a ``gradio_client`` error carrying the API's one-line message.
(No ``from __future__ import annotations`` here: ``gr.api`` reads the live type hints.)
"""

import tempfile
from pathlib import Path
from typing import Any

import gradio as gr

from ui.compare_tab import request_error_types
from ui.runs_tab import zip_run

WAIT_CONCURRENCY = 8  # clients blocked in /wait or /run at once (they only poll the store)
MAX_CLIENT_WAIT_S = 3600.0


def register_api(api: Any) -> None:
    """Add the endpoints to the Blocks being built (call inside ``with gr.Blocks()``)."""
    errors = request_error_types()

    def _user_error(exc: BaseException) -> gr.Error:
        return gr.Error(str(getattr(exc, "message", None) or exc))

    def submit(request: dict) -> str:
        """Queue a comparison request; returns its job id (an identical finished request returns its run)."""
        try:
            return api.submit(request)
        except errors as exc:
            raise _user_error(exc) from exc

    def status(job_id: str) -> dict:
        """The job's status: status, stage, progress (0..1), message, error."""
        try:
            return _plain(api.status(job_id))
        except errors as exc:
            raise _user_error(exc) from exc
        except (KeyError, LookupError) as exc:
            raise gr.Error(f"unknown job {job_id!r}") from exc

    def wait(job_id: str, timeout_s: float = 600.0) -> dict:
        """Block until the job is finished (or ``timeout_s``, at most an hour); returns its status."""
        try:
            return _plain(api.wait(job_id, timeout=min(float(timeout_s), MAX_CLIENT_WAIT_S)))
        except TimeoutError as exc:
            raise gr.Error(str(exc)) from exc
        except errors as exc:
            raise _user_error(exc) from exc
        except (KeyError, LookupError) as exc:
            raise gr.Error(f"unknown job {job_id!r}") from exc

    def result(job_id: str) -> dict:
        """The finished job's result (FP / quantized file names relative to the run, scores, size, speed)."""
        try:
            res = api.result(job_id)
            st = api.status(job_id)
        except errors as exc:
            raise _user_error(exc) from exc
        except (KeyError, LookupError) as exc:
            raise gr.Error(f"unknown job {job_id!r}") from exc
        if res is None:
            raise gr.Error(f"job {job_id} has no result: it is {st['status']}"
                           + (f" ({st['error']})" if st.get("error") else ""))
        return res

    def run(request: dict, timeout_s: float = 600.0) -> dict:
        """Submit, wait and return the result in one call."""
        job = submit(request)
        st = wait(job, timeout_s)
        if st["status"] != "done":
            raise gr.Error(f"job {job} {st['status']}: {st.get('error') or st.get('message') or ''}")
        return result(job)

    def artifacts(job_id: str) -> gr.FileData:
        """The run folder (audio / images, run.json, report.json, telemetry) as one zip file."""
        try:
            path = zip_run(api.run_dir(job_id), job_id, Path(tempfile.mkdtemp(prefix="qlisten_zip_")))
        except errors as exc:
            raise _user_error(exc) from exc
        except (KeyError, LookupError, FileNotFoundError) as exc:
            raise gr.Error(f"no artifacts for job {job_id!r}: {exc}") from exc
        return gr.FileData(path=str(path), orig_name=path.name)

    def cancel(job_id: str) -> str:
        """Cancel a queued job, or ask a running one to stop; returns the status right after."""
        return api.cancel(job_id)

    def models() -> list:
        """The models: name, kind, conditioning, defaults, availability here (and why not)."""
        return api.models()

    def methods() -> list:
        """The quantization methods: bits each supports and its settings with defaults."""
        return api.methods()

    def runs(limit: int = 50) -> list:
        """Stored runs, newest first."""
        return [_plain(r) for r in api.list_runs(limit=int(limit))]

    for fn in (submit, status, result, cancel, models, methods, runs):
        gr.api(fn, api_name=fn.__name__, concurrency_limit=None)
    gr.api(artifacts, api_name="artifacts", concurrency_limit=2, concurrency_id="api-zip")
    for fn in (wait, run):
        gr.api(fn, api_name=fn.__name__, concurrency_limit=WAIT_CONCURRENCY, concurrency_id="api-wait")


def _plain(d: dict) -> dict:
    """A status row with only JSON values (paths as text)."""
    return {k: (str(v) if isinstance(v, Path) else v) for k, v in d.items()}
