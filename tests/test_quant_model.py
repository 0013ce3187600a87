"""backend.quant on a tiny diffusers DiT built in code, and layer-level checks."""

import copy

import pytest
import torch
from diffusers import DiTTransformer2DModel
from torch import nn

from backend.quant import (
    ActivationRecorder,
    LayerOverride,
    QuantConfig,
    QuantError,
    QuantLinear,
    calibrate,
    dequantized_copy,
    load_quantized,
    quantize,
    quantized_layers,
    save_quantized,
)
from backend.quant.layers import ActQuantizer

TIMESTEPS = (900, 500, 100)


@pytest.fixture(scope="module")
def dit():
    torch.manual_seed(0)
    model = DiTTransformer2DModel(
        num_attention_heads=2, attention_head_dim=32, in_channels=4, out_channels=8,
        num_layers=2, sample_size=8, patch_size=2, num_embeds_ada_norm=10,
    )
    return model.eval()


@pytest.fixture(scope="module")
def inputs():
    g = torch.Generator().manual_seed(1)
    return torch.randn(2, 4, 8, 8, generator=g), torch.tensor([1, 3])


def run(model, inputs, t=500):
    x, labels = inputs
    with torch.no_grad():
        return model(x, timestep=torch.tensor([t, t]), class_labels=labels).sample


def quantized(model, config, calibration=None):
    m = copy.deepcopy(model)
    report = quantize(m, config, calibration=calibration)
    return m, report


def test_error_grows_as_weight_bits_shrink(dit, inputs):
    ref = run(dit, inputs)
    errs = []
    for bits in (8, 4, 2):
        m, _ = quantized(dit, QuantConfig(w_bits=bits, w_granularity="group", w_group_size=32))
        errs.append(float((run(m, inputs) - ref).pow(2).mean()))
    assert 0 < errs[0] < errs[1] < errs[2]


def test_skip_list_and_report(dit):
    m, report = quantized(dit, QuantConfig(w_bits=4, w_granularity="group", w_group_size=32))
    assert isinstance(m.pos_embed.proj, nn.Conv2d)
    assert isinstance(m.proj_out_2, nn.Linear) and not isinstance(m.proj_out_2, QuantLinear)
    emb = m.transformer_blocks[0].norm1.emb.timestep_embedder.linear_1
    assert type(emb) is nn.Linear
    assert isinstance(m.transformer_blocks[0].attn1.to_q, QuantLinear)
    kept = dict(report.kept_fp)
    assert "pos_embed.proj" in kept and "skip list" in kept["pos_embed.proj"]
    assert "proj_out_2" in kept
    names = {rec.name for rec in report.layers}
    assert "transformer_blocks.0.ff.net.2" in names
    assert names.isdisjoint(kept)
    assert report.model_stored_bytes < report.model_fp_bytes


def test_override_can_skip_and_change_bits(dit):
    cfg = QuantConfig(
        w_bits=4, w_granularity="group", w_group_size=32,
        overrides=(("*.attn1.to_q", LayerOverride(w_bits=8)),
                   ("*.ff.*", LayerOverride(skip=True, reason="sensitive"))),
    )
    m, report = quantized(dit, cfg)
    assert report.layer("transformer_blocks.0.attn1.to_q").w_bits == 8
    assert report.layer("transformer_blocks.0.attn1.to_k").w_bits == 4
    assert dict(report.kept_fp)["transformer_blocks.1.ff.net.2"] == "sensitive"


def test_stored_bytes_by_hand():
    lin = nn.Linear(256, 128)
    rep = quantize(nn.Sequential(lin), QuantConfig(w_bits=4, w_granularity="group", w_group_size=64, skip=()))
    # codes 128*256/2 + fp16 scales 128*4*2 + fp32 bias 128*4
    assert rep.layers[0].stored_bytes == 16384 + 1024 + 512
    lin = nn.Linear(256, 128)
    rep = quantize(nn.Sequential(lin), QuantConfig(w_bits=3, w_symmetric=False, skip=()))
    # ceil(32768*3/8) codes + fp16 scale and uint8 zero per channel + bias
    assert rep.layers[0].stored_bytes == 12288 + 256 + 128 + 512
    assert rep.layers[0].fp_bytes == (128 * 256 + 128) * 4


def test_dynamic_scales_differ_across_timesteps_and_samples(dit, inputs):
    cfg = QuantConfig(w_bits=8, a_bits=8, a_mode="dynamic", a_granularity="group", a_group_size=32)
    m, _ = quantized(dit, cfg)
    layer = m.transformer_blocks[0].attn1.to_q
    seen = []
    handle = layer.register_forward_pre_hook(lambda mod, args: seen.append(mod.act.qparams(args[0])[0]))
    for t in (900, 100):
        run(m, inputs, t)
    handle.remove()
    s900, s100 = seen
    assert s900.shape[0] == 2  # one scale set per sample
    assert not torch.allclose(s900[0], s900[1])  # sample-wise
    assert not torch.allclose(s900, s100)  # timestep-wise


def test_static_scales_per_timestep_bucket(dit, inputs):
    m = copy.deepcopy(dit)
    record = calibrate(m, lambda: [run(m, inputs, t) for t in TIMESTEPS])
    assert record.timesteps() == list(TIMESTEPS)
    _, report = quantized(dit, QuantConfig(w_bits=8, a_bits=8, a_timestep_buckets=3), record)
    q, _ = quantized(dit, QuantConfig(w_bits=8, a_bits=8, a_timestep_buckets=3), record)
    act = q.transformer_blocks[0].norm1.linear.act
    assert act.scales.shape == (3, 1)
    assert len(set(act.scales.view(-1).tolist())) == 3
    err_static = float((run(q, inputs, 500) - run(dit, inputs, 500)).pow(2).mean())
    assert err_static < 1e-3


def test_static_needs_calibration_and_reports_missing_layer(dit):
    with pytest.raises(QuantError, match="calibration"):
        quantize(copy.deepcopy(dit), QuantConfig(w_bits=8, a_bits=8))


def test_nan_in_calibration_names_the_layer(dit, inputs):
    m = copy.deepcopy(dit)
    x, labels = inputs
    bad = x.clone()
    bad[0, 0, 0, 0] = float("nan")
    with pytest.raises(QuantError, match=r"pos_embed\.proj.*NaN"):
        calibrate(m, lambda: m(bad, timestep=torch.tensor([1, 1]), class_labels=labels))


def test_no_quantizable_layer():
    with pytest.raises(QuantError, match="no quantizable layer"):
        quantize(nn.Sequential(nn.ReLU(), nn.LayerNorm(4)), QuantConfig())
    with pytest.raises(QuantError, match="kept in FP"):
        quantize(nn.Sequential(nn.Linear(4, 4)), QuantConfig(skip=("*",)))


def test_group_size_not_dividing_names_layer(dit):
    with pytest.raises(QuantError, match=r"transformer_blocks\.0\..*group size 48"):
        quantize(copy.deepcopy(dit), QuantConfig(w_bits=4, w_granularity="group", w_group_size=48))


def test_save_load_gives_identical_outputs(dit, inputs, tmp_path):
    m = copy.deepcopy(dit)
    record = calibrate(m, lambda: [run(m, inputs, t) for t in TIMESTEPS])
    cfg = QuantConfig(w_bits=4, w_granularity="group", w_group_size=32, a_bits=8,
                      a_timestep_buckets=2)
    quantize(m, cfg, record)
    path = save_quantized(m, tmp_path / "q.safetensors")
    rebuilt = load_quantized(path)  # class + config from the file
    into = load_quantized(path, copy.deepcopy(dit))
    for t in TIMESTEPS:
        ref = run(m, inputs, t)
        assert torch.equal(run(rebuilt, inputs, t), ref)
        assert torch.equal(run(into, inputs, t), ref)
    assert path.stat().st_size < sum(p.numel() * 4 for p in dit.parameters())


def test_dequantized_copy_is_plain_and_matches_weights(dit, inputs):
    m, _ = quantized(dit, QuantConfig(w_bits=4, w_granularity="group", w_group_size=32))
    plain = dequantized_copy(m)
    assert not quantized_layers(plain)
    assert torch.allclose(run(plain, inputs), run(m, inputs), atol=1e-5)


@pytest.mark.parametrize(
    "a_mode,a_gran,a_sym", [("dynamic", "tensor", False), ("dynamic", "token", True),
                            ("static", "tensor", False), ("static", "tensor", True)],
)
def test_int8_path_equals_fake_quant(a_mode, a_gran, a_sym):
    torch.manual_seed(0)
    lin = nn.Linear(96, 80)
    x = torch.randn(3, 17, 96) * 2 + 0.3
    cfg = QuantConfig(w_bits=8, a_bits=8, a_mode=a_mode, a_granularity=a_gran, a_symmetric=a_sym,
                      skip=())
    calib = None
    if a_mode == "static":
        def calib():
            return model(x)
    outs = {}
    for compute in ("int8", "fake"):
        model = nn.Sequential(copy.deepcopy(lin))
        rep = quantize(model, cfg.replace(compute=compute), calibration=calib)
        assert rep.layers[0].compute == compute
        with torch.no_grad():
            outs[compute] = model(x)
    # integer accumulation is exact; only the float rescaling differs in rounding order
    tol = 1e-5 * outs["fake"].abs().max().item()
    assert (outs["int8"] - outs["fake"]).abs().max().item() <= tol


def test_int8_refused_where_scales_vary_along_k():
    with pytest.raises(QuantError, match="int8"):
        quantize(nn.Sequential(nn.Linear(64, 8)), QuantConfig(
            w_bits=8, a_bits=8, a_mode="dynamic", a_granularity="group", a_group_size=32,
            compute="int8", skip=()))


@pytest.mark.parametrize("fast,expected", [(True, "int8"), (False, "fake")])
def test_auto_uses_int8_only_where_the_kernel_is_fast(monkeypatch, fast, expected):
    """On an AVX2-only CPU torch._int_mm was measured 27-57x slower than float32, so "auto"
    must fall back to fake-quant there; an explicit compute="int8" is still honoured."""
    import backend.quant.apply as apply_mod

    monkeypatch.setattr(apply_mod, "int8_matmul_is_fast", lambda: fast)
    cfg = QuantConfig(w_bits=8, a_bits=8, a_mode="dynamic", skip=())
    rep = quantize(nn.Sequential(nn.Linear(32, 16)), cfg)  # compute="auto" is the default
    assert rep.layers[0].compute == expected
    forced = quantize(nn.Sequential(nn.Linear(32, 16)), cfg.replace(compute="int8"))
    assert forced.layers[0].compute == "int8"


def test_int8_kernel_probe_is_a_cached_bool():
    from backend.quant.int8_kernel import int8_matmul_is_fast

    first = int8_matmul_is_fast()
    assert isinstance(first, bool)
    assert int8_matmul_is_fast() is first
    assert int8_matmul_is_fast.cache_info().hits >= 1


def test_recorder_histogram_growth_is_exact():
    lin = nn.Linear(1, 1)
    rec = ActivationRecorder(nn.Sequential(lin), bins=8, per_channel=False)
    with rec:
        lin(torch.tensor([[0.1], [-0.1]]))
        lin(torch.tensor([[0.9]]))
    stats = rec.record.layers["0"][-1]
    assert stats.hist_range == 1.0
    assert stats.hist.tolist() == [0, 0, 0, 1, 1, 0, 0, 1]
    assert (stats.min, stats.max, stats.count) == (pytest.approx(-0.1), pytest.approx(0.9), 3)


def test_act_quantizer_static_group_by_hand():
    act = ActQuantizer(bits=8, symmetric=True, mode="static", granularity="group", group_size=2,
                       channels=4)
    act.set_static(torch.tensor([[-1.0, -4.0]]), torch.tensor([[1.27, 2.54]]), torch.zeros(0))
    assert act.scales.view(-1).tolist() == pytest.approx([1.27 / 127, 4.0 / 127])
    x = torch.tensor([[0.5, 0.02, 1.0, -4.0]])
    out = act(x)
    assert out.tolist()[0] == pytest.approx([0.5, 0.02, 4.0 / 127 * 32, -4.0], abs=1e-6)
