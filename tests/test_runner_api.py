"""The one door (backend.api) and one job (backend.runner) on the embedded models, for real.

Bad input must come back as one clear line before anything is queued; a job that fails at
run time must fail alone, with its message, and leave every finished run intact.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf
from PIL import Image

from backend.api import MAX_PROMPT_CHARS, QlistenAPI, RequestError, validate_request
from backend.mos.sources import load_run

W8A8 = {"w_bits": 8, "a_bits": 8, "method": "ptq"}


@pytest.fixture(scope="module")
def api(tmp_path_factory):
    a = QlistenAPI(tmp_path_factory.mktemp("qlisten"), backend="immediate")
    a.start()
    return a


@pytest.mark.parametrize("request_, message", [
    ({"model": "tiny-sounds", "inputs": [], "seeds": [0]}, "at least one prompt"),
    ({"model": "tiny-sounds", "inputs": ["  ", ""], "seeds": [0]}, "at least one prompt"),
    ({"model": "tiny-sounds", "inputs": ["x" * 10_000]}, f"the limit is {MAX_PROMPT_CHARS}"),
    ({"model": "tiny-sounds", "inputs": ["a hum"], "steps": 0}, "steps must be between 1 and 200"),
    ({"model": "tiny-sounds", "inputs": ["a hum"], "steps": "many"}, "steps must be a whole number"),
    ({"model": "tiny-sounds", "inputs": ["a hum"], "seeds": [1, 1]}, "seeds repeat"),
    ({"model": "tiny-sounds", "inputs": ["a hum"], "seeds": [-1]}, "a seed must be between 0"),
    ({"model": "tiny-sounds", "inputs": ["a hum"], "guidance": float("nan")}, "guidance must be a number"),
    ({"model": "tiny-sounds", "inputs": ["a hum"], "recipe": {"w_bits": 5}}, "weight bits 5 unsupported"),
    ({"model": "tiny-sounds", "inputs": ["a hum"], "recipe": {"a_bits": 8, "method": "rtzs"}}, "RT/ZS"),
    ({"model": "tiny-sounds", "inputs": ["a hum"], "recipe": {"method": "magic"}}, "unknown method"),
    ({"model": "tiny-sounds", "inputs": ["a hum"], "recipe": {"bogus": 1}}, "unknown recipe settings"),
    ({"model": "tiny-digits", "inputs": ["11"]}, "unknown class '11'"),
    ({"model": "no-such-model"}, "no-such-model"),
    ({"model": "dit-xl-2-256", "inputs": ["tabby"]}, "needs a download from the hub"),
    ({"model": "tiny-sounds", "inputs": ["a"] * 16, "seeds": list(range(8))}, "the limit is 64"),
    ({"model": "tiny-sounds", "prompt": "typo"}, "unknown request field(s): prompt"),
])
def test_bad_requests_get_one_clear_line(api, request_, message):
    with pytest.raises(RequestError) as err:
        api.submit(request_)
    text = str(err.value)
    assert message in text
    assert "Traceback" not in text and "\n" not in text
    assert api.list_runs() == [] or all(r["request"] != request_ for r in api.list_runs())


def test_normalised_request_fills_defaults_so_equal_requests_hash_alike():
    a = validate_request({"model": "tiny-digits", "inputs": "3\n\n7\n"})
    b = validate_request({"model": "tiny-digits", "inputs": ["3", "7"], "seeds": [0], "steps": 25,
                          "guidance": a["guidance"], "recipe": {}})
    assert a == b
    assert a["inputs"] == ["3", "7"] and a["seeds"] == [0] and a["recipe"]["w_bits"] == 8


def test_models_and_methods_lists(api):
    models = {m["name"]: m for m in api.models()}
    assert models["tiny-sounds"]["available"] and models["tiny-digits"]["available"]
    assert not models["audioldm-s-full-v2"]["available"]
    assert "offline" in models["audioldm-s-full-v2"]["unavailable_reason"]
    methods = {m["name"]: m for m in api.methods()}
    assert 8 not in methods["rtzs"]["a_bits"] and 8 in methods["ptq"]["a_bits"]
    assert "residual_bits" in methods["rtzs"]["settings"]


def test_digits_comparison_end_to_end_and_cache(api):
    req = {"model": "tiny-digits", "inputs": ["3", "7"], "seeds": [0, 1], "steps": 6, "recipe": W8A8}
    job = api.submit(req)
    st = api.status(job)
    assert st["status"] == "done", st
    res = api.result(job)
    run_dir = api.run_dir(job)
    assert [(i["input"], i["seed"]) for i in res["items"]] == [("3", 0), ("3", 1), ("7", 0), ("7", 1)]
    fp = np.stack([np.asarray(Image.open(run_dir / i["fp"])) for i in res["items"]])
    q = np.stack([np.asarray(Image.open(run_dir / i["q"])) for i in res["items"]])
    assert fp.shape == q.shape and fp.dtype == np.uint8
    # W8A8 is close to FP but not identical; the stored PSNR is the PSNR of the stored images
    assert 0 < np.abs(fp.astype(int) - q.astype(int)).mean() < 10
    mse = ((fp.astype(np.float64) - q.astype(np.float64)) / 255.0) ** 2
    psnr = [10 * np.log10(1.0 / m.mean()) for m in mse]
    got = [i["paired"]["psnr_db"] for i in res["items"]]
    np.testing.assert_allclose(got, psnr, rtol=0.05)
    assert res["metrics"]["counts"] == {"fp": 4, "q": 4, "ref": 360}
    assert res["metrics"]["kid_q_vs_ref"] is not None
    # packed 8-bit weights: a quarter of the quantized layers' FP32 bytes plus fp16 scales and
    # FP32 biases; the layers kept in FP (embeddings, norms, final projection) count at FP32
    rep = json.loads((run_dir / "report.json").read_text())
    for layer in rep["layers"]:
        out_f, in_f = layer["shape"][:2]
        codes_and_scales = out_f * in_f + 2 * out_f  # int8 codes + one fp16 scale per row
        assert codes_and_scales <= layer["stored_bytes"] <= codes_and_scales + 4 * out_f + 64, layer
    saved = rep["quantized_fp_bytes"] - rep["quantized_stored_bytes"]
    assert res["size"]["q_bytes"] == res["size"]["fp_bytes"] - saved
    assert res["telemetry"] and api.telemetry(job).layers
    assert not res["denoiser_cache_hit"]

    again = api.submit(dict(req))
    assert again == job  # the content-hash cache: the stored run, at once
    other = api.submit(dict(req, inputs=["5"], seeds=[2]))
    assert other != job
    res2 = api.result(other)
    assert res2["denoiser_cache_hit"]  # same model + recipe + steps: quantized denoiser reused
    assert res2["size"] == res["size"]


def test_sounds_run_writes_wavs_and_a_mos_ready_run_json(api):
    job = api.submit({"model": "tiny-sounds", "inputs": ["a low humming tone"], "seeds": [3], "steps": 5,
                      "recipe": W8A8, "telemetry": False})
    assert api.status(job)["status"] == "done", api.status(job)
    res = api.result(job)
    run_dir = api.run_dir(job)
    fp, rate = sf.read(run_dir / res["items"][0]["fp"])
    assert rate == res["sample_rate"] == 16_000 and fp.ndim == 1 and np.abs(fp).max() > 0.01
    assert res["telemetry"] is None
    assert any("need >= 2" in n for n in res["metrics"]["notes"])  # one sample: no KID/FD, said so
    meta = load_run(run_dir)
    assert meta["prompts"] == ["a low humming tone"] and len(meta["_items"]) == 1
    assert json.loads((run_dir / "report.json").read_text())["model_stored_bytes"] == res["size"]["q_bytes"]


def test_a_failing_job_fails_alone_with_a_clear_message(api):
    before = {r["id"]: r["status"] for r in api.list_runs()}
    # a group of 96 does not divide the digits DiT's 128 channels: found only at quantize time
    job = api.submit({"model": "tiny-digits", "inputs": ["1"], "steps": 4,
                      "recipe": {"w_bits": 4, "a_bits": None, "method": "ptq", "group_size": 96}})
    st = api.status(job)
    assert st["status"] == "failed"
    assert "96" in st["error"] and "Traceback" not in st["error"]
    after = {r["id"]: r["status"] for r in api.list_runs()}
    assert all(after[k] == v for k, v in before.items())


def test_unknown_run_id_is_a_clear_error(api):
    with pytest.raises(RequestError, match="no run with id"):
        api.status("nope")


def test_ptq4adm_calibrates_on_coverage_selected_prompts_of_the_same_count():
    from backend.models.registry import get_entry
    from backend.quant.recipes import Recipe
    from backend.runner import calibration_inputs

    entry = get_entry("tiny-sounds")
    plain = calibration_inputs(entry, Recipe(method="ptq"))
    chosen = calibration_inputs(entry, Recipe(method="ptq4adm"))
    assert plain == list(entry.default_inputs)
    assert len(chosen) == len(plain) and len(set(chosen)) == len(chosen)
    assert chosen != plain and all(isinstance(p, str) and p.strip() for p in chosen)
    assert calibration_inputs(entry, Recipe(method="ptq4adm")) == chosen  # deterministic for a seed
    # a class-conditional model has no prompts to augment: its classes are the calibration set
    digits = get_entry("tiny-digits")
    assert calibration_inputs(digits, Recipe(method="ptq4adm")) == list(digits.default_inputs)
