"""Runs -> listening-test conditions: alignment by (prompt, seed) and the BS.1534 anchor."""

import json

import numpy as np
import pytest
import soundfile as sf

from backend.mos.demo_runs import make_demo_runs
from backend.mos.sources import conditions_from_runs, item_key, lowpass_anchor


@pytest.fixture()
def runs(tmp_path):
    return make_demo_runs(tmp_path / "runs", {"good": 30.0, "mid": 15.0, "bad": 0.0},
                          prompts=["p0", "p1", "p2"], seeds=[0, 1], seconds=0.25)


def test_fp_once_tests_and_run_anchor(runs):
    cs = conditions_from_runs(runs[:2], anchor_run=runs[2])
    assert [c.label for c in cs.conditions] == ["FP", "good", "mid", "anchor: bad"]
    assert [c.role for c in cs.conditions] == ["reference", "test", "test", "anchor"]
    assert len(cs.items) == 6
    for c in cs.conditions:
        assert set(c.files) == {it.key for it in cs.items}
    # the anchor run listed among the tests too is used only as the anchor
    cs2 = conditions_from_runs(runs, anchor_run=runs[2])
    assert [c.label for c in cs2.conditions] == ["FP", "good", "mid", "anchor: bad"]
    assert cs.conditions[1].meta["metrics"] == {"snr_db": 30.0}


def test_alignment_by_prompt_and_seed_not_by_position(runs):
    # reverse the order of run 1's lists and drop one pair: files must follow (prompt, seed)
    meta_path = runs[1] / "run.json"
    meta = json.loads(meta_path.read_text())
    for k in ("prompts", "seeds", "fp_audio", "q_audio"):
        meta[k] = meta[k][::-1][:-1]
    meta_path.write_text(json.dumps(meta))
    cs = conditions_from_runs(runs[:2])
    assert len(cs.items) == 5  # the pair missing in run 1 is left out everywhere
    good, mid = cs.conditions[1], cs.conditions[2]
    meta0 = json.loads((runs[0] / "run.json").read_text())
    for it in cs.items:
        assert it.key == item_key(it.prompt, it.seed)
        pairs0 = list(zip(meta0["prompts"], meta0["seeds"]))
        pairs1 = list(zip(meta["prompts"], meta["seeds"]))
        i0, i1 = pairs0.index((it.prompt, it.seed)), pairs1.index((it.prompt, it.seed))
        assert good.files[it.key] == str((runs[0] / meta0["q_audio"][i0]).resolve())
        assert mid.files[it.key] == str((runs[1] / meta["q_audio"][i1]).resolve())
        assert i0 != i1  # the reversal really moved the pairs
        # and the audio agrees: same prompt -> same pitch -> high correlation with FP
        fp, _ = sf.read(cs.conditions[0].files[it.key])
        assert np.corrcoef(sf.read(mid.files[it.key])[0], fp)[0, 1] > 0.9


def test_runs_sharing_no_item_are_refused(runs):
    meta_path = runs[1] / "run.json"
    meta = json.loads(meta_path.read_text())
    meta["seeds"] = [s + 100 for s in meta["seeds"]]
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="share no"):
        conditions_from_runs(runs[:2])


def test_lowpass_anchor_is_zero_phase_and_band_limited(tmp_path):
    sr = 16000
    t = np.arange(sr) / sr
    low, high = np.sin(2 * np.pi * 500 * t), np.sin(2 * np.pi * 6000 * t)
    sf.write(str(tmp_path / "x.wav"), (0.3 * (low + high)).astype(np.float32), sr, subtype="FLOAT")
    y, sr2 = sf.read(str(lowpass_anchor(tmp_path / "x.wav", tmp_path / "y.wav")))
    assert sr2 == sr
    mid = slice(2000, 14000)  # away from the edges
    # the 500 Hz part passes unchanged in amplitude AND phase (forward-backward filtering)
    assert np.max(np.abs(y[mid] - 0.3 * low[mid])) < 0.01
    # the 6 kHz part is gone: 8th-order Butterworth applied twice, > 60 dB down
    residual = y[mid] - 0.3 * low[mid]
    assert np.sqrt(np.mean(residual**2)) < 0.3 / np.sqrt(2) * 10 ** (-60 / 20)


def test_lowpass_anchor_condition_files(runs, tmp_path):
    cs = conditions_from_runs(runs[:1], lowpass=True, anchor_dir=tmp_path / "anchors")
    lp = cs.conditions[-1]
    assert lp.role == "anchor" and lp.meta["cutoff_hz"] == 3500.0
    for it in cs.items:
        y, sr = sf.read(lp.files[it.key])
        x, _ = sf.read(cs.conditions[0].files[it.key])
        spec_x, spec_y = np.abs(np.fft.rfft(x)), np.abs(np.fft.rfft(y))
        f = np.fft.rfftfreq(len(x), 1 / sr)
        assert spec_y[f > 4500].sum() < 0.01 * spec_x[f > 4500].sum()
        assert y.shape == x.shape


def test_lowpass_needs_content_above_cutoff(tmp_path):
    sf.write(str(tmp_path / "x.wav"), np.zeros(800, np.float32), 6000)
    with pytest.raises(ValueError, match="no content above"):
        lowpass_anchor(tmp_path / "x.wav", tmp_path / "y.wav")
