"""Listening sessions through HTTP: blinding, refusals, resume, and durability under kill -9.

The in-process tests use FastAPI's TestClient on the real router; the durability test starts
the real server (uvicorn) as a subprocess on 127.0.0.1, drives 20 raters concurrently through
HTTP, kills the server with SIGKILL mid-run and restarts it on the same database.
"""

import json
import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from backend.mos.demo_runs import make_demo_runs
from backend.mos.server import create_app

ROOT = Path(__file__).resolve().parents[1]
ADMIN = "admin-secret-for-tests"
AH = {"X-Admin-Token": ADMIN}
LABELS = ["W8A8 PTQ", "W4A8 Q-DiT", "W2A8 naive"]


@pytest.fixture()
def runs(tmp_path):
    return make_demo_runs(tmp_path / "runs", dict(zip(LABELS, [30.0, 15.0, 0.0])),
                          prompts=["a dog barking", "rain on a roof"], seconds=0.3)


@pytest.fixture()
def client(tmp_path, runs):
    return TestClient(create_app(tmp_path / "mos.sqlite", ADMIN, runs_root=tmp_path / "runs"))


def make_session(client, runs, protocol="mushra", n_raters=2, trials=3, checks=1, **kw):
    body = {"runs": [r.name for r in runs[:2]], "anchor_run": runs[2].name, "lowpass_anchor": True,
            "protocol": protocol, "trials_per_rater": trials, "n_attention_checks": checks,
            "n_raters": n_raters, "seed": 123, **kw}
    r = client.post("/mos/admin/sessions", json=body, headers=AH)
    assert r.status_code == 200, r.text
    return r.json()


def answer(state, good=True):
    """Ratings a diligent rater would give: the attention instruction obeyed when present."""
    t = state["trial"]
    m = re.search(r"\((\d)\)|slider to (\d+)|choose ([AB])", t["instruction"] or "")
    out = []
    for i, s in enumerate(t["stimuli"]):
        if state["protocol"] == "mushra":
            v = int(m.group(2)) if m else 40 + 10 * i
        elif state["protocol"] == "acr":
            v = int(m.group(1)) if m else 3
        else:
            v = int(i == ("AB".index(m.group(3)) if m else 0))
        out.append({"stimulus": s["id"], "value": v, "played": True})
    return {"trial": t["index"], "ratings": out}


def start_rater(client, link):
    h = {"X-Rater-Token": link["token"]}
    rid = link["rater_id"]
    assert client.post(f"/mos/api/{rid}/consent", headers=h).status_code == 200
    return rid, h, client.post(f"/mos/api/{rid}/training", headers=h).json()


def fetch_trial_audio(client, state, h):
    for s in state["trial"]["stimuli"]:
        assert client.get(f"/mos/audio/{s['id']}", headers=h).status_code == 200


def n_ratings(db):
    with sqlite3.connect(db) as con:
        return con.execute("SELECT COUNT(*) FROM ratings").fetchone()[0]


# --- blinding ------------------------------------------------------------------------------
def secret_words(runs, tmp_path):
    """Everything that would tell a rater which condition a clip is."""
    words = set(LABELS) | {"FP", "anchor", "reference:", "lp3500", "LP 3.5", ".wav", "fp/", "q/",
                           str(tmp_path), "run:", "cond_id", "item_key", "demo-tones", "snr"}
    words |= {r.name for r in runs}
    return words


def leaks(text: str, words) -> list[str]:
    found = []
    for w in words:
        # whole-token match, so that e.g. "FP" inside a random opaque id does not count
        if re.search(r"(?<![A-Za-z0-9_-])" + re.escape(w) + r"(?![A-Za-z0-9_-])", text):
            found.append(w)
    return found


@pytest.mark.parametrize("protocol", ["mushra", "acr", "ab"])
def test_rater_flow_reveals_no_condition(client, runs, tmp_path, protocol):
    sess = make_session(client, runs, protocol=protocol, n_raters=1)
    link = sess["raters"][0]
    words = secret_words(runs, tmp_path)
    seen = []  # (url, headers + body) of every request the rater flow makes

    def log(resp):
        body = resp.text if not resp.headers["content-type"].startswith("audio/") else ""
        seen.append((str(resp.request.url), json.dumps(dict(resp.headers)) + body))
        assert "content-disposition" not in resp.headers
        return resp

    page = log(client.get(link["link"]))
    assert page.status_code == 200 and "<script>" in page.text
    assert "http://" not in page.text and "https://" not in page.text  # no CDN, no external fetch
    h = {"X-Rater-Token": link["token"]}
    rid = link["rater_id"]
    state = log(client.post(f"/mos/api/{rid}/consent", headers=h)).json()
    for t in state["training"]:
        log(client.get(f"/mos/audio/{t['id']}", headers=h))
    state = log(client.post(f"/mos/api/{rid}/training", headers=h)).json()
    sizes = set()
    for _ in range(10):
        if state["phase"] != "trial":
            break
        for s in state["trial"]["stimuli"]:
            a = log(client.get(f"/mos/audio/{s['id']}", headers=h))
            assert a.headers["content-type"] == "audio/wav"
            sizes.add(len(a.content))
        log(client.post(f"/mos/api/{rid}/rate", headers=h, json=answer(state)))
        state = log(client.get(f"/mos/api/{rid}/state", headers=h)).json()
    assert state["phase"] == "done"
    # every clip of the session has the same duration, so the uniform re-encoding makes the
    # served files the same size whatever the condition (no size side channel)
    assert len(sizes) == 1
    for url, text in seen:
        assert not leaks(url, words), (url, leaks(url, words))
        assert not leaks(text, words), (url, leaks(text, words))
    # the admin does see the labels (the test would be vacuous otherwise)
    res = client.get(f"/mos/admin/sessions/{sess['session_id']}/results", headers=AH).text
    assert "W4A8 Q-DiT" in res and "FP" in res


def test_same_clip_gets_distinct_ids_per_rater_and_reference(client, runs):
    sess = make_session(client, runs, n_raters=2)
    ids = []
    for link in sess["raters"]:
        _, _, st = start_rater(client, link)
        ids += [s["id"] for s in st["trial"]["stimuli"]] + [st["trial"]["reference"]["id"]]
    assert len(ids) == len(set(ids))  # open reference != hidden reference; raters never share


# --- refusals ------------------------------------------------------------------------------
def test_token_refusals(client, runs):
    sess = make_session(client, runs, n_raters=2)
    a, b = sess["raters"]
    rid, h, st = start_rater(client, a)
    stim = st["trial"]["stimuli"][0]["id"]
    cases = [
        (client.get(f"/mos/rate/{rid}?token=wrong"), 403, "invalid_token"),
        (client.get(f"/mos/rate/{rid}"), 403, "invalid_token"),
        (client.get(f"/mos/rate/{rid}?token={b['token']}"), 403, "invalid_token"),  # B's link
        (client.get(f"/mos/api/{rid}/state", headers={"X-Rater-Token": b["token"]}), 403,
         "invalid_token"),
        (client.get("/mos/api/Rnosuchrater/state", headers=h), 404, "unknown_rater"),
        (client.get(f"/mos/audio/{stim}", headers={"X-Rater-Token": b["token"]}), 403,
         "invalid_token"),
        (client.get(f"/mos/audio/{stim}"), 403, "invalid_token"),
        (client.get("/mos/audio/snosuchstimulus", headers=h), 404, "unknown_stimulus"),
        (client.get("/mos/admin/sessions", headers={"X-Admin-Token": "nope"}), 403,
         "invalid_admin_token"),
        (client.get(f"/mos/admin/sessions/{sess['session_id']}/results"), 403,
         "invalid_admin_token"),
        (client.post(f"/mos/admin/sessions/{sess['session_id']}/raters", json={"n": 1},
                     headers={"Authorization": "Bearer nope"}), 403, "invalid_admin_token"),
        (client.post("/mos/admin/sessions", json={"runs": ["../etc"]}, headers=AH), 422,
         "bad_run"),
    ]
    for resp, status, code in cases:
        assert resp.status_code == status, (resp.request.url, resp.text)
        assert resp.json()["error"] == code
    # B's token cannot post ratings for A
    r = client.post(f"/mos/api/{rid}/rate", json=answer(st),
                    headers={"X-Rater-Token": b["token"]})
    assert r.status_code == 403 and n_ratings(client.app.state.mos.store.db_path) == 0


def test_expired_link_is_refused(client, runs):
    sess = make_session(client, runs, n_raters=1, expires_hours=-0.001)
    link = sess["raters"][0]
    r = client.get(link["link"])
    assert r.status_code == 403 and r.json()["error"] == "token_expired"
    h = {"X-Rater-Token": link["token"]}
    r = client.post(f"/mos/api/{link['rater_id']}/consent", headers=h)
    assert r.json()["error"] == "token_expired"


def test_bad_ratings_store_nothing(client, runs):
    sess = make_session(client, runs, n_raters=1, checks=0)
    rid, h, st = start_rater(client, sess["raters"][0])
    db = client.app.state.mos.store.db_path
    good = answer(st)
    # not fetched from the server yet: refused even though the client claims "played"
    r = client.post(f"/mos/api/{rid}/rate", headers=h, json=good)
    assert r.status_code == 422 and r.json()["error"] == "not_played"
    fetch_trial_audio(client, st, h)

    def variant(**change):
        body = json.loads(json.dumps(good))
        body["ratings"][0].update(change)
        return body

    bad = [(variant(value=101), "out_of_range"), (variant(value=-1), "out_of_range"),
           (variant(value=50.5), "out_of_range"), (variant(value="50"), "out_of_range"),
           (variant(value=True), "out_of_range"), (variant(value=None), "out_of_range"),
           (variant(played=False), "not_played"), (variant(stimulus="sforged"), "unknown_stimulus"),
           ({"trial": 0, "ratings": good["ratings"][1:]}, "incomplete"),
           ({"trial": 0, "ratings": good["ratings"] + good["ratings"][:1]}, "incomplete"),
           ({"trial": 1, "ratings": good["ratings"]}, "out_of_order"),
           ({"trial": "0", "ratings": good["ratings"]}, "bad_request"),
           ({"ratings": good["ratings"]}, "bad_request")]
    for body, code in bad:
        r = client.post(f"/mos/api/{rid}/rate", headers=h, json=body)
        assert 400 <= r.status_code < 500 and r.json()["error"] == code, (body, r.text)
    r = client.post(f"/mos/api/{rid}/rate", headers={**h, "Content-Type": "application/json"},
                    content=b"{not json")
    assert r.status_code == 400 and r.json()["error"] == "bad_json"
    raw = json.dumps(variant(value="__INF__")).replace('"__INF__"', "Infinity")
    r = client.post(f"/mos/api/{rid}/rate", headers={**h, "Content-Type": "application/json"},
                    content=raw.encode())
    assert r.status_code == 422 and r.json()["error"] == "out_of_range"
    assert n_ratings(db) == 0
    assert client.post(f"/mos/api/{rid}/rate", headers=h, json=good).status_code == 200
    n = n_ratings(db)
    assert n == len(good["ratings"])
    # double submit: refused cleanly, counted once
    r = client.post(f"/mos/api/{rid}/rate", headers=h, json=good)
    assert r.status_code == 409 and r.json()["error"] == "already_rated"
    assert n_ratings(db) == n


def test_acr_scale_limits(client, runs):
    sess = make_session(client, runs, protocol="acr", n_raters=1, checks=0)
    rid, h, st = start_rater(client, sess["raters"][0])
    fetch_trial_audio(client, st, h)
    for v, ok in [(0, False), (6, False), (2.5, False), (1, True)]:
        body = answer(st)
        body["ratings"][0]["value"] = v
        r = client.post(f"/mos/api/{rid}/rate", headers=h, json=body)
        assert (r.status_code == 200) is ok, (v, r.text)


def test_ratings_before_consent_refused(client, runs):
    sess = make_session(client, runs, n_raters=1)
    link = sess["raters"][0]
    h = {"X-Rater-Token": link["token"]}
    body = {"trial": 0, "ratings": []}
    r = client.post(f"/mos/api/{link['rater_id']}/rate", headers=h, json=body)
    assert r.status_code == 409 and r.json()["error"] == "consent_required"


def test_resume_from_a_new_browser(tmp_path, runs):
    app_args = (tmp_path / "mos.sqlite", ADMIN)
    c1 = TestClient(create_app(*app_args, runs_root=tmp_path / "runs"))
    sess = make_session(c1, runs, n_raters=1, trials=4, checks=1)
    rid, h, st = start_rater(c1, sess["raters"][0])
    trials_seen = []
    for _ in range(2):
        fetch_trial_audio(c1, st, h)
        trials_seen.append(st["trial"])
        assert c1.post(f"/mos/api/{rid}/rate", headers=h, json=answer(st)).status_code == 200
        st = c1.get(f"/mos/api/{rid}/state", headers=h).json()
    # a fresh app process on the same DB (a restart) and a fresh client (another browser)
    c2 = TestClient(create_app(*app_args, runs_root=tmp_path / "runs"))
    st2 = c2.get(f"/mos/api/{rid}/state", headers=h).json()
    assert st2["phase"] == "trial" and st2["position"] == 2
    assert st2["trial"] == st["trial"]  # the same recorded plan, same order
    assert st2["trial"]["stimuli"] != trials_seen[0]["stimuli"]


def test_plans_are_seeded_and_recorded(client, runs):
    sess = make_session(client, runs, protocol="acr", n_raters=3, trials=12, checks=2)
    store = client.app.state.mos.store
    plans = [store.rater(link["rater_id"])["plan"] for link in sess["raters"]]
    orders = [[(t["kind"], t["item_key"], tuple(store.stimulus(s["id"])["cond_id"]
                                                for s in t["stimuli"])) for t in p["trials"]]
              for p in plans]
    assert len({json.dumps(o) for o in orders}) == 3  # every rater has their own order
    for o in orders:
        assert sum(k == "attention" for k, _, _ in o) == 2 and o[0][0] == "rate"
        counts = {}
        for k, _, conds in o:
            if k == "rate":
                counts[conds[0]] = counts.get(conds[0], 0) + 1
        # 12 ACR trials over 5 conditions (FP, 2 tests, 2 anchors): balanced 2 or 3 each
        assert sorted(counts.values()) == [2, 2, 2, 3, 3]
    # the recorded seed reproduces the order
    from backend.mos.plans import build_plan
    sess_db = store.session(sess["session_id"])
    conds = [{"cond_id": c["cond_id"], "role": c["role"]} for c in sess_db["conditions"]]
    items = [{"key": it["item_key"], "files": it["files"]} for it in sess_db["items"]]
    again, stimuli = build_plan("acr", conds, items, 12, 2, plans[0]["seed"])
    sid = {s["id"]: s["cond_id"] for s in stimuli}
    assert [(t["kind"], t["item_key"], tuple(sid[s["id"]] for s in t["stimuli"]))
            for t in again["trials"]] == orders[0]


def test_results_and_exports(client, runs):
    sess = make_session(client, runs, protocol="acr", n_raters=3, trials=5, checks=1)
    for link in sess["raters"]:
        rid, h, st = start_rater(client, link)
        while st["phase"] == "trial":
            fetch_trial_audio(client, st, h)
            client.post(f"/mos/api/{rid}/rate", headers=h, json=answer(st))
            st = client.get(f"/mos/api/{rid}/state", headers=h).json()
    sid = sess["session_id"]
    res = client.get(f"/mos/admin/sessions/{sid}/results", headers=AH).json()
    assert res["n_ratings"] == 3 * 6 and res["excluded_raters"] == []
    by_label = {r["label"]: r for r in res["conditions"]}
    rated = [r for r in by_label.values() if r["n_ratings"]]
    assert all(r["mos"] == pytest.approx(3.0) for r in rated)  # answer() gives 3 everywhere
    assert sum(r["n_ratings"] for r in res["conditions"]) == 3 * 5
    assert res["figure"]["data"][0]["type"] == "bar"
    csv_text = client.get(f"/mos/admin/sessions/{sid}/export.csv", headers=AH).text
    assert len(csv_text.strip().splitlines()) == 1 + 3 * 6
    assert csv_text.splitlines()[0].startswith("session_id,rater_id,trial_index")
    assert ",FP," in csv_text  # the admin export names the conditions
    exported = json.loads(client.get(f"/mos/admin/sessions/{sid}/export.json", headers=AH).text)
    assert len(exported["ratings"]) == 18 and len(exported["raters"]) == 3
    assert all("plan" in r for r in exported["raters"])


# --- the real server: 20 raters at once, kill -9, restart ---------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(db, runs_root, port):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "backend.mos.server", "--db", str(db),
                             "--port", str(port), "--runs", str(runs_root), "--admin-token", ADMIN],
                            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(proc.stderr.read().decode())
        try:
            if httpx.get(base + "/mos/admin/sessions", headers=AH, timeout=1).status_code == 200:
                return proc, base
        except httpx.HTTPError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError("server did not come up in 30 s")


def test_twenty_raters_concurrently_then_kill9_and_restart(tmp_path, runs):
    db, port = tmp_path / "mos.sqlite", free_port()
    proc, base = start_server(db, tmp_path / "runs", port)
    try:
        sess = httpx.post(base + "/mos/admin/sessions", headers=AH, timeout=30, json={
            "runs": [r.name for r in runs[:2]], "anchor_run": runs[2].name, "lowpass_anchor": True,
            "protocol": "mushra",
            "trials_per_rater": 5, "n_attention_checks": 1, "n_raters": 20, "seed": 7}).json()
        links = sess["raters"]
        assert len(links) == 20
        acked: dict[tuple, dict] = {}  # (rater, trial) -> body the server answered 200 to
        lock = threading.Lock()
        kill_after = 20 * 6 // 2  # kill -9 once half of all trials were acknowledged

        def rater(link, stop_on_error=True):
            h = {"X-Rater-Token": link["token"]}
            rid = link["rater_id"]
            with httpx.Client(base_url=base, headers=h, timeout=30) as c:
                try:
                    c.post(f"/mos/api/{rid}/consent")
                    st = c.post(f"/mos/api/{rid}/training").json()
                    for _ in range(20):  # bounded
                        if st["phase"] != "trial":
                            return st["phase"]
                        for s in st["trial"]["stimuli"]:
                            assert c.get(f"/mos/audio/{s['id']}").status_code == 200
                        body = answer(st)
                        r = c.post(f"/mos/api/{rid}/rate", json=body)
                        if r.status_code == 200:
                            with lock:
                                acked[(rid, body["trial"])] = body
                        else:
                            assert r.json()["error"] == "already_rated", r.text
                        st = c.get(f"/mos/api/{rid}/state").json()
                except httpx.HTTPError:
                    if stop_on_error:
                        return "server gone"
                    raise
            return "unfinished"

        with ThreadPoolExecutor(20) as pool:
            futures = [pool.submit(rater, link) for link in links]
            deadline = time.monotonic() + 60
            while len(acked) < kill_after and time.monotonic() < deadline:
                time.sleep(0.005)
            os.kill(proc.pid, signal.SIGKILL)  # kill -9 while raters are still submitting
            proc.wait(10)
            outcomes = [f.result(timeout=60) for f in futures]
        assert len(acked) >= kill_after and "server gone" in outcomes
        acked_before = dict(acked)

        # restart on the same DB: every acknowledged trial is there, exactly once
        proc, base = start_server(db, tmp_path / "runs", port)
        with sqlite3.connect(db) as con:
            rows = con.execute(
                "SELECT rater_id, trial_index, stimulus_id, value FROM ratings").fetchall()
            positions = dict(con.execute("SELECT id, position FROM raters").fetchall())
        stored = {(r, t, s): v for r, t, s, v in rows}
        assert len(stored) == len(rows)  # no duplicates
        for (rid, trial), body in acked_before.items():
            for x in body["ratings"]:
                assert stored[(rid, trial, x["stimulus"])] == x["value"]
        # no half-written trial: each stored trial has all its clips, and positions agree
        per_trial = {}
        for r, t, _, _ in rows:
            per_trial[(r, t)] = per_trial.get((r, t), 0) + 1
        assert set(per_trial.values()) <= {1, 5}  # attention checks have 1 clip, trials 5
        for rid, pos in positions.items():
            assert {t for (r, t) in per_trial if r == rid} == set(range(pos))

        # the raters come back (same links) and finish on the restarted server
        with ThreadPoolExecutor(20) as pool:
            outcomes = list(pool.map(lambda link: rater(link, stop_on_error=False), links))
        assert outcomes == ["done"] * 20
        res = httpx.get(f"{base}/mos/admin/sessions/{sess['session_id']}/results", headers=AH,
                        timeout=30).json()
        assert res["n_ratings"] == 20 * (5 * 5 + 1)
        assert all(r["completed"] for r in res["raters"])
        with sqlite3.connect(db) as con:
            total, distinct = con.execute(
                "SELECT COUNT(*), COUNT(DISTINCT rater_id || '/' || trial_index || '/' ||"
                " stimulus_id) FROM ratings").fetchone()
            final = {(r, t, s): v for r, t, s, v in con.execute(
                "SELECT rater_id, trial_index, stimulus_id, value FROM ratings")}
        assert total == distinct == 20 * 26
        for (rid, trial), body in acked.items():  # before and after the crash
            for x in body["ratings"]:
                assert final[(rid, trial, x["stimulus"])] == x["value"]
    finally:
        proc.kill()
        proc.wait(10)
