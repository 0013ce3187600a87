"""FastAPI router: the rater page, the rater JSON API, opaque audio, and admin endpoints.

Why a router and not an app: the Gradio app mounts it next to its own routes; ``server.py``
wraps it in a standalone app. Every refusal is JSON ``{"error": code, "detail": text}`` with a
4xx status, produced from ``MosError`` in one place. Responses to raters carry
``Cache-Control: no-store`` and ``Referrer-Policy: no-referrer`` so nothing lingers in shared
caches or leaks the tokenised link to another site.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from starlette.concurrency import run_in_threadpool as call

from .page import RATER_PAGE
from .service import MosError, MosService, json_safe
from .sources import conditions_from_runs

NO_STORE = {
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
}


def _refuse(exc: MosError) -> JSONResponse:
    return JSONResponse(exc.as_dict(), status_code=exc.status, headers=NO_STORE)


def _ok(data) -> JSONResponse:
    return JSONResponse(json_safe(data), headers=NO_STORE)


async def _json_body(request: Request) -> dict:
    try:
        body = json.loads(await request.body() or b"{}")
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise MosError(400, "bad_json", "the request body is not valid JSON") from exc
    if not isinstance(body, dict):
        raise MosError(400, "bad_json", "the request body must be a JSON object")
    return body


def _admin_token(request: Request) -> str | None:
    auth = request.headers.get("authorization", "")
    if auth.lower().startswith("bearer "):
        return auth[7:].strip()
    return request.headers.get("x-admin-token")


def _guard(fn: Callable) -> Callable:
    """Turn ``MosError`` raised by an endpoint into its JSON refusal."""
    import functools

    @functools.wraps(fn)
    async def wrapper(*args, **kwargs):
        try:
            return await fn(*args, **kwargs)
        except MosError as exc:
            return _refuse(exc)

    return wrapper


def make_router(service: MosService) -> APIRouter:
    """All ``/mos/...`` routes bound to ``service``."""
    router = APIRouter()
    svc = service

    # --- rater -----------------------------------------------------------------------
    @router.get("/mos/rate/{rater_id}", response_class=HTMLResponse)
    @_guard
    async def rater_page(rater_id: str, request: Request):
        await call(svc.rater_state, rater_id, request.query_params.get("token"))
        return HTMLResponse(RATER_PAGE, headers=NO_STORE)

    @router.get("/mos/api/{rater_id}/state")
    @_guard
    async def state(rater_id: str, request: Request):
        return _ok(await call(svc.rater_state, rater_id, request.headers.get("x-rater-token")))

    @router.post("/mos/api/{rater_id}/consent")
    @_guard
    async def consent(rater_id: str, request: Request):
        return _ok(await call(svc.consent, rater_id, request.headers.get("x-rater-token")))

    @router.post("/mos/api/{rater_id}/training")
    @_guard
    async def training(rater_id: str, request: Request):
        return _ok(await call(svc.training_done, rater_id, request.headers.get("x-rater-token")))

    @router.post("/mos/api/{rater_id}/rate")
    @_guard
    async def rate(rater_id: str, request: Request):
        token = request.headers.get("x-rater-token")
        body = await _json_body(request)
        if "trial" not in body or "ratings" not in body:
            raise MosError(422, "bad_request", "body needs 'trial' and 'ratings'")
        return _ok(await call(svc.submit, rater_id, token, body["trial"], body["ratings"]))

    @router.get("/mos/audio/{stimulus_id}")
    @_guard
    async def audio(stimulus_id: str, request: Request):
        data = await call(svc.audio, stimulus_id, request.headers.get("x-rater-token"))
        return Response(data, media_type="audio/wav", headers=NO_STORE)

    # --- admin -----------------------------------------------------------------------
    @router.get("/mos/admin/sessions")
    @_guard
    async def sessions(request: Request):
        svc.check_admin(_admin_token(request))
        return _ok(await call(svc.store.sessions))

    @router.post("/mos/admin/sessions")
    @_guard
    async def create(request: Request):
        svc.check_admin(_admin_token(request))
        body = await _json_body(request)
        return _ok(await call(_create_session, svc, _admin_token(request), body))

    @router.post("/mos/admin/sessions/{session_id}/raters")
    @_guard
    async def add_raters(session_id: str, request: Request):
        svc.check_admin(_admin_token(request))
        body = await _json_body(request)
        n = body.get("n", 1)
        if not isinstance(n, int) or isinstance(n, bool):
            raise MosError(422, "bad_request", "'n' must be an integer")
        return _ok(await call(svc.add_raters, _admin_token(request), session_id, n))

    @router.get("/mos/admin/sessions/{session_id}/results")
    @_guard
    async def results(session_id: str, request: Request):
        svc.check_admin(_admin_token(request))
        res = await call(svc.results, session_id)
        res["figure"] = json.loads(res["figure"].to_json())
        return _ok(res)

    @router.get("/mos/admin/sessions/{session_id}/export.csv")
    @_guard
    async def export_csv(session_id: str, request: Request):
        svc.check_admin(_admin_token(request))
        text = await call(svc.export_csv, session_id)
        return PlainTextResponse(text, media_type="text/csv", headers=NO_STORE)

    @router.get("/mos/admin/sessions/{session_id}/export.json")
    @_guard
    async def export_json(session_id: str, request: Request):
        svc.check_admin(_admin_token(request))
        text = await call(svc.export_json, session_id)
        return Response(text, media_type="application/json", headers=NO_STORE)

    return router


def _create_session(svc: MosService, admin_token: str | None, body: dict) -> dict:
    """Admin JSON -> conditions from runs under the runs root -> session with rater links."""
    runs = body.get("runs")
    if not isinstance(runs, list) or not runs:
        raise MosError(422, "bad_request", "'runs' must be a non-empty list of run ids")
    dirs = [_run_dir(svc, r) for r in runs]
    anchor = _run_dir(svc, body["anchor_run"]) if body.get("anchor_run") else None
    try:
        conds = conditions_from_runs(dirs, anchor_run=anchor,
                                     lowpass=bool(body.get("lowpass_anchor", False)))
        return svc.create_session(
            admin_token, conds, prompts=body.get("prompts"),
            protocol=body.get("protocol", "mushra"),
            trials_per_rater=int(body.get("trials_per_rater", 10)),
            n_attention_checks=int(body.get("n_attention_checks", 1)),
            n_raters=int(body.get("n_raters", 0)),
            title=str(body.get("title", "Listening test")),
            expires_hours=float(body.get("expires_hours", 14 * 24)),
            seed=body.get("seed"))
    except (TypeError, ValueError, KeyError, FileNotFoundError) as exc:
        raise MosError(422, "bad_request", str(exc)) from exc


def _run_dir(svc: MosService, run_id) -> Path:
    """A run id resolved under the service's runs root; refuses anything that escapes it."""
    if svc.runs_root is None:
        raise MosError(422, "no_runs_root", "the server was started without a runs folder")
    if (
        not isinstance(run_id, str)
        or not run_id
        or "/" in run_id
        or "\\" in run_id
        or run_id in (".", "..")
    ):
        raise MosError(422, "bad_run", "a run id is a folder name inside the runs folder")
    path = (svc.runs_root / run_id).resolve()
    if path.parent != svc.runs_root or not (path / "run.json").is_file():
        raise MosError(404, "unknown_run", f"no run {run_id!r}")
    return path
