"""A person's path through the app in a real Chromium (Playwright): full comparisons on the
embedded tiny-sounds and tiny-digits models, the Inspect plots, an example answered from the
run store, a bad input, the Runs tab. Screenshots go to a test-run folder; with
QLISTEN_KEEP_SCREENSHOTS=1 they are also copied to bench/results/screenshots/ (opt-in, so that a
test run never rewrites files of the repository).

Uses Debian's chromium (/usr/bin/chromium), never a Playwright-downloaded browser; skips with a
reason where it is absent. The app runs in this process over a fresh temporary store; the jobs
are real (quantize, generate FP and quantized with the same seeds, score, telemetry), kept
small: 2 inputs x 1 seed x 8 steps. The tests share one server and run in file order (the Runs
tab test reopens the runs made before it).
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import httpx
import pytest

CHROMIUM = Path("/usr/bin/chromium")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--no-first-run", "--disable-sync"]
SHOTS_KEPT = Path(__file__).resolve().parents[1] / "bench" / "results" / "screenshots"
RUN_TIMEOUT_MS = 400_000
pytestmark = [pytest.mark.slow, pytest.mark.browser]


@pytest.fixture(scope="module")
def shots(tmp_path_factory):
    folder = tmp_path_factory.mktemp("app_shots")
    yield folder
    if os.environ.get("QLISTEN_KEEP_SCREENSHOTS") != "1":
        return
    SHOTS_KEPT.mkdir(parents=True, exist_ok=True)
    for f in sorted(folder.glob("*.png")):
        shutil.copy(f, SHOTS_KEPT / f.name)


@pytest.fixture(scope="module")
def app_url(tmp_path_factory):
    if not CHROMIUM.exists():
        pytest.skip("/usr/bin/chromium is absent (apt-get install -y chromium)")
    pytest.importorskip("playwright.sync_api", reason="pip install playwright")
    from backend.api import QlistenAPI
    from ui.app import BackgroundServer

    api = QlistenAPI(root=tmp_path_factory.mktemp("qlisten_home"))
    api.start()
    try:
        with BackgroundServer(api, admin_token="a" * 32) as url:
            yield url
    finally:
        api.stop()


@pytest.fixture(scope="module")
def browser(app_url):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=str(CHROMIUM), args=ARGS, headless=True)
        yield b
        b.close()


@pytest.fixture
def page(browser, app_url):
    p = browser.new_page(viewport={"width": 1300, "height": 1000})
    outside: list[str] = []
    p.on("request", lambda r: outside.append(r.url) if not r.url.startswith((app_url, "data:", "blob:")) else None)
    p.goto(app_url)
    p.wait_for_selector("#run", timeout=60_000)
    yield p
    p.close()
    assert outside == [], f"the page fetched from outside the app: {outside[:5]}"


def pick(page, elem_id: str, option: str) -> None:
    """Choose ``option`` in a Gradio dropdown the way a person does."""
    page.click(f"#{elem_id} input")
    page.get_by_role("option", name=option, exact=True).click()


def fill_form(page, inputs: str, seeds: str = "0", steps: int = 8) -> None:
    page.fill("#inputs textarea", inputs)
    page.fill("#seeds textarea, #seeds input", seeds)
    page.fill("#steps input", str(steps))


def status_text(page) -> str:
    return page.inner_text("#status")


def run_and_wait(page, first_media: str, last_media: str, click: bool = True) -> float:
    t0 = time.perf_counter()
    if click:
        page.click("#run")
    page.wait_for_selector(last_media, timeout=RUN_TIMEOUT_MS)
    page.wait_for_selector(first_media)
    page.wait_for_function("document.querySelector('#status').innerText.includes('Showing run')")
    return time.perf_counter() - t0


def fetch_ok(page, url: str) -> bytes:
    resp = page.request.get(url)
    assert resp.ok, (url, resp.status)
    return resp.body()


def check_metrics(page, fd_name: str) -> None:
    table = page.inner_text("#metrics")
    assert fd_name in table and "KID" in table and "paired:" in table, table
    assert "smaller" in page.inner_text("#size-speed")


def check_inspect(page, shots: Path, name: str) -> None:
    page.get_by_role("tab", name="Inspect").click()
    page.wait_for_selector("#inspect-hist .js-plotly-plot .main-svg", timeout=60_000)
    page.wait_for_selector("#inspect-heatmap .js-plotly-plot .main-svg", timeout=60_000)
    assert "layers x" in page.inner_text("#inspect-status")
    page.wait_for_function("document.querySelector('#inspect-worst').innerText.split('transformer_blocks')"
                           ".length > 3", timeout=30_000)  # the worst layers, by name
    title = page.locator("#inspect-hist .gtitle").text_content()  # SVG text: text_content, not inner_text
    assert "timestep" in title and "FP run" in page.locator("#inspect-hist .legend").text_content()
    # drag the plotly timestep slider to its end: the title must follow (no frames needed)
    rail = page.locator("#inspect-hist .slider-rail-touch-rect").bounding_box()
    page.mouse.click(rail["x"] + rail["width"] - 2, rail["y"] + rail["height"] / 2)
    page.wait_for_function(
        "t => document.querySelector('#inspect-hist .gtitle').textContent !== t", arg=title, timeout=10_000)
    last = page.locator("#inspect-hist .gtitle").text_content()
    assert "timestep" in last and last != title
    page.screenshot(path=str(shots / f"{name}_inspect.png"), full_page=True)
    page.get_by_role("tab", name="Compare").click()


def test_full_comparison_on_tiny_sounds(page, shots):
    fill_form(page, "a low humming tone\na high beep")
    page.click("#run")
    page.wait_for_function("document.querySelector('#status').innerText.includes('submitted')", timeout=30_000)
    page.wait_for_timeout(1500)
    page.screenshot(path=str(shots / "tiny_sounds_running.png"), full_page=True)  # gr.Progress with the stage
    took = run_and_wait(page, "#fp-audio-0", "#q-audio-1", click=False)
    assert "Done" in status_text(page) or "Showing run" in status_text(page)
    for side in ("fp", "q"):
        for i in (0, 1):
            audio = page.locator(f"#{side}-audio-{i}")
            assert audio.locator("audio, wave, canvas").count() + audio.locator("[data-testid]").count() > 0
    # the players' files are served and are the WAV files written by the run
    links = page.eval_on_selector_all(
        "#fp-audio-0 a[href], #q-audio-0 a[href], #fp-audio-0 audio[src], #q-audio-0 audio[src]",
        "els => els.map(e => e.href || e.src)")
    assert links, "no audio file URL in the players"
    for url in links:
        if url.startswith("http"):
            assert fetch_ok(page, url)[:4] == b"RIFF"
    check_metrics(page, "FAD")
    page.screenshot(path=str(shots / "tiny_sounds_compare.png"), full_page=True)
    # the labelled playback option: quantized clips re-served gained to FP loudness
    page.check("#loudness-match input")
    page.wait_for_function("document.querySelector('#q-audio-1').innerText.includes('loudness-matched')",
                           timeout=30_000)
    assert "loudness-matched" not in page.inner_text("#fp-audio-0")
    page.uncheck("#loudness-match input")
    page.wait_for_function("!document.querySelector('#q-audio-1').innerText.includes('loudness-matched')")
    check_inspect(page, shots, "tiny_sounds")

    # the same request as the first example: clicking it is answered from the store at once
    t0 = time.perf_counter()
    page.locator("#examples tbody tr").first.click()
    page.wait_for_function("document.querySelector('#status').innerText.includes('Done')", timeout=30_000)
    assert time.perf_counter() - t0 < 10.0, f"cached example took {time.perf_counter() - t0:.1f} s (run: {took:.0f} s)"


def test_full_comparison_on_tiny_digits(page, shots):
    pick(page, "model", "tiny-digits (embedded class-conditional image DiT)")
    page.wait_for_function("document.querySelector('#inputs textarea').value.startsWith('0\\n1')")
    pick(page, "method", "Q-DiT")
    page.wait_for_selector("#setting-search", state="visible")
    assert not page.locator("#setting-lzs_group").is_visible()
    pick(page, "w-bits", "4")
    fill_form(page, "3\n7")
    run_and_wait(page, "#fp-image-0", "#q-image-1")
    for sel in ("#fp-image-0 img", "#q-image-0 img", "#fp-image-1 img", "#q-image-1 img"):
        page.wait_for_function("s => { const i = document.querySelector(s); return i && i.naturalWidth > 0; }",
                               arg=sel, timeout=30_000)
    assert "W4A8 Q-DiT" in page.inner_text("#run-title")
    check_metrics(page, "FID")
    page.screenshot(path=str(shots / "tiny_digits_compare.png"), full_page=True)
    check_inspect(page, shots, "tiny_digits")


def test_bad_input_is_one_line_in_the_page(page, shots):
    fill_form(page, "x" * 10_000)
    page.click("#run")
    page.wait_for_function("document.querySelector('#status').innerText.includes('Could not run')")
    assert "10000 characters; the limit is 500" in status_text(page)
    page.locator(".toast-body").first.wait_for(timeout=10_000)  # the warning toast as well
    page.screenshot(path=str(shots / "bad_input.png"), full_page=True)
    fill_form(page, "a chord", steps=0)
    page.click("#run")
    page.wait_for_function("document.querySelector('#status').innerText.includes('steps must be')")
    # a hub model with no network: the reason shows as soon as it is picked, and Run says it again
    pick(page, "model", "AudioLDM small (cvssp/audioldm-s-full-v2) (unavailable here)")
    page.wait_for_function("document.querySelector('#model-info').innerText.includes('Unavailable here')")
    page.fill("#steps input", "8")
    page.click("#run")
    page.wait_for_function("document.querySelector('#status').innerText.includes('audioldm')")
    page.screenshot(path=str(shots / "hub_model_offline.png"), full_page=True)
    assert "Traceback" not in page.content()
    pick(page, "model", "tiny-sounds (embedded text-to-audio DiT)")


def test_runs_tab_reopens_and_downloads(page, shots, app_url):
    page.get_by_role("tab", name="Runs").click()
    page.wait_for_function("(t => t.includes('tiny-sounds') && t.includes('tiny-digits'))"
                           "(document.querySelector('#runs-table').innerText)")
    page.click("#runs-zip")
    page.wait_for_selector("#runs-file a[href]", timeout=30_000)
    href = page.get_attribute("#runs-file a[href]", "href")
    body = httpx.get(href if href.startswith("http") else app_url.rstrip("/") + href, timeout=30).content
    assert body[:2] == b"PK"  # a zip
    page.screenshot(path=str(shots / "runs.png"), full_page=True)
    page.click("#runs-open")  # the newest run (tiny-digits) back into Compare
    page.wait_for_selector("#fp-image-0", timeout=30_000)
    assert "Showing run" in status_text(page)
    assert page.input_value("#inputs textarea") == "3\n7"
    page.get_by_role("tab", name="Listen").click()  # the MOS admin view is mounted in the same app
    page.wait_for_selector("#mos-create", timeout=30_000)
    page.click("#mos-refresh")  # the audio run (not the image run) can be put in a listening test
    page.wait_for_function("document.querySelectorAll('#mos-runs input[type=checkbox]').length == 1",
                           timeout=30_000)
    assert "W8A8 Plain min-max PTQ" in page.inner_text("#mos-runs")
    page.screenshot(path=str(shots / "listen.png"), full_page=True)
