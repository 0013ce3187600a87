"""The Gradio app builds over the real API, and the page's handlers turn bad input into one clear
line (never a traceback); the form parsing and result formatting are checked by hand.

Fast: no job runs here (every bad request is refused before it is queued); the full runs are in
tests/test_gradio_client.py and tests/test_app_browser.py.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest

from ui.recipe_form import (
    FP_BITS_LABEL,
    PER_CHANNEL_LABEL,
    FormError,
    build_request,
    parse_bits,
    parse_seeds,
    parse_setting,
)
from ui.result_view import fmt, fmt_bytes, media_items, metrics_table, size_speed_markdown


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    """(api, demo) over a fresh store; the job workers are not started (nothing runs)."""
    from backend.api import QlistenAPI
    from ui.app import build_blocks

    api = QlistenAPI(root=tmp_path_factory.mktemp("qlisten_home"))
    return api, build_blocks(api)


def form_values(demo, **changes):
    """The Compare form's values as Gradio hands them to the Run handler (component -> value)."""
    c = demo.qlisten["compare"]
    comps = {k: c[k] for k in ("model", "w_bits", "a_bits", "method", "inputs", "seeds", "steps", "guidance",
                               "telemetry")}
    values = {comp: comp.value for comp in comps.values()}
    values.update({comp: comp.value for comp in c["settings"].values()})
    for key, value in changes.items():
        values[comps[key]] = value
    return values


def run_messages(demo, **changes) -> list[str]:
    """Drive the Run handler; return the status lines it yields."""
    import gradio as gr

    on_run = demo.qlisten["compare"]["on_run"]
    return [out[0] for out in on_run(form_values(demo, **changes), gr.Progress())]


# --- the app ----------------------------------------------------------------------------------

def test_blocks_build_with_every_tab_and_setting(app):
    api, demo = app
    cfg = demo.get_config_file()
    ids = {c["props"].get("elem_id") for c in cfg["components"]}
    for elem in ("model", "w-bits", "a-bits", "method", "inputs", "seeds", "steps", "run", "cancel", "status",
                 "metrics", "size-speed", "inspect-hist", "inspect-heatmap", "inspect-layer", "inspect-worst",
                 "runs-table", "runs-open", "runs-zip", "tab-compare", "tab-inspect", "tab-runs", "tab-listen"):
        assert elem in ids, elem
    methods = {m["name"]: m for m in api.methods()}
    for name in {n for m in methods.values() for n in m["settings"]}:
        assert f"setting-{name}" in ids, name
    # only the default method's settings are visible at first
    settings = demo.qlisten["compare"]["settings"]
    assert {n for n, comp in settings.items() if comp.visible} == set(methods["ptq"]["settings"])
    # the queue is bounded; every page event is private, only the named API is public
    assert demo._queue.max_size == 64
    public = {d["api_name"] for d in cfg["dependencies"] if d.get("api_visibility") == "public"}
    assert public == {"submit", "status", "result", "cancel", "models", "methods", "runs", "artifacts", "wait",
                      "run"}
    run_dep = next(d for d in demo.fns.values() if d.name == "on_run")
    assert run_dep.concurrency_limit == 4 and run_dep.concurrency_id == "compare-run"


def test_method_change_shows_only_its_settings(app):
    api, demo = app
    c = demo.qlisten["compare"]
    on_method_change = next(d.fn for d in demo.fns.values() if d.name == "on_method_change")
    for m in api.methods():
        out = on_method_change(m["name"])
        shown = {n for n, upd in zip(c["settings"], out[1:]) if upd["visible"]}
        assert shown == set(m["settings"]), m["name"]


@pytest.mark.parametrize(("changes", "phrase"), [
    ({"inputs": "\n  \n"}, "give at least one prompt"),
    ({"steps": 0}, "steps must be between 1 and 200"),
    ({"inputs": "y" * 10_000}, "has 10000 characters; the limit is 500"),
    ({"method": "rtzs", "a_bits": "8"}, "A4 or A6"),
    ({"model": "audioldm-s-full-v2", "inputs": "a dog barking"}, "audioldm"),
    ({"seeds": "one, two"}, "seeds must be whole numbers"),
    ({"guidance": "lots"}, "guidance must be a number"),
    ({"model": "tiny-digits", "inputs": "eleven"}, "unknown class 'eleven'"),
])
def test_bad_input_gives_one_clear_line(app, changes, phrase):
    _, demo = app
    with pytest.warns(UserWarning):  # gr.Warning outside a page session is a Python warning
        lines = run_messages(demo, **changes)
    assert len(lines) == 1
    assert lines[0].startswith("⚠️ **Could not run:**"), lines[0]
    assert phrase.lower() in lines[0].lower(), lines[0]
    assert "Traceback" not in lines[0] and len(lines[0]) < 400


def test_show_run_and_inspect_of_an_unknown_or_empty_run(app):
    _, demo = app
    show_run = demo.qlisten["compare"]["show_run"]
    out = show_run("20000101-000000-deadbeef")
    assert out[0] is None and "Cannot open run" in out[1]
    load = demo.qlisten["inspect"]["load"]
    assert "Run a comparison" in load("", "quant_error", True)[0]


# --- form parsing ------------------------------------------------------------------------------

def test_parse_seeds_and_bits():
    assert parse_seeds("0, 1 2;5") == [0, 1, 2, 5]
    assert parse_seeds("3-6, 4") == [3, 4, 5, 6]  # a range, then a repeat dropped
    for bad in ("", "1.5", "-2", "9-3"):
        with pytest.raises(FormError):
            parse_seeds(bad)
    assert parse_bits("4") == 4 and parse_bits(FP_BITS_LABEL) is None and parse_bits(None) is None
    assert parse_bits("16") is None


def test_build_request_takes_only_the_methods_settings():
    req = build_request(model="tiny-sounds", w_bits="4", a_bits=FP_BITS_LABEL, method="qdit",
                        settings={"group_size": "32", "search": 1, "smooth_alpha": "0.7", "avg_bits": "5"},
                        method_settings={"group_size": None, "search": False}, inputs_text=" a \n\n b ",
                        seeds_text="0-1", steps=8.0, guidance="")
    assert req == {"model": "tiny-sounds", "inputs": ["a", "b"], "seeds": [0, 1], "steps": 8, "guidance": None,
                   "recipe": {"w_bits": 4, "a_bits": None, "method": "qdit", "group_size": 32, "search": True},
                   "telemetry": True}
    assert parse_setting("group_size", PER_CHANNEL_LABEL, None) is None
    assert parse_setting("residual_bits", "off", None) is None
    assert parse_setting("smooth_alpha", "search", 0.5) == "search"
    assert parse_setting("avg_bits", "", None) is None and parse_setting("avg_bits", "4.5", None) == 4.5
    with pytest.raises(FormError):
        parse_setting("lowrank_rank", "2.5", 0)
    with pytest.raises(FormError):
        build_request(model="m", w_bits="8", a_bits="8", method="ptq", settings={}, method_settings={},
                      inputs_text="a", seeds_text="0", steps=2.5)


# --- result formatting -------------------------------------------------------------------------

RESULT = {
    "run_id": "r1", "model": "tiny-sounds", "kind": "audio", "recipe_label": "W8A8 Plain min-max PTQ",
    "items": [{"input": "a beep", "seed": 0, "fp": "fp/000.wav", "q": "q/000.wav", "paired": {"snr_db": 12.345}}],
    "metrics": {"fd_fp_vs_ref": None, "fd_q_vs_ref": float("nan"), "fd_q_vs_fp": 0.123456,
                "kid_fp_vs_ref": 0.5, "kid_q_vs_ref": 0.25, "kid_q_vs_fp": -0.01,
                "paired": {"snr_db": 12.345, "lsd_db": 3.0}, "counts": {"fp": 1}, "notes": ["few samples"]},
    "size": {"fp_bytes": 7_270_000, "q_bytes": 2_280_000, "ratio": 0.3136},
    "speed": {"fp_seconds": 1.0, "q_seconds": 1.5, "ratio": 1.5, "quantize_seconds": 18.2},
    "denoiser_cache_hit": True,
}


def test_metrics_table_and_size_speed_text():
    df = metrics_table(RESULT)
    assert list(df["score"]) == ["FAD (Fréchet audio distance)", "KID (kernel inception distance)",
                                 "paired: lsd_db (mean)", "paired: snr_db (mean)"]
    assert list(df.iloc[0, 1:4]) == ["n/a", "n/a", "0.1235"]
    assert list(df.iloc[1, 1:4]) == ["0.5", "0.25", "-0.01"]
    assert df.iloc[3, 3] == "12.35"
    text = size_speed_markdown(RESULT)
    assert "7.27 MB" in text and "2.28 MB" in text
    assert "**3.19× smaller**" in text  # 7.27 / 2.28 = 3.1886, from the bytes, not the 'ratio' field
    assert "reused from cache" in text and "quantizing took 18.2 s" in text
    assert fmt(True) == "yes" and fmt_bytes(999) == "999 B" and fmt_bytes(1_500) == "1.5 kB"
    items = media_items(RESULT, Path("/runs/r1"))
    assert items[0]["fp"] == "/runs/r1/fp/000.wav" and items[0]["score"] == "snr_db 12.3"


def test_zip_of_a_run_folder(tmp_path):
    from ui.runs_tab import runs_table, zip_run

    run = tmp_path / "runs" / "r1"
    (run / "fp").mkdir(parents=True)
    (run / "fp" / "000.wav").write_bytes(b"RIFF1234")
    (run / "run.json").write_text("{}")
    path = zip_run(run, "r1", tmp_path / "out")
    with zipfile.ZipFile(path) as z:
        assert sorted(z.namelist()) == ["r1/", "r1/fp/", "r1/fp/000.wav", "r1/run.json"]
        assert z.read("r1/fp/000.wav") == b"RIFF1234"
    with pytest.raises(FileNotFoundError):
        zip_run(tmp_path / "nope", "nope")
    df = runs_table([{"id": "r1", "status": "done", "created_at": 0.0,
                      "request": {"model": "m", "inputs": ["a", "b"], "seeds": [0, 1], "steps": 8,
                                  "recipe": {"w_bits": 4, "a_bits": None, "method": "qdit"}}}])
    assert df.iloc[0].tolist() == ["r1", "done", "1970-01-01 00:00:00", "m", "W4 A16", "qdit", 2, "0, 1", 8, ""]


def test_histogram_slider_works_without_frames():
    """Each slider step carries its frame's traces and title (gr.Plot drops plotly frames)."""
    import numpy as np

    from backend.telemetry import histogram_figure
    from backend.telemetry.demo import tiny_telemetry
    from ui.inspect_tab import frames_as_update_slider

    tel = tiny_telemetry()
    layer = tel.layers[0]
    fig = histogram_figure(tel, layer)
    out = frames_as_update_slider(fig)
    assert not out.frames
    steps = out.layout.sliders[0].steps
    assert len(steps) == len(tel.timesteps) == len(fig.frames)
    for step, frame, t in zip(steps, fig.frames, tel.timesteps):
        restyle, relayout, idx = step.args
        assert step.method == "update" and list(idx) == list(range(len(fig.data)))
        assert relayout["title.text"] == frame.layout.title.text and f"timestep {t}:" in relayout["title.text"]
        for k, trace in enumerate(frame.data):
            np.testing.assert_allclose(np.asarray(restyle["y"][k], float),
                                       np.asarray(trace.y if trace.y is not None else [], float))
    # the FP histogram of step j is that layer's normalised FP counts at timestep j
    j = len(tel.timesteps) - 1
    h = tel.hist["fp"][0, j].astype(float)
    np.testing.assert_allclose(steps[j].args[0]["y"][0], h / h.sum())


# --- loudness matching (playback option) --------------------------------------------------------

def sine(rate: int, seconds: float, amp: float, hz: float = 997.0):
    import numpy as np

    t = np.arange(int(rate * seconds)) / rate
    return amp * np.sin(2 * np.pi * hz * t)


def test_bs1770_filters_and_compliance_levels():
    import numpy as np

    from ui.loudness import _highpass, _shelf, integrated_loudness

    # the 48 kHz coefficients tabulated in ITU-R BS.1770-4 (Tables 1 and 2)
    b, a = _shelf(48000)
    np.testing.assert_allclose(b, [1.53512485958697, -2.69169618940638, 1.19839281085285], atol=1e-9)
    np.testing.assert_allclose(a, [1.0, -1.69065929318241, 0.73248077421585], atol=1e-9)
    b, a = _highpass(48000)
    np.testing.assert_allclose(b, [1.0, -2.0, 1.0])
    np.testing.assert_allclose(a, [1.0, -1.99004745483398, 0.99007225036621], atol=1e-9)
    # a full-scale 997 Hz sine reads -3.01 LUFS; half amplitude 6.02 dB less
    assert integrated_loudness(sine(48000, 2, 1.0), 48000) == pytest.approx(-3.01, abs=0.01)
    assert integrated_loudness(sine(48000, 2, 0.5), 48000) == pytest.approx(-9.03, abs=0.01)
    assert integrated_loudness(sine(16000, 2, 1.0), 16000) == pytest.approx(-3.01, abs=0.05)
    assert integrated_loudness(np.zeros(16000), 16000) == float("-inf")


def test_gating_drops_silence_but_keeps_the_partial_blocks():
    import numpy as np

    from ui.loudness import integrated_loudness

    # 1 s of full-scale sine then 1 s of silence, 400 ms blocks every 100 ms: 7 full blocks and
    # blocks 3/4, 1/2, 1/4 full pass both gates; silent blocks fail the -70 LUFS gate.
    # mean energy = (7 + .75 + .5 + .25) / 10 = 0.85 of a full block -> -3.01 + 10 log10(0.85)
    x = np.concatenate([sine(48000, 1, 1.0), np.zeros(48000)])
    assert integrated_loudness(x, 48000) == pytest.approx(-3.01 + 10 * np.log10(0.85), abs=0.03)


def test_matched_copy_gains_q_to_fp_loudness(tmp_path):
    import numpy as np
    import soundfile as sf

    from ui.loudness import integrated_loudness, matched_copy

    sf.write(tmp_path / "fp.wav", sine(16000, 1, 0.5), 16000, subtype="FLOAT")
    sf.write(tmp_path / "q.wav", sine(16000, 1, 0.125, hz=440), 16000, subtype="FLOAT")
    path, gain = matched_copy(tmp_path / "fp.wav", tmp_path / "q.wav", tmp_path / "out")
    fp_l = integrated_loudness(sf.read(tmp_path / "fp.wav")[0], 16000)
    q_l = integrated_loudness(sf.read(tmp_path / "q.wav")[0], 16000)
    assert gain == pytest.approx(fp_l - q_l, abs=1e-9) and 11 < gain < 13  # 12.04 dB of amplitude, K-weighted
    assert integrated_loudness(sf.read(path)[0], 16000) == pytest.approx(fp_l, abs=0.01)
    assert sf.read(tmp_path / "q.wav")[0].max() == pytest.approx(0.125, abs=1e-4)  # the stored file is untouched
    # a copy never clips: a loud FP against a quiet Q with a full-scale click gets 0 dB
    q = sine(16000, 1, 0.05)
    q[100] = 1.0
    sf.write(tmp_path / "q2.wav", q, 16000, subtype="FLOAT")
    path2, gain2 = matched_copy(tmp_path / "fp.wav", tmp_path / "q2.wav", tmp_path / "out")
    assert gain2 == pytest.approx(0.0, abs=1e-9) and np.abs(sf.read(path2)[0]).max() <= 1.0


def test_prewarmed_examples_are_the_runs_a_click_asks_for(tmp_path):
    """Prewarm queues exactly the requests the example click sends, so the click hits the cache."""
    from backend.api import QlistenAPI
    from ui.compare_tab import EXAMPLES, example_request, prewarm_examples

    api = QlistenAPI(root=tmp_path, backend="memory")  # workers not started: the jobs stay queued
    jobs = prewarm_examples(api)
    assert len(jobs) == len(EXAMPLES) == len(set(jobs))
    assert all(api.status(j)["status"] == "queued" for j in jobs)
    for row, job in zip(EXAMPLES, jobs):
        assert api.submit(example_request(api.methods(), list(row))) == job  # same content hash
