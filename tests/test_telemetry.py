"""backend.telemetry on a tiny diffusers DiT built in code (offline, a few seconds)."""

import copy
import math

import numpy as np
import pytest
import torch

from backend.quant import ActQuantizer, QuantConfig, calibrate, quantize
from backend.telemetry import (
    Telemetry,
    capture_telemetry,
    downsample,
    heatmap_figure,
    histogram_figure,
    layer_names,
    pick_layers,
    quant_stats,
    worst_layers,
)
from backend.telemetry.demo import TIMESTEPS, sample_loop, tiny_dit

TO_Q = "transformer_blocks.0.attn1.to_q"


@pytest.fixture(scope="module")
def fp():
    torch.set_num_threads(1)
    return tiny_dit()


@pytest.fixture(scope="module")
def record(fp):
    return calibrate(fp, lambda: sample_loop(fp))


def _quantized(fp, record, a_bits, a_mode="static"):
    q = copy.deepcopy(fp)
    quantize(q, QuantConfig(w_bits=4, w_granularity="group", w_group_size=32, a_bits=a_bits,
                            a_mode=a_mode), calibration=record)
    return q


@pytest.fixture(scope="module")
def tel4(fp, record):
    return capture_telemetry(fp, _quantized(fp, record, 4), sample_loop)


@pytest.fixture(scope="module")
def tel8(fp, record):
    return capture_telemetry(fp, _quantized(fp, record, 8), sample_loop)


def test_one_entry_per_layer_and_timestep(tel4, fp, record):
    q = _quantized(fp, record, 4)
    quantized = [n for n, m in q.named_modules() if hasattr(m, "act") and hasattr(m, "recipe")]
    assert tel4.layers == quantized and TO_Q in tel4.layers
    assert tel4.timesteps == sorted(TIMESTEPS, reverse=True)
    L, T = len(tel4.layers), len(TIMESTEPS)
    for run in ("fp", "q"):
        assert tel4.hist[run].shape == (L, T, tel4.bins)
        assert np.isfinite(tel4.stats[run]["absmax"]).all()
        assert np.isfinite(tel4.percentiles[run]).all()
    for k in ("quant_error", "clipped_fraction", "clip_lo", "clip_hi"):
        assert tel4.qstats[k].shape == (L, T) and np.isfinite(tel4.qstats[k]).all()
    assert (tel4.qstats["clip_lo"] < 0).all() and (tel4.qstats["clip_hi"] > 0).all()


def test_histogram_counts_sum_to_elements(tel4):
    for run in ("fp", "q"):
        sums = tel4.hist[run].sum(-1)
        assert (sums == tel4.stats[run]["count"]).all()
    # to_q sees batch 2 x (8/2)^2 = 16 tokens x 64 channels once per timestep
    i = tel4.layers.index(TO_Q)
    assert (tel4.hist["fp"][i].sum(-1) == 2 * 16 * 64).all()


def test_fp_histogram_matches_hand_histogram_on_shared_edges(fp, tel4):
    """The merged, downsampled, range-aligned histogram equals np.histogram of the inputs."""
    seen = []
    h = dict(fp.named_modules())[TO_Q].register_forward_pre_hook(
        lambda m, a: seen.append(a[0].detach().reshape(-1).numpy().copy()))
    try:
        sample_loop(fp)
    finally:
        h.remove()
    i = tel4.layers.index(TO_Q)
    for j, t in enumerate(tel4.timesteps):
        edges = tel4.edges(TO_Q, t)
        r = tel4.hist_range[i, j]
        assert r == 2.0 ** round(math.log2(r))  # a power of two: doublings merge exactly
        assert r >= max(tel4.stats["fp"]["absmax"][i, j], tel4.stats["q"]["absmax"][i, j])
        hand, _ = np.histogram(seen[j], bins=edges)
        assert np.abs(hand - tel4.hist["fp"][i, j]).sum() <= 2  # edge-rounding ties only
        assert tel4.hist["fp"][i, j].sum() == hand.sum()


def test_clipped_fraction_and_error_of_a_static_quantizer_by_hand():
    act = ActQuantizer(4, True, "static", "tensor", 128, 8)
    act.set_static(torch.tensor([[-1.0]]), torch.tensor([[1.0]]), torch.zeros(0))
    s = float(act.scales[0, 0])  # symmetric 4 bit: codes -7..7, s = 1/7
    assert s == pytest.approx(1 / 7)
    inside = torch.linspace(-0.9, 0.9, 90)
    edge = torch.tensor([1.0 + 0.4 * s, -1.0 - 0.4 * s])  # rounds onto the edge: not clipped
    outliers = torch.tensor([5.0, -3.0, 2.0, 1.0 + 0.6 * s])
    x = torch.cat([inside, edge, outliers]).reshape(1, -1, 8)
    st = quant_stats(act, x)
    assert st["total"] == 96 and st["clipped"] == 4
    assert st["lo_min"] == pytest.approx(-1.0) and st["hi_max"] == pytest.approx(1.0)
    xq = torch.clamp(torch.round(x / s), -7, 7) * s
    assert st["err_num"] == pytest.approx(float(((x - xq) ** 2).sum()), rel=1e-5)
    # the four outliers alone: (5-1)^2 + (3-1)^2 + (2-1)^2 + (0.6 s)^2 dominate the error
    assert st["err_num"] > 16 + 4 + 1
    assert st["err_den"] == pytest.approx(float((x.double() ** 2).sum()), rel=1e-6)


def test_a4_error_exceeds_a8(tel4, tel8):
    assert tel4.layers == tel8.layers
    assert (tel4.qstats["quant_error"] > tel8.qstats["quant_error"]).all()
    assert np.nanmean(tel4.qstats["quant_error"]) > 10 * np.nanmean(tel8.qstats["quant_error"])


def test_dynamic_quantizer_reports_mean_range(fp, record):
    q = _quantized(fp, record, 8, "dynamic")
    seen = []
    h = dict(q.named_modules())[TO_Q].register_forward_pre_hook(
        lambda m, a: seen.append(a[0].detach().clone()))
    try:
        tel = capture_telemetry(fp, q, sample_loop, layers=[TO_Q])
    finally:
        h.remove()
    assert tel.layers == [TO_Q] and tel.layer_info[0]["act"] == "dynamic"
    # per-sample min-max: the mean range is the mean over the batch of each sample's max / min
    # (to within one quantization step: the zero point is rounded)
    for j, x in enumerate(seen):
        hi, lo = float(x.amax((1, 2)).mean()), float(x.amin((1, 2)).mean())
        step = (hi - lo) / 255
        assert tel.qstats["clip_hi"][0, j] == pytest.approx(hi, abs=step)
        assert tel.qstats["clip_lo"][0, j] == pytest.approx(lo, abs=step)
    assert (tel.qstats["clipped_fraction"][0] < 1e-3).all()


def test_figures(tel4):
    names = layer_names(tel4)
    T = len(tel4.timesteps)
    fig = histogram_figure(tel4, names[0])
    assert len(fig.frames) == T and len(fig.layout.sliders[0].steps) == T
    assert [s.label for s in fig.layout.sliders[0].steps] == [str(t) for t in tel4.timesteps]
    assert all(len(f.data) == 4 for f in fig.frames)
    assert fig.layout.yaxis.type == "log" and "clipped" in fig.layout.title.text
    # the clip-range trace sits at the recorded range
    assert fig.frames[0].data[2].x[0] == pytest.approx(tel4.qstats["clip_lo"][0, 0])
    assert histogram_figure(tel4, names[0], log_y=False).layout.yaxis.type == "linear"
    for metric in ("absmax", "quant_error", "clipped_fraction"):
        hm = heatmap_figure(tel4, metric)
        assert np.asarray(hm.data[0].z).shape == (len(names), T)
        assert hm.layout.xaxis.title.text and hm.layout.yaxis.title.text
    rows = worst_layers(tel4, k=3)
    errs = [r["mean quantization error"] for r in rows]
    assert len(rows) == 3 and errs == sorted(errs, reverse=True)
    assert errs[0] == pytest.approx(np.nanmax(np.nanmean(tel4.qstats["quant_error"], 1)))
    with pytest.raises(KeyError):
        histogram_figure(tel4, "no.such.layer")


def test_save_load_round_trip(tel4, tmp_path):
    npz, js = tel4.save(tmp_path / "tel")
    assert npz.stat().st_size < 200_000
    back = Telemetry.load(tmp_path / "tel")
    assert back.layers == tel4.layers and back.timesteps == tel4.timesteps
    for run in ("fp", "q"):
        np.testing.assert_array_equal(back.hist[run], tel4.hist[run])
    np.testing.assert_array_equal(back.qstats["quant_error"], tel4.qstats["quant_error"])
    assert back.entry(TO_Q, 500) == tel4.entry(TO_Q, 500)
    assert back.layer_info == tel4.layer_info


def test_downsample_and_layer_cap():
    h = np.arange(16).reshape(1, 16)
    np.testing.assert_array_equal(downsample(h, 4), [[6, 22, 38, 54]])
    names = [f"l{i}" for i in range(100)]
    picked = pick_layers(names, 10)
    assert len(picked) == 10 and picked[0] == "l0" and picked[-1] == "l99"
    assert pick_layers(names[:5], 10) == names[:5]


def test_static_buckets_give_a_clip_range_per_timestep(fp, record):
    q = copy.deepcopy(fp)
    quantize(q, QuantConfig(w_bits=8, a_bits=8, a_timestep_buckets=3), calibration=record)
    tel = capture_telemetry(fp, q, sample_loop, layers=[TO_Q])
    act = dict(q.named_modules())[TO_Q].act
    his = []
    for j, t in enumerate(tel.timesteps):
        act.tracker.t = float(t)
        s, z = act.qparams(torch.zeros(1, 64))
        his.append((255 - float(z)) * float(s))  # asymmetric 8 bit: codes 0..255
        assert tel.qstats["clip_hi"][0, j] == pytest.approx(his[-1], rel=1e-6)
        assert tel.qstats["clip_lo"][0, j] == pytest.approx(-float(z) * float(s), rel=1e-6)
    act.tracker.t = None
    assert len(set(his)) == 3  # one calibrated range per timestep bucket


def test_conv_layers_are_measured_channels_last():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(8, 16, 3, padding=1), torch.nn.ReLU(),
                                torch.nn.Conv2d(16, 8, 1))
    x = torch.randn(2, 8, 6, 6)
    q = copy.deepcopy(model)
    quantize(q, QuantConfig(w_bits=8, a_bits=4, a_mode="dynamic", a_granularity="group",
                            a_group_size=8, skip=()))
    tel = capture_telemetry(model, q, lambda m: m(x))
    assert tel.layers == ["0", "2"] and tel.timesteps == [-1]  # no timestep outside a DiT
    conv = q[0]
    xc = x.movedim(1, -1)
    err = float((xc - conv.act(xc)).pow(2).sum() / xc.pow(2).sum())
    assert tel.qstats["quant_error"][0, 0] == pytest.approx(err, rel=1e-5)
    assert tel.hist["fp"][0, 0].sum() == x.numel()
