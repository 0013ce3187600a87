"""``python -m bench.app``: how long a person waits in the app, on this machine (2 CPU cores).

Measured through the real path a client takes: the full app (Gradio + /mos, uvicorn on a
thread of this process) over a fresh, empty store, driven by ``gradio_client``:

* **cold** — the page's default request on the embedded audio model (tiny-sounds, the first
  four default prompts, seed 0, the model's default steps, W8A8 plain PTQ, telemetry on) from
  submit to result, in a process that has not loaded the model yet (load, calibrate, quantize,
  generate FP and quantized, score, histograms, store). Goal < 60 s.
* **cached repeat** — the identical request again: the content-hash cache returns the stored
  run. Goal < 1 s (submit + result, two HTTP round trips).
* **other prompts** — same model and recipe, new prompts: the quantized denoiser comes from
  the cache; FP and quantized outputs are generated anew.
* **cold, no telemetry** — the default request with ``telemetry: False`` on a second fresh
  store (same process, so the pipeline is already loaded: ~4 s less than truly cold), to show
  what the activation histograms cost.

The machine is shared: the load average before and after is recorded next to the figures.

Writes bench/results/app.json and app.md.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from bench.common import environment, write_results

GOALS = {"cold": 60.0, "cached repeat": 1.0}


def default_request() -> dict[str, Any]:
    """The request the Compare tab sends when a person presses Run without changing anything."""
    from backend.api import QlistenAPI
    from ui.compare_tab import DEFAULT_INPUTS_SHOWN

    model = next(m for m in QlistenAPI.models() if m["name"] == "tiny-sounds")
    return {"model": "tiny-sounds", "inputs": model["default_inputs"][:DEFAULT_INPUTS_SHOWN], "seeds": [0],
            "steps": model["default_steps"], "guidance": None, "telemetry": True,
            "recipe": {"w_bits": 8, "a_bits": 8, "method": "ptq"}}


def timed_run(client: Any, request: dict[str, Any], poll: float = 0.1) -> dict[str, Any]:
    """Submit, poll /status, fetch /result; seconds from submit to result in hand."""
    t0 = time.perf_counter()
    job = client.predict(request, api_name="/submit")
    stages: dict[str, float] = {}
    while True:
        st = client.predict(job, api_name="/status")
        if st["status"] in ("done", "failed", "cancelled", "interrupted"):
            break
        stages.setdefault(st.get("stage") or st["status"], time.perf_counter() - t0)
        time.sleep(poll)
    if st["status"] != "done":
        raise RuntimeError(f"job {job} {st['status']}: {st.get('error')}")
    result = client.predict(job, api_name="/result")
    seconds = time.perf_counter() - t0
    return {"job": job, "seconds": seconds, "items": len(result["items"]), "stage_started_s": stages,
            "denoiser_cache_hit": result.get("denoiser_cache_hit"), "speed": result.get("speed")}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2, help="torch threads (the machine has 2 cores)")
    ap.add_argument("--repeats", type=int, default=5, help="cached repeats (median reported)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)

    from gradio_client import Client

    from backend.api import QlistenAPI
    from ui.app import BackgroundServer

    request = default_request()
    other = dict(request, inputs=["a drum hit", "a rising siren"])
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="qlisten_bench_") as home:
        api = QlistenAPI(root=Path(home))
        api.start()
        try:
            with BackgroundServer(api, admin_token="b" * 32) as url:
                client = Client(url, verbose=False)
                cold = timed_run(client, request)
                cached = [timed_run(client, request, poll=0.01) for _ in range(args.repeats)]
                assert all(c["job"] == cold["job"] for c in cached), "the cache must return the stored run"
                prompts = timed_run(client, other)
        finally:
            api.stop()
    with tempfile.TemporaryDirectory(prefix="qlisten_bench_") as home:
        api = QlistenAPI(root=Path(home))
        api.start()
        try:
            with BackgroundServer(api, admin_token="b" * 32) as url:
                no_tel = timed_run(Client(url, verbose=False), dict(request, telemetry=False))
        finally:
            api.stop()
    load_after = os.getloadavg()
    cached_s = sorted(c["seconds"] for c in cached)
    rows = [
        {"case": "cold", "seconds": cold["seconds"], "goal_s": GOALS["cold"], "detail": cold},
        {"case": "cached repeat", "seconds": cached_s[len(cached_s) // 2], "goal_s": GOALS["cached repeat"],
         "detail": {"all_seconds": cached_s}},
        {"case": "other prompts", "seconds": prompts["seconds"], "goal_s": None, "detail": prompts},
        {"case": "cold, no telemetry (model already loaded)", "seconds": no_tel["seconds"], "goal_s": None,
         "detail": no_tel},
    ]
    env = dict(environment(), loadavg_1m_before=load_before[0], loadavg_1m_after=load_after[0])
    payload = {"request": request, "other_prompts": other["inputs"], "environment": env, "rows": rows}
    lines = ["# bench.app", "",
             f"Time from submit to result through the app's API (gradio_client -> Gradio -> backend.api), "
             f"fresh store, torch {torch.__version__}, {args.threads} threads on {environment()['cpus']} CPUs.",
             "", f"Default request: tiny-sounds, {len(request['inputs'])} prompts x 1 seed, {request['steps']} steps, "
             "W8A8 plain PTQ, telemetry on.",
             f"Shared machine: 1-minute load average {load_before[0]:.1f} before, {load_after[0]:.1f} after "
             f"(above {environment()['cpus']} means other jobs were competing for the cores).", "",
             "| case | seconds | goal | met |", "|---|---|---|---|"]
    for r in rows:
        goal = "" if r["goal_s"] is None else f"< {r['goal_s']:g} s"
        met = "" if r["goal_s"] is None else ("yes" if r["seconds"] < r["goal_s"] else "NO")
        lines.append(f"| {r['case']} | {r['seconds']:.3f} | {goal} | {met} |")
    stages = ", ".join(f"{k} at {v:.1f} s" for k, v in cold["stage_started_s"].items())
    stages_nt = ", ".join(f"{k} at {v:.1f} s" for k, v in no_tel["stage_started_s"].items())
    lines += ["", f"Cold run stages first seen: {stages}.",
              f"Cached repeats (s): {', '.join(f'{s:.3f}' for s in cached_s)}.",
              f"Other prompts reused the quantized denoiser: {prompts['denoiser_cache_hit']}.",
              f"No-telemetry run stages first seen: {stages_nt}."]
    jpath, mpath = write_results("app", payload, "\n".join(lines))
    print("\n".join(lines))
    print(f"wrote {jpath} and {mpath}")


if __name__ == "__main__":
    main()
