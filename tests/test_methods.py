"""The papers' methods on hand-checkable cases and on a tiny DiT built in code."""

import copy

import pytest
import torch
from diffusers import DiTTransformer2DModel
from torch import nn

from backend.quant import LayerRecipe, QuantConfig, QuantError, QuantLinear, load_quantized, quantize, save_quantized
from backend.quant.capture import capture_calls, output_error
from backend.quant.methods.mixed_precision import FP, allocate_bits, layer_sensitivity, mixed_precision_config
from backend.quant.methods.qdit import SearchConfig, SearchState, evolutionary_search, proxy_fitness
from backend.quant.methods.rtzs import effective_bits, flag_bits, lzs_truncate, rtzs_config
from backend.quant.methods.smoothing import smoothing_factors
from backend.quant.packing import decode_mask, encode_mask, smallest_mask_encoding
from backend.quant.primitives import choose_qparams, fake_quant, group_view


@pytest.fixture(scope="module")
def dit():
    torch.manual_seed(0)
    return DiTTransformer2DModel(
        num_attention_heads=2, attention_head_dim=32, in_channels=4, out_channels=8,
        num_layers=2, sample_size=8, patch_size=2, num_embeds_ada_norm=10,
    ).eval()


def sampling_loop(model):
    g = torch.Generator().manual_seed(3)
    x, labels = torch.randn(2, 4, 8, 8, generator=g), torch.tensor([2, 7])

    def run():
        with torch.no_grad():
            for t in (900, 500, 100):
                model(x, timestep=torch.tensor([t, t]), class_labels=labels)
    return run


# -- RT/ZS -----------------------------------------------------------------------------------

def test_lzs_by_hand():
    q = torch.tensor([[127, 3, -5, 0, 5, -3, 1, 0, 14, 3, 0, 0]])
    trunc, shift = lzs_truncate(q, k=4, group=4, rounding="truncate")
    assert shift.tolist() == [[4, 0, 1]]
    assert trunc.tolist() == [[112, 0, 0, 0, 5, -3, 1, 0, 14, 2, 0, 0]]
    near, _ = lzs_truncate(q, k=4, group=4, rounding="nearest")
    assert near.tolist() == [[112, 0, 0, 0, 5, -3, 1, 0, 14, 4, 0, 0]]
    assert flag_bits(4) == 3 and flag_bits(6) == 2
    assert effective_bits(4, 16) == 4 + 3 / 16


def test_residual_threshold_zero_is_two_stage_quantization():
    torch.manual_seed(1)
    lin = nn.Linear(64, 16)
    cfg = QuantConfig(w_bits=3, w_granularity="group", w_group_size=32, residual_bits=4, residual_threshold=0.0,
                      skip=())
    model = nn.Sequential(copy.deepcopy(lin))
    report = quantize(model, cfg)
    g = group_view(lin.weight.detach(), "group", 32)
    s, z = choose_qparams(g, 3, True)
    s = s.half().float()
    main = fake_quant(g, s, z, 3, True)
    resid = g - main
    rs, rz = choose_qparams(resid, 4, True)
    expected = (main + fake_quant(resid, rs.half().float(), rz, 4, True)).reshape(16, 64)
    assert torch.allclose(model[0].dequantized_weight(), expected, atol=1e-6)
    assert report.layers[0].extras["residual"]["sparsity"] == 0.0
    assert report.residual_sparsity == 0.0


def test_zero_residual_stores_only_the_mask():
    lin = nn.Linear(32, 4, bias=False)
    grid = torch.arange(-3, 4, dtype=torch.float32)  # exactly representable at 3 bits, scale 1
    lin.weight.data = grid[torch.randint(0, 7, (4, 32), generator=torch.Generator().manual_seed(0))]
    lin.weight.data[:, 0] = 3.0  # every row reaches the max so the scale is exactly 1
    model = nn.Sequential(lin)
    quantize(model, QuantConfig(w_bits=3, residual_bits=2, residual_threshold=0.25, skip=()))
    q = model[0]
    assert q.residual_meta["nnz"] == 0
    assert q.r_packed.numel() == 0
    assert q.residual_stored_bytes() == q.r_index.numel()  # mask encoding only, no values/scales
    assert torch.equal(q.dequantized_weight(), lin.weight.data)


def test_sparse_encodings_round_trip_and_sizes():
    g = torch.Generator().manual_seed(0)
    for p in (0.0, 0.01, 0.5):
        mask = torch.rand(37, 300, generator=g) < p
        for enc in ("bitmask", "csr", "rle"):
            data = encode_mask(mask, enc)
            assert torch.equal(decode_mask(data, enc, (37, 300), int(mask.sum())), mask)
        assert encode_mask(mask, "bitmask").numel() == 1388  # ceil(37 * 300 / 8)
        assert encode_mask(mask, "csr").numel() == 2 * int(mask.sum()) + 4 * 38
    enc, data = smallest_mask_encoding(torch.zeros(8, 8, dtype=torch.bool))
    assert (enc, data.numel()) == ("rle", 0)


def test_rtzs_quartz_model_round_trip(dit, tmp_path):
    m = copy.deepcopy(dit)
    cfg = rtzs_config(QuantConfig(w_bits=4, w_granularity="group", w_group_size=32), act_bits=4, lzs_group=16,
                      residual_bits=2, residual_threshold=0.3)
    report = quantize(m, cfg, calibration=sampling_loop(m))
    rec = report.layer("transformer_blocks.0.attn1.to_q")
    assert rec.extras["act_effective_bits"] == pytest.approx(4.1875)
    assert 0.0 < report.residual_sparsity < 1.0
    path = save_quantized(m, tmp_path / "rtzs.safetensors")
    again = load_quantized(path)
    x, labels = torch.randn(2, 4, 8, 8), torch.tensor([1, 2])
    with torch.no_grad():
        a = m(x, timestep=torch.tensor([500, 500]), class_labels=labels).sample
        b = again(x, timestep=torch.tensor([500, 500]), class_labels=labels).sample
    assert torch.equal(a, b)


# -- smoothing / low rank ----------------------------------------------------------------------

def _recipe(**kw):
    base = dict(w_bits=None, a_bits=None, w_granularity="channel", w_group_size=128, w_symmetric=True,
                w_scale_method="minmax", a_granularity="tensor", a_group_size=128, a_symmetric=False,
                a_mode="dynamic", a_scale_method="minmax")
    base.update(kw)
    return LayerRecipe(**base)


def test_smoothing_leaves_fp_output_unchanged():
    torch.manual_seed(0)
    lin = nn.Linear(48, 24)
    x = torch.randn(5, 48) * torch.linspace(0.1, 30, 48)  # channel outliers
    s = smoothing_factors(x.abs().amax(0), lin.weight, 0.5)
    assert s.shape == (48,) and float(s.max() / s.min()) > 5
    q = QuantLinear.from_linear("l", lin, _recipe(smooth_alpha=0.5), smooth=s)
    with torch.no_grad():
        assert torch.allclose(q(x), lin(x), rtol=1e-5, atol=1e-4)
    assert torch.allclose(q.effective_weight(), lin.weight, atol=1e-6)


def test_smoothing_helps_channel_outliers_at_w8a8():
    torch.manual_seed(0)
    lin = nn.Linear(64, 32)
    x = torch.randn(256, 64)
    x[:, 3] *= 60  # one outlier channel, as in DiT activations
    errs = {}
    for alpha in (None, 0.5):
        model = nn.Sequential(copy.deepcopy(lin))
        cfg = QuantConfig(w_bits=8, a_bits=8, smooth_alpha=alpha, skip=())
        quantize(model, cfg, calibration=lambda model=model: model(x))
        with torch.no_grad():
            errs[alpha] = float((model(x) - lin(x)).pow(2).mean())
    assert errs[0.5] < 0.5 * errs[None]


def test_lowrank_branch_bytes_and_full_rank_is_exact():
    torch.manual_seed(0)
    lin = nn.Linear(16, 8)
    q = QuantLinear.from_linear("l", lin, _recipe(w_bits=4, lowrank_rank=8))
    # fp16 factors 2 * r * (out + in) on top of packed codes and scales
    assert q.weight_stored_bytes() == 8 * 16 // 2 + 8 * 2 + 2 * 8 * (8 + 16)
    assert torch.allclose(q.effective_weight(), lin.weight, atol=2e-3)


# -- mixed precision ---------------------------------------------------------------------------

def test_allocate_bits_by_hand():
    sens = {"a": {4: 1.0, 8: 0.1}, "b": {4: 0.1, 8: 0.01}}
    numel = {"a": 100, "b": 100}
    # all at 4 bits = 100 bytes; one 4->8 upgrade costs 50 bytes: a saves 0.9, b 0.09
    alloc = allocate_bits(sens, numel, budget_bytes=150, choices=(4, 8))
    assert alloc.bits == {"a": 8, "b": 4} and alloc.bytes == 150
    alloc = allocate_bits(sens, numel, budget_bytes=10_000, choices=(4, 8, FP))
    assert alloc.bits == {"a": FP, "b": FP}
    with pytest.raises(QuantError, match="budget"):
        allocate_bits(sens, numel, budget_bytes=99, choices=(4, 8))


def test_sensitivity_and_mixed_config(dit):
    m = copy.deepcopy(dit)
    captured = capture_calls(m, sampling_loop(m))
    assert len(captured) == 3
    base = QuantConfig(w_bits=4, w_granularity="group", w_group_size=32)
    names = ["transformer_blocks.0.attn1.to_q", "transformer_blocks.1.ff.net.2"]
    sens = layer_sensitivity(m, base, captured, bits=(2, 4), layers=names)
    for name in names:
        assert sens[name][2] > sens[name][4] > 0
    alloc = allocate_bits(sens, {n: dict(m.named_modules())[n].weight.numel() for n in names},
                          budget_bytes=1e9, choices=(2, 4, FP))
    cfg = mixed_precision_config(base, alloc)
    q = copy.deepcopy(dit)
    report = quantize(q, cfg)
    assert dict(report.kept_fp)["transformer_blocks.0.attn1.to_q"].startswith("mixed precision")


# -- Q-DiT search ----------------------------------------------------------------------------

def test_search_respects_budget_is_deterministic_and_resumes(dit):
    m = copy.deepcopy(dit)
    captured = capture_calls(m, sampling_loop(m)).subset(2)
    base = QuantConfig(w_bits=4, a_bits=8, a_mode="dynamic")
    search = SearchConfig(choices=(16, 32, 64), population=6, generations=3, parents=3, crossovers=2,
                          mutations=2, mutation_prob=0.3, min_mean_group=40, seed=7)
    fit = proxy_fitness(captured)
    r1 = evolutionary_search(m, base, fit, search)
    r2 = evolutionary_search(m, base, fit, search)
    assert r1.genome == r2.genome and r1.state.history == r2.state.history
    assert all(sum(g) / len(g) >= 40 for g in r1.state.cache)
    assert r1.fitness == min(r1.state.cache.values())
    saved: list[dict] = []
    partial = evolutionary_search(m, base, fit, search.__class__(**{**search.__dict__, "generations": 2}),
                                  on_generation=lambda st: saved.append(st.to_dict()))
    assert partial.state.generation == 2
    resumed = evolutionary_search(m, base, fit, search, state=SearchState.from_dict(saved[-1]))
    assert resumed.genome == r1.genome and resumed.state.history == r1.state.history
    q = copy.deepcopy(dit)
    quantize(q, r1.config)
    assert output_error(q, captured) == pytest.approx(r1.fitness, rel=1e-5)
