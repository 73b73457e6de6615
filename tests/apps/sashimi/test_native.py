"""The native (C) step and generation loop: exact against the forward pass, and the sampling rule."""

from __future__ import annotations

import platform

import pytest
import torch

from apps.sashimi.model import SaShiMi, shift_right
from apps.sashimi.native import NativeStepper, as_int8_slots, build, pack_lanes, strip_widths
from apps.sashimi.sampling import sample


def _model(d_state: int = 40, n_classes: int = 43, d_model: int = 12) -> SaShiMi:
    """Sizes that reach every code path whether the vectors are 8 or 16 floats wide: M = 20 modes (an
    odd count of mode pairs), widths 12/24/48 (SSM channel groups with padding lanes; 3-vector and
    1-vector weight strips and single columns), 43 classes."""
    torch.manual_seed(0)
    model = SaShiMi(n_classes=n_classes, d_model=d_model, n_layers=2, pool=(2, 2), layer="s4", d_state=d_state)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model.eval()


X86 = platform.machine() in ("x86_64", "AMD64")


@pytest.mark.parametrize("flags", [(), pytest.param(("-mno-avx512f",), marks=pytest.mark.skipif(
    not X86, reason="an x86 compiler flag"))], ids=["native-width", "8-wide"])
@pytest.mark.parametrize("batch", [1, 6])
def test_native_step_equals_the_forward_pass(batch, flags):
    """Within 1e-5 of the float64 forward pass, with the machine's vector width (16 floats with AVX-512)
    and with 8-float vectors (the build for machines without AVX-512), whose strips are packed to match."""
    model = _model()
    tokens = torch.randint(0, 43, (batch, 24))
    with torch.no_grad():
        full = model.double()(shift_right(tokens, 21))[0]
        model.float()
        lib = build(flags) if flags else None
        run = NativeStepper(model, lib=lib).start(model.default_state(batch))
        out = [run.step(torch.full((batch,), 21))] + [run.step(tokens[:, t]) for t in range(23)]
    rel = float((torch.stack(out, 1).double() - full).norm() / full.norm())
    assert rel < 1e-5


def _reference(run, logits: torch.Tensor, steps: int, temperature: float, top_p: float, seed: int):
    """The documented rule in float64 with the same uniforms, stepping with ``run.step``."""
    uniform = torch.rand(steps, logits.shape[0], generator=torch.Generator().manual_seed(seed))
    tokens, loglik = [], torch.zeros(logits.shape[0], dtype=torch.float64)
    for s in range(steps):
        lg = logits.double()
        if temperature == 0:
            tok = lg.argmax(-1)
        else:
            p = torch.softmax(lg / temperature, -1)
            srt = p.sort(-1, descending=True).values
            keep_sorted = (srt.cumsum(-1) - srt) < top_p
            cut = torch.where(keep_sorted, srt, torch.inf).min(-1, keepdim=True).values
            p = torch.where(p >= cut, p, 0.0)
            cdf = p.cumsum(-1)
            tok = torch.searchsorted(cdf, (uniform[s].double() * cdf[:, -1])[:, None], right=True)[:, 0]
        loglik += torch.log_softmax(lg, -1).gather(-1, tok[:, None])[:, 0]
        tokens.append(tok)
        logits = run.step(tok) if s + 1 < steps else logits
    return torch.stack(tokens, 1), loglik


@pytest.mark.parametrize(("temperature", "top_p"), [(0.0, 1.0), (1.0, 1.0), (0.8, 0.9)])
def test_generate_in_c_follows_the_sampling_rule_and_the_model(temperature, top_p):
    model = _model(d_state=16, n_classes=32, d_model=8)
    stepper = NativeStepper(model)
    a, b = stepper.start(model.default_state(5)), stepper.start(model.default_state(5))
    first = a.step(torch.full((5,), 16))
    assert torch.equal(first, b.step(torch.full((5,), 16)))
    tokens, loglik = a.generate(first, 30, temperature, top_p, torch.Generator().manual_seed(3))
    ref_tokens, ref_loglik = _reference(b, first, 30, temperature, top_p, 3)
    assert torch.equal(tokens, ref_tokens)
    assert torch.allclose(loglik, ref_loglik, rtol=1e-5, atol=1e-5)


def test_threads_do_not_change_generation_and_chunks_carry_the_state():
    model = _model(d_state=16, n_classes=32, d_model=8)
    runs = [NativeStepper(model, threads=t).start(model.default_state(5)) for t in (1, 2)]
    outs = [r.generate(r.step(torch.full((5,), 16)), 40, 1.0, 1.0, torch.Generator().manual_seed(0)) for r in runs]
    assert torch.equal(outs[0][0], outs[1][0])  # the same draws (float contraction may differ per row group)
    assert torch.allclose(outs[0][1], outs[1][1], rtol=1e-6, atol=0)
    # in chunks (step_last carries the model past each chunk's last token), then replayed step by step
    g = torch.Generator().manual_seed(1)
    run = NativeStepper(model, threads=2).start(model.default_state(5))
    logits = run.step(torch.full((5,), 16))
    parts, loglik = [], torch.zeros(5, dtype=torch.float64)
    for steps, last in [(7, True), (16, True), (17, False)]:
        tokens, ll = run.generate(logits, steps, 1.0, 1.0, g, step_last=last)
        parts.append(tokens)
        loglik += ll
        logits = run.logits
    tokens = torch.cat(parts, 1)
    replay = NativeStepper(model).start(model.default_state(5))
    lg, ref = replay.step(torch.full((5,), 16)), torch.zeros(5, dtype=torch.float64)
    for s in range(40):
        ref += torch.log_softmax(lg.double(), -1).gather(-1, tokens[:, s:s + 1])[:, 0]
        lg = replay.step(tokens[:, s])
    assert torch.allclose(loglik, ref, rtol=1e-5, atol=1e-5)


def test_sample_uses_the_native_loop_and_honours_the_seed():
    model = _model(d_state=16, n_classes=32, d_model=8)
    stepper = NativeStepper(model)
    x1, ll1 = sample(model, 3, 50, batch=2, generator=torch.Generator().manual_seed(5), progress=False, stepper=stepper)
    x2, ll2 = sample(model, 3, 50, batch=2, generator=torch.Generator().manual_seed(5), progress=False, stepper=stepper)
    assert x1.shape == (3, 50) and torch.equal(x1, x2) and torch.equal(ll1, ll2)
    assert int(x1.max()) < 32 and int(x1.min()) >= 0


def _poisoned(stepper: NativeStepper, pad: int = 4096) -> NativeStepper:
    """Surround the stepper's packed parameters with NaN: a read outside them makes the output NaN
    deterministically (instead of whatever the allocator left there, which was usually finite)."""
    n = stepper.weights.numel()
    buffer = torch.full((n + 2 * pad,), float("nan"))
    buffer[pad:pad + n] = stepper.weights
    stepper.weights = buffer[pad:pad + n]  # a view: the poison stays allocated around it
    return stepper


def test_steps_and_generation_read_only_inside_the_parameter_buffer():
    model = _model(d_state=16, n_classes=32, d_model=8)
    stepper = _poisoned(NativeStepper(model))
    run = stepper.start(model.default_state(32))
    logits = run.step(torch.arange(32))  # every embedding row
    assert torch.isfinite(logits).all()
    tokens, loglik = run.generate(logits, 40, 1.0, 1.0, torch.Generator().manual_seed(0))
    assert torch.isfinite(loglik).all()
    x, ll = sample(model, 3, 50, batch=2, generator=torch.Generator().manual_seed(5), progress=False, stepper=stepper)
    assert torch.isfinite(ll).all()


def test_an_out_of_range_token_is_refused_and_leaves_the_state():
    model = _model(d_state=16, n_classes=32, d_model=8)
    stepper = NativeStepper(model)
    run, fresh = stepper.start(model.default_state(2)), stepper.start(model.default_state(2))
    for bad in (32, 128, -1):
        with pytest.raises(IndexError, match="32 classes"):
            run.step(torch.tensor([3, bad]))
    assert torch.equal(run.step(torch.tensor([3, 4])), fresh.step(torch.tensor([3, 4])))
    with pytest.raises(ValueError, match="start_token"):
        sample(model, 1, 5, start_token=128, progress=False, stepper=stepper)


@pytest.mark.parametrize(("weights", "ll_bound", "logit_bound"), [("bf16", 1e-3, 1e-2), ("int8", 3e-3, 2e-2)])
def test_approximate_weights_match_the_float32_step_within_the_stated_tolerance(weights, ll_bound, logit_bound):
    """The opt-in bfloat16 and int8 linears against the exact float32 step on the same tokens.  Stated
    tolerances, per sample of log-likelihood and relative error of the logits: bf16 1e-3 nats and 1e-2,
    int8 3e-3 nats and 2e-2.  Measured: on this test's narrow model (12 features, weights perturbed) int8
    gives 1.5e-3 nats; over 1024-2048 generated samples, the default model gives bf16 1.6e-4 and int8
    1.8e-4 nats (logits 3.1e-3 and 7.7e-3), the trained tiny piano model bf16 4e-6 and int8 7e-5 (logits
    1.2e-3 and 2.8e-3)."""
    model = _model()
    batch, L = 3, 64
    tokens = torch.randint(0, 43, (batch, L))
    runs = [NativeStepper(model, weights=w).start(model.default_state(batch)) for w in ("float32", weights)]
    stacks, lls = [], []
    for run in runs:
        logits, ll, out = run.step(torch.full((batch,), 21)), torch.zeros(batch, dtype=torch.float64), []
        for t in range(L):
            out.append(logits)
            ll += torch.log_softmax(logits.double(), -1).gather(-1, tokens[:, t:t + 1])[:, 0]
            logits = run.step(tokens[:, t])
        stacks.append(torch.stack(out, 1))
        lls.append(ll)
    exact, approx = stacks
    rel = float((approx - exact).norm() / exact.norm())
    assert 1e-6 < rel < logit_bound  # an approximation (not the float32 path again), within the bound
    assert float((lls[1] - lls[0]).abs().max()) / L < ll_bound
    with pytest.raises(ValueError, match="weights"):
        NativeStepper(model, weights="int4")


def test_int8_matrices_hold_each_weight_within_half_a_step_of_its_column_scale():
    """``as_int8_slots``: one scale per output column (its largest magnitude / 127), then the rounded
    weights in ``pack_strips`` order; dequantised, every weight is within half a scale step."""
    torch.manual_seed(1)
    W = torch.randn(7, 53) * torch.logspace(-3, 1, 53)  # columns of very different sizes
    W[:, 5] = 0.0
    slots = as_int8_slots(W)
    scale = slots[:53]
    expected = W.abs().amax(0) / 127
    expected[5] = 1.0
    torch.testing.assert_close(scale, expected, rtol=0, atol=0)
    q = slots[53:].view(torch.int8)[:7 * 53].to(torch.float32)
    assert q.abs().max() <= 127
    back = torch.empty_like(W)
    at = j0 = 0
    for width in strip_widths():  # 3 VL, VL, 1 (VL: the vector width, 8 or 16)
        while j0 + width <= 53:
            back[:, j0:j0 + width] = q[at:at + 7 * width].reshape(7, width) * scale[j0:j0 + width]
            at, j0 = at + 7 * width, j0 + width
    assert bool(((back - W).abs() <= scale / 2 * (1 + 1e-6)).all())


@pytest.mark.parametrize("weights", ["float32", "int8"])
@pytest.mark.parametrize("split_min", [0, 1, 64, 10**9])
def test_two_threads_sharing_one_sequence_generate_bit_identical_tokens_and_state(weights, split_min):
    """At batch 1 with two threads the step's large linears and SSM blocks are split between a leader
    and a worker thread (``split_min``: 1 splits every one, 0 none).  The split changes no sum's order,
    so tokens, log-likelihoods, logits and every state agree bit for bit with one thread."""
    model = _model()
    outs = []
    for threads, split in ((1, 0), (2, split_min)):
        stepper = NativeStepper(model, threads=threads, weights=weights)
        stepper.split_min = split
        run = stepper.start(model.default_state(1))
        tokens, ll = run.generate(run.step(torch.full((1,), 21)), 50, 1.0, 1.0, torch.Generator().manual_seed(4),
                                  step_last=True)
        outs.append((tokens, ll, run.logits.clone(), run.state.clone(), run.count.clone()))
    for a, b in zip(*outs, strict=True):
        assert torch.equal(a, b)


def test_ssm_terms_are_packed_one_channel_per_lane():
    """pack_lanes against its layout, element by element: channel h of group h // VL sits in lane h % VL,
    each group mode by mode, real lanes then imaginary lanes; padding channels are zero."""
    torch.manual_seed(0)
    re, im = torch.randn(2, 5, 3), torch.randn(2, 5, 3)  # (rank, H, M)
    vl = 4
    out = pack_lanes(re, im, vl)
    assert out.shape == (2, 2 * 3 * 2 * vl)  # 5 channels -> 2 groups of 4
    expected = torch.zeros(2, 2 * 3 * 2 * vl)
    for k in range(2):
        for h in range(5):
            g, lane = divmod(h, vl)
            for m in range(3):
                at = ((g * 3 + m) * 2) * vl + lane
                expected[k, at], expected[k, at + vl] = re[k, h, m], im[k, h, m]
    assert torch.equal(out, expected)
