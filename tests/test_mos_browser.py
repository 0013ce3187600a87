"""One rater completes a short MUSHRA session in a real Chromium (Playwright), with screenshots.

Uses Debian's chromium (/usr/bin/chromium), never a Playwright-downloaded browser; skips with
a reason where it is absent. Screenshots go to tmp_path and are copied to /tmp/mos_shots.
"""

import re
import shutil
from pathlib import Path

import httpx
import pytest

from backend.mos.demo_runs import make_demo_runs
from tests.test_mos_http import ADMIN, AH, LABELS, free_port, leaks, secret_words, start_server

CHROMIUM = Path("/usr/bin/chromium")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--no-first-run", "--disable-sync",
        "--autoplay-policy=no-user-gesture-required"]
pytestmark = [pytest.mark.slow, pytest.mark.browser]


@pytest.mark.parametrize("protocol", ["mushra", "acr"])
def test_one_rater_completes_a_session_in_chromium(tmp_path, protocol):
    if not CHROMIUM.exists():
        pytest.skip("/usr/bin/chromium is absent (apt-get install -y chromium)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright")
    runs = make_demo_runs(tmp_path / "runs", dict(zip(LABELS, [30.0, 15.0, 0.0])),
                          prompts=["a dog barking", "rain on a roof"], seconds=0.4)
    shots = tmp_path / "shots"
    shots.mkdir()
    proc, base = start_server(tmp_path / "mos.sqlite", tmp_path / "runs", free_port())
    try:
        sess = httpx.post(base + "/mos/admin/sessions", headers=AH, timeout=30, json={
            "runs": [r.name for r in runs[:2]], "anchor_run": runs[2].name, "protocol": protocol,
            "trials_per_rater": 2, "n_attention_checks": 1, "n_raters": 1, "seed": 5,
            "title": "Demo listening test"}).json()
        link = sess["raters"][0]
        requests: list[str] = []
        with sync_api.sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=ARGS, headless=True)
            page = browser.new_page(viewport={"width": 1000, "height": 900})
            page.on("request", lambda r: requests.append(r.url))
            assert link["link"].startswith(base + "/mos/rate/")
            page.goto(link["link"])
            page.wait_for_selector("#consent-btn")
            assert page.is_disabled("#consent-btn")
            page.screenshot(path=str(shots / f"{protocol}_1_consent.png"), full_page=True)
            page.check("#consent-box")
            page.click("#consent-btn")

            page.wait_for_selector("#training-btn")
            assert page.is_disabled("#training-btn")  # examples must be heard first
            for btn in page.query_selector_all("button.play"):
                page.wait_for_function("b => !b.disabled", arg=btn, timeout=10000)
                btn.click()
                page.wait_for_function("b => b.parentElement.textContent.includes('heard')",
                                       arg=btn, timeout=10000)
            page.screenshot(path=str(shots / f"{protocol}_2_training.png"), full_page=True)
            page.click("#training-btn")

            for n in range(3):  # 2 trials + 1 attention check
                page.wait_for_selector("#submit-btn")
                page.wait_for_function(f"document.querySelector('h1').textContent"
                                       f".startsWith('Page {n + 1} ')")
                instruction = page.query_selector(".instr")
                target = None
                if instruction:
                    target = int(re.search(r"(\d+)\)?\.$", instruction.inner_text()).group(1))
                if protocol == "mushra":
                    for i, s in enumerate(page.query_selector_all("input.rating")):
                        s.fill(str(target if target is not None else 90 - 20 * i))
                else:
                    page.check(f"input.rating[value='{target or 4}']")
                assert page.is_disabled("#submit-btn")  # rated but not yet heard
                for btn in page.query_selector_all("button.play"):  # the open reference too
                    page.wait_for_function("b => !b.disabled", arg=btn, timeout=10000)
                    btn.click()
                    page.wait_for_function(
                        "b => b.parentElement.textContent.includes('heard')", arg=btn,
                        timeout=10000)
                page.wait_for_function("!document.querySelector('#submit-btn').disabled")
                page.screenshot(path=str(shots / f"{protocol}_{3 + n}_trial{n + 1}.png"),
                                full_page=True)
                page.click("#submit-btn")
            page.wait_for_selector("#done")
            page.screenshot(path=str(shots / f"{protocol}_6_done.png"), full_page=True)
            html = page.content()
            browser.close()
        words = secret_words(runs, tmp_path)
        assert not leaks(html, words)
        for url in requests:
            # nothing outside the loopback server (blob: URLs are the in-page audio copies)
            assert url.startswith((base, "blob:" + base)), url
            assert not leaks(url, words), url
        res = httpx.get(f"{base}/mos/admin/sessions/{sess['session_id']}/results", headers=AH,
                        timeout=30).json()
        per_trial = 4 if protocol == "mushra" else 1  # FP, 2 tests, anchor on one MUSHRA page
        assert res["raters"][0]["completed"] and res["n_ratings"] == 2 * per_trial + 1
        assert res["raters"][0]["n_failed"] == 0 and ADMIN not in html
    finally:
        proc.kill()
        proc.wait(10)
        out = Path("/tmp/mos_shots")
        out.mkdir(exist_ok=True)
        for f in shots.glob("*.png"):
            shutil.copy(f, out / f.name)
