"""Job queue + run store: real SQLite, real huey consumer threads, a small real runner.

The runner below writes artifact files and reports progress like the real one does; a
"gate" file lets a test hold a job in the running state without sleeping blindly.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from backend.jobs import (
    CANCELLED,
    DONE,
    FAILED,
    INTERRUPTED,
    QUEUED,
    RUNNING,
    JobError,
    JobQueue,
    request_hash,
)

REPO = Path(__file__).resolve().parents[1]


def runner(request: dict, ctx) -> dict:
    """Small real runner: build (or reuse) a cached 'denoiser', write one artifact per prompt."""
    if log := request.get("calls_log"):
        with open(log, "a", encoding="utf-8") as fh:
            fh.write(ctx.job_id + "\n")
    ctx.progress("quantize", 0.1, "building denoiser")
    denoiser = ctx.cached_path("denoiser", {"model": request["model"], "bits": request["bits"]},
                               ".txt")
    built = not denoiser.exists()
    if built:
        tmp = denoiser.with_suffix(f".{ctx.job_id}.tmp")
        tmp.write_text(f"{request['model']}@{request['bits']}", encoding="utf-8")
        os.replace(tmp, denoiser)
    (ctx.run_dir / "partial.txt").write_text("stage 1 done", encoding="utf-8")
    if request.get("fail"):
        ctx.progress("quantize", 0.2)
        raise ValueError(request["fail"])
    if request.get("job_error"):
        raise JobError(request["job_error"])
    if gate := request.get("gate"):
        ctx.progress("generate", 0.5, "waiting at gate")
        deadline = time.monotonic() + 20
        while not Path(gate).exists():
            if time.monotonic() > deadline:
                raise TimeoutError("gate never opened")
            time.sleep(0.02)
            ctx.progress("generate", 0.5, "waiting at gate")
    lengths = []
    for i, prompt in enumerate(request["prompts"]):
        ctx.progress("generate", (i + 1) / len(request["prompts"]), prompt)
        (ctx.run_dir / f"{i}.txt").write_text(prompt.upper(), encoding="utf-8")
        lengths.append(len(prompt))
    return {"lengths": lengths, "denoiser": denoiser.name, "denoiser_built": built}


def req(prompts=("a dog", "rain"), **extra) -> dict:
    return {"model": "tiny-sounds", "bits": 8, "prompts": list(prompts), "seeds": [0], **extra}


@pytest.fixture
def queue(tmp_path):
    q = JobQueue(tmp_path / "root", runner, workers=1)
    q.start()
    yield q
    q.stop(timeout=5)


def wait_for(pred, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.02)
    raise AssertionError("condition not reached in time")


def calls(path: Path) -> list[str]:
    return path.read_text().split() if path.exists() else []


# --- hashing --------------------------------------------------------------------------------
def test_request_hash_is_canonical_and_covers_output_keys():
    base = {"model": "m", "recipe": {"w": 4, "a": 8}, "prompts": ["x"], "guidance": 4.0}
    same = {"guidance": 4, "prompts": ["x"], "recipe": {"a": 8, "w": 4}, "model": "m"}
    assert request_hash(base) == request_hash(same)
    assert request_hash(base) == request_hash({**base, "label": "my try"})  # cosmetic key
    assert request_hash(base) != request_hash({**base, "prompts": ["y"]})
    assert request_hash(base) != request_hash({**base, "recipe": {"w": 4, "a": 6}})
    assert request_hash(base) != request_hash({**base, "steps": 10})  # unknown keys count
    with pytest.raises(TypeError, match="JSON"):
        request_hash({**base, "seeds": {1, 2}})


# --- the main path --------------------------------------------------------------------------
def test_submit_runs_to_done_with_result_and_artifacts(queue):
    job = queue.submit(req())
    st = queue.wait(job, timeout=10)
    assert st["status"] == DONE and st["progress"] == 1.0 and st["error"] is None
    assert st["started_at"] >= st["created_at"] and st["finished_at"] >= st["started_at"]
    assert queue.result(job) == {"lengths": [5, 4], "denoiser": queue.result(job)["denoiser"],
                                 "denoiser_built": True}
    run_dir = Path(st["run_dir"])
    assert run_dir == queue.root / "runs" / job
    assert (run_dir / "0.txt").read_text() == "A DOG" and (run_dir / "1.txt").read_text() == "RAIN"
    saved = json.loads((run_dir / "request.json").read_text())
    assert saved["request"] == req() and saved["request_hash"] == request_hash(req())
    assert [r["id"] for r in queue.list_runs(status=DONE)] == [job]


def test_status_shows_stage_and_progress_while_running(queue, tmp_path):
    gate = tmp_path / "gate"
    job = queue.submit(req(gate=str(gate)))
    wait_for(lambda: queue.status(job)["stage"] == "generate")
    st = queue.status(job)
    assert st["status"] == RUNNING and st["progress"] == 0.5 and st["message"] == "waiting at gate"
    assert queue.result(job) is None
    gate.touch()
    assert queue.wait(job, timeout=10)["status"] == DONE


def test_cache_hit_returns_same_run_at_once_without_rerunning(queue, tmp_path):
    log = tmp_path / "calls.log"
    first = queue.submit(req(calls_log=str(log)))
    queue.wait(first, timeout=10)
    t0 = time.perf_counter()
    again = queue.submit(req(calls_log=str(log), label="cosmetic only"))
    st = queue.status(again)
    elapsed = time.perf_counter() - t0
    assert again == first and st["status"] == DONE and elapsed < 1.0
    assert st["cache_hits"] == 1
    time.sleep(0.3)  # give a wrongly enqueued re-run the chance to show up
    assert calls(log) == [first]


def test_identical_request_while_running_joins_that_job(queue, tmp_path):
    gate, log = tmp_path / "gate", tmp_path / "calls.log"
    first = queue.submit(req(gate=str(gate), calls_log=str(log)))
    wait_for(lambda: queue.status(first)["status"] == RUNNING)
    assert queue.submit(req(gate=str(gate), calls_log=str(log))) == first
    gate.touch()
    queue.wait(first, timeout=10)
    assert calls(log) == [first]


def test_prompt_change_gets_new_run_but_reuses_cached_denoiser(queue):
    a = queue.submit(req(prompts=["a dog"]))
    queue.wait(a, timeout=10)
    b = queue.submit(req(prompts=["a cat barking"]))
    queue.wait(b, timeout=10)
    ra, rb = queue.result(a), queue.result(b)
    assert a != b
    assert ra["denoiser_built"] is True and rb["denoiser_built"] is False
    assert ra["denoiser"] == rb["denoiser"]
    assert rb["lengths"] == [13]
    cached = list((queue.root / "cache" / "denoiser").glob("*.txt"))
    assert [p.name for p in cached] == [ra["denoiser"]]
    # other bits -> another denoiser
    c = queue.submit({**req(prompts=["a dog"]), "bits": 4})
    queue.wait(c, timeout=10)
    rc = queue.result(c)
    assert rc["denoiser_built"] is True and rc["denoiser"] != ra["denoiser"]


# --- failures -------------------------------------------------------------------------------
def test_failing_runner_fails_only_its_job(queue):
    ok1 = queue.submit(req(prompts=["first"]))
    queue.wait(ok1, timeout=10)
    bad = queue.submit(req(prompts=["x"], fail="3-bit activations are not supported"))
    ok2 = queue.submit(req(prompts=["after the failure"]))
    st_bad = queue.wait(bad, timeout=10)
    assert queue.wait(ok2, timeout=10)["status"] == DONE
    assert st_bad["status"] == FAILED
    assert st_bad["error"] == (
        "The run failed during 'quantize': ValueError: 3-bit activations are not supported")
    assert "Traceback" not in st_bad["error"]
    tb = queue.traceback(bad)
    assert "Traceback" in tb and "ValueError" in tb
    assert (Path(st_bad["run_dir"]) / "partial.txt").exists()  # partial artifacts kept
    assert queue.result(bad) is None
    assert queue.result(ok1)["lengths"] == [5]  # earlier result intact
    assert queue.result(ok2)["lengths"] == [17]
    # a failed request is not a cache entry: asking again tries again
    retry = queue.submit(req(prompts=["x"], fail="3-bit activations are not supported"))
    assert retry != bad


def test_job_error_message_shown_verbatim(queue):
    job = queue.submit(req(job_error="Model 'foo' is not available offline."))
    st = queue.wait(job, timeout=10)
    assert st["status"] == FAILED and st["error"] == "Model 'foo' is not available offline."


def test_non_json_request_rejected_at_submit(queue):
    with pytest.raises(TypeError):
        queue.submit({"model": "m", "prompts": [object()]})
    assert queue.list_runs() == []


# --- cancel ---------------------------------------------------------------------------------
def test_cancel_queued_and_running_jobs(queue, tmp_path):
    gate = tmp_path / "gate"
    running = queue.submit(req(prompts=["long"], gate=str(gate)))
    wait_for(lambda: queue.status(running)["stage"] == "generate")
    waiting = queue.submit(req(prompts=["never runs"]))  # one worker: stays queued
    assert queue.status(waiting)["status"] == QUEUED
    assert queue.cancel(waiting) == CANCELLED
    assert queue.cancel(running) == RUNNING  # asked; stops at its next progress report
    st = queue.wait(running, timeout=10)
    assert st["status"] == CANCELLED and st["message"] == "cancelled during 'generate'"
    assert not (Path(st["run_dir"]) / "0.txt").exists()
    after = queue.submit(req(prompts=["after cancel"]))
    assert queue.wait(after, timeout=10)["status"] == DONE
    st_w = queue.status(waiting)
    assert st_w["status"] == CANCELLED and st_w["started_at"] is None
    assert list(Path(st_w["run_dir"]).iterdir()) == [Path(st_w["run_dir"]) / "request.json"]
    assert queue.cancel(after) == DONE  # finished runs are not touched
    with pytest.raises(KeyError):
        queue.cancel("no-such-job")


# --- restart & crash recovery ---------------------------------------------------------------
def test_restart_keeps_finished_runs_and_runs_leftover_queued(tmp_path):
    root = tmp_path / "root"
    q1 = JobQueue(root, runner, backend="memory")
    q1.start()
    done = q1.submit(req(prompts=["kept"]))
    q1.wait(done, timeout=10)
    q1.stop()
    left = q1.submit(req(prompts=["left in queue"]))  # consumer stopped: stays queued
    assert q1.status(left)["status"] == QUEUED

    q2 = JobQueue(root, runner, backend="memory")  # memory huey: q1's queue is gone
    q2.start()
    try:
        assert q2.result(done)["lengths"] == [4]
        assert q2.wait(left, timeout=10)["status"] == DONE
        assert {r["id"] for r in q2.list_runs()} == {done, left}
    finally:
        q2.stop()


def test_restart_in_same_process_leaves_a_still_running_job_alone(tmp_path):
    root, gate = tmp_path / "root", tmp_path / "gate"
    q1 = JobQueue(root, runner)
    q1.start()
    job = q1.submit(req(prompts=["slow"], gate=str(gate)))
    wait_for(lambda: q1.status(job)["stage"] == "generate")
    q1.stop(timeout=0.1)  # times out: the job goes on in its thread
    q2 = JobQueue(root, runner)
    try:
        assert q2.start() == []
        assert q2.status(job)["status"] == RUNNING
        gate.touch()
        assert q2.wait(job, timeout=10)["status"] == DONE
    finally:
        q2.stop()


_CHILD = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    sys.path.insert(0, {repo!r})
    from backend.jobs import JobQueue

    def runner(request, ctx):
        (ctx.run_dir / "partial.txt").write_text("half")
        ctx.progress("generate", 0.25, "working")
        if request.get("hang"):
            time.sleep(60)
        return {{"ok": request["prompts"]}}

    q = JobQueue(Path({root!r}), runner)
    q.start()
    first = q.submit({{"prompts": ["finished before the crash"]}})
    q.wait(first, timeout=20)
    print(first, flush=True)
    q.submit({{"prompts": ["killed mid-run"], "hang": True}})
    time.sleep(60)
""")


def _child_runner(request, ctx):
    return {"ok": request["prompts"]}


def test_killed_process_loses_no_finished_run_and_marks_running_interrupted(tmp_path):
    root = tmp_path / "root"
    proc = subprocess.Popen([sys.executable, "-c", _CHILD.format(repo=str(REPO), root=str(root))],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        db = root / "runs.db"

        def child_job_running() -> bool:
            if not db.exists():
                return False
            try:
                with sqlite3.connect(db, timeout=5) as conn:
                    n_done = conn.execute(
                        "SELECT COUNT(*) FROM jobs WHERE status='done'").fetchone()
                    row = conn.execute(
                        "SELECT stage FROM jobs WHERE status='running'").fetchone()
            except sqlite3.OperationalError:  # the child is still creating the schema
                return False
            return n_done[0] == 1 and row is not None and row[0] == "generate"

        wait_for(child_job_running, timeout=30)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    first = proc.stdout.readline().strip()

    q = JobQueue(root, _child_runner)
    interrupted = q.start()
    try:
        assert len(interrupted) == 1
        st = q.status(interrupted[0])
        assert st["status"] == INTERRUPTED and "interrupted" in st["error"]
        assert (Path(st["run_dir"]) / "partial.txt").read_text() == "half"
        assert q.status(first)["status"] == DONE
        assert q.result(first) == {"ok": ["finished before the crash"]}
        # asking again re-runs it (an interrupted run is no cache entry)
        again = q.submit({"prompts": ["killed mid-run"], "hang": True})
        assert again != interrupted[0]
        assert q.wait(again, timeout=10)["status"] == DONE
    finally:
        q.stop()


# --- concurrency ----------------------------------------------------------------------------
def test_concurrent_submits_do_not_corrupt_the_store(tmp_path):
    q = JobQueue(tmp_path / "root", runner, workers=2)
    q.start()
    try:
        prompts = [f"prompt number {i}" for i in range(6)]
        ids: dict[int, list[str]] = {}
        errors: list[BaseException] = []

        def client(t: int) -> None:
            try:
                ids[t] = [q.submit(req(prompts=[p])) for p in prompts]
            except BaseException as exc:  # noqa: BLE001 - surfaced below
                errors.append(exc)

        threads = [threading.Thread(target=client, args=(t,)) for t in range(6)]
        for th in threads:
            th.start()
        for th in threads:
            th.join(timeout=30)
        assert not errors
        # every thread got the same job id for the same request: 6 jobs, not 36
        assert all(ids[t] == ids[0] for t in ids) and len(set(ids[0])) == len(prompts)
        for job, p in zip(ids[0], prompts):
            assert q.wait(job, timeout=20)["status"] == DONE
            assert q.result(job)["lengths"] == [len(p)]
        assert len(q.list_runs(limit=100)) == len(prompts)
        with sqlite3.connect(q.root / "runs.db") as conn:
            assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
            assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        q.stop()


def test_immediate_backend_runs_inside_submit(tmp_path):
    q = JobQueue(tmp_path / "root", runner, backend="immediate")
    job = q.submit(req(prompts=["now"]))
    assert q.status(job)["status"] == DONE and q.result(job)["lengths"] == [3]


def test_unknown_backend_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="unknown queue backend"):
        JobQueue(tmp_path, runner, backend="carrier-pigeon")


def test_backend_from_env_and_redis_url(tmp_path, monkeypatch):
    from huey import MemoryHuey, RedisHuey, SqliteHuey

    monkeypatch.delenv("QLISTEN_QUEUE", raising=False)
    assert type(JobQueue(tmp_path / "a", runner).huey) is SqliteHuey
    monkeypatch.setenv("QLISTEN_QUEUE", "memory")
    assert type(JobQueue(tmp_path / "b", runner).huey) is MemoryHuey
    monkeypatch.setenv("QLISTEN_QUEUE", "redis://127.0.0.1:6399/0")
    try:
        import redis  # noqa: F401
    except ImportError:
        with pytest.raises(RuntimeError, match="pip install redis"):
            JobQueue(tmp_path / "c", runner)
    else:  # builds without connecting; the consumer would connect on start()
        assert isinstance(JobQueue(tmp_path / "c", runner).huey, RedisHuey)
