"""gradio_client submits a real comparison through the app's named API endpoints and gets the
result back; the app makes no outbound connection while starting and serving.

The app runs in this process (uvicorn on a thread) over a real ``QlistenAPI`` whose store is
a temporary QLISTEN_HOME; the job really quantizes and generates with the embedded tiny-digits
model (1 class x 1 seed, 4 steps, no telemetry, to stay quick on 2 cores).
"""

from __future__ import annotations

import ipaddress
import socket
import time
import zipfile

import pytest

REQUEST = {"model": "tiny-digits", "inputs": ["7"], "seeds": [3], "steps": 4, "telemetry": False,
           "recipe": {"w_bits": 8, "a_bits": 8, "method": "ptq"}}


class OutboundGuard:
    """Records every socket connect to a non-loopback address (and refuses it)."""

    def __init__(self) -> None:
        self.attempts: list[object] = []
        self._orig = socket.socket.connect

    def __enter__(self) -> OutboundGuard:
        guard = self

        def connect(sock: socket.socket, address: object) -> None:
            host = address[0] if isinstance(address, tuple) else None
            if host is not None:
                try:
                    loopback = ipaddress.ip_address(host).is_loopback
                except ValueError:
                    loopback = host == "localhost"
                if not loopback:
                    guard.attempts.append(address)
                    raise OSError(f"test: outbound connection to {address} refused")
            return guard._orig(sock, address)

        socket.socket.connect = connect  # type: ignore[method-assign]
        return self

    def __exit__(self, *exc: object) -> None:
        socket.socket.connect = self._orig  # type: ignore[method-assign]


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """(url, api) of the full app over a fresh store; outbound connections recorded throughout."""
    from backend.api import QlistenAPI
    from ui.app import BackgroundServer

    root = tmp_path_factory.mktemp("qlisten_home")
    with OutboundGuard() as guard:
        api = QlistenAPI(root=root)
        api.start()
        try:
            with BackgroundServer(api, admin_token="t" * 32) as url:
                yield url, api, guard
        finally:
            api.stop()
    assert guard.attempts == [], f"the app tried to reach the network: {guard.attempts}"


def test_client_submits_a_job_and_gets_the_result(served, tmp_path):
    from gradio_client import Client

    url, api, guard = served
    client = Client(url, verbose=False, download_files=str(tmp_path))
    endpoints = set(client.view_api(print_info=False, return_format="dict")["named_endpoints"])
    assert {"/submit", "/status", "/wait", "/result", "/run", "/artifacts", "/models", "/methods"} <= endpoints

    job = client.predict(REQUEST, api_name="/submit")
    # a second job waits behind the first (one worker): cancelling it stops it before it starts
    queued = client.predict({**REQUEST, "seeds": [4]}, api_name="/submit")
    assert queued != job
    assert client.predict(queued, api_name="/cancel") == "cancelled"
    assert client.predict(queued, api_name="/status")["status"] == "cancelled"
    status = client.predict(job, 300, api_name="/wait")
    assert status["status"] == "done", status
    result = client.predict(job, api_name="/result")
    assert result["run_id"] == job and result["model"] == "tiny-digits" and result["kind"] == "image"
    assert [(it["input"], it["seed"]) for it in result["items"]] == [("7", 3)]
    run_dir = api.run_dir(job)
    for side in ("fp", "q"):
        assert (run_dir / result["items"][0][side]).is_file()
    assert result["size"]["q_bytes"] < result["size"]["fp_bytes"]  # W8 weights are smaller than FP32
    assert result == api.result(job)  # the client sees exactly what the Python API returns

    # the same request again: the content-hash cache answers with the stored run, at once
    t0 = time.perf_counter()
    again = client.predict(REQUEST, 60, api_name="/run")
    assert time.perf_counter() - t0 < 5.0
    assert again["run_id"] == job

    zpath = client.predict(job, api_name="/artifacts")
    with zipfile.ZipFile(zpath) as z:
        names = set(z.namelist())
    assert f"{job}/{result['items'][0]['fp']}" in names and f"{job}/{result['items'][0]['q']}" in names

    runs = client.predict(10, api_name="/runs")
    assert job in [r["id"] for r in runs]
    assert guard.attempts == []


@pytest.mark.parametrize(("change", "phrase"), [
    ({"inputs": []}, "at least one"),
    ({"steps": 0}, "steps must be between 1 and"),
    ({"inputs": ["x" * 10_000]}, "10000 characters"),
    ({"recipe": {"w_bits": 8, "a_bits": 8, "method": "rtzs"}}, "A4 or A6"),
    ({"model": "audioldm-s-full-v2"}, "audioldm"),
])
def test_client_gets_the_apis_message_for_a_bad_request(served, change, phrase):
    from gradio_client import Client
    from gradio_client.exceptions import AppError

    url, _, _ = served
    client = Client(url, verbose=False)
    with pytest.raises(AppError) as info:
        client.predict({**REQUEST, **change}, api_name="/submit")
    message = str(info.value)
    assert phrase.lower() in message.lower(), message
    assert "Traceback" not in message


def test_client_is_told_about_an_unknown_job(served):
    from gradio_client import Client
    from gradio_client.exceptions import AppError

    client = Client(served[0], verbose=False)
    with pytest.raises(AppError, match="no run with id"):
        client.predict("20000101-000000-deadbeef", api_name="/result")


def test_app_py_serves_on_the_env_port_and_stops_cleanly(tmp_path):
    """``python app.py`` — the Dockerfile's CMD — honours GRADIO_SERVER_NAME/PORT and QLISTEN_HOME."""
    import os
    import signal
    import subprocess
    import sys
    from pathlib import Path

    import httpx

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    root = Path(__file__).resolve().parents[1]
    env = dict(os.environ, GRADIO_SERVER_NAME="127.0.0.1", GRADIO_SERVER_PORT=str(port),
               QLISTEN_HOME=str(tmp_path / "home"), QLISTEN_MOS_ADMIN_TOKEN="m" * 32, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen([sys.executable, "app.py"], cwd=root, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 120
        page = None
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                page = httpx.get(f"http://127.0.0.1:{port}/", timeout=5)
                break
            except httpx.HTTPError:
                time.sleep(0.5)
        assert page is not None and page.status_code == 200, "app.py did not serve"
        assert "qlisten" in page.text
        # the listening-test routes share the port and take the admin token from the environment
        sessions = f"http://127.0.0.1:{port}/mos/admin/sessions"
        assert httpx.get(sessions, headers={"Authorization": "Bearer " + "m" * 32}, timeout=10).status_code == 200
        assert httpx.get(sessions, headers={"Authorization": "Bearer wrong"}, timeout=10).status_code in (401, 403)
        assert (tmp_path / "home" / "runs.db").is_file()  # the store lives where QLISTEN_HOME says
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            out, _ = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, _ = proc.communicate()
    assert proc.returncode is not None
    assert f"http://127.0.0.1:{port}/" in out and "gradio.live" not in out  # no share link
    assert "m" * 32 not in out  # a token given in the environment is never printed
