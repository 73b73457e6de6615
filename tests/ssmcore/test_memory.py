"""Memory of the backward pass: what a layer's forward keeps for autograd, and the gradients of the
custom autograd functions that recompute instead of keeping.

The layer contract says no (H, N, L) tensor may exist at long L; these tests hold the saved tensors of
S4's kernel to O(H N) (independent of L) and those of a whole S4 layer to a few (H, L) tensors, and
check the blocked S4 resolvent (:func:`ssmcore.kernels.dplr_resolvent_bilinear`) and the FFT
convolution against autograd of explicit float64 formulas built here.
"""

from __future__ import annotations

import math

import pytest
import torch

from ssmcore import make_layer
from ssmcore.fftconv import fftconv
from ssmcore.kernels import dplr_resolvent_bilinear
from tests.ssmcore.helpers import rel_err


def saved_bytes(fn, exclude=()) -> int:
    """Bytes of the distinct storages that autograd saves while ``fn()`` runs, ``exclude``'s storages left out."""
    skip = {t.untyped_storage().data_ptr() for t in exclude}
    storages: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        ptr = t.untyped_storage().data_ptr()
        if ptr not in skip:
            storages[ptr] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return sum(storages.values())


def resolvent_reference(C, b, P, lam, dt, L):
    """``C [(1 - omega) I - dt (1 + omega)/2 A]^{-1} b`` of the full conjugate-symmetric system, dense, float64."""
    full = lambda x: torch.cat([x, x.conj()], -1)  # noqa: E731
    A = torch.diag_embed(full(lam)) - torch.einsum("rhi,rhj->hij", full(P).conj(), full(P))  # (H, N, N)
    omega = torch.exp(-2j * math.pi * torch.arange(L // 2 + 1, dtype=torch.float64) / L)
    eye = torch.eye(A.shape[-1], dtype=A.dtype)
    beta = dt[:, None] * (1 + omega) / 2  # (H, K)
    system = (1 - omega)[None, :, None, None] * eye - beta[..., None, None] * A[:, None]  # (H, K, N, N)
    x = torch.linalg.solve(system, full(b).permute(1, 2, 0)[:, None])  # (H, K, N, n)
    return torch.einsum("chm,hkmn->cnhk", full(C), x)  # (c, n, H, K)


@pytest.mark.parametrize("rank", [1, 2])
@pytest.mark.parametrize("L", [12, 13])
def test_resolvent_and_gradients_match_dense_float64(rank, L):
    torch.manual_seed(rank * 100 + L)
    H, M, nc, nb = 3, 4, 2, 3
    C = torch.randn(nc, H, M, dtype=torch.complex128, requires_grad=True)
    b = torch.randn(nb, H, M, dtype=torch.complex128, requires_grad=True)
    P = (0.5 * torch.randn(rank, H, M, dtype=torch.complex128)).requires_grad_()
    lam = torch.complex(-torch.rand(H, M, dtype=torch.float64) - 0.1, 5 * torch.randn(H, M, dtype=torch.float64))
    lam.requires_grad_()
    dt = (torch.rand(H, dtype=torch.float64) * 0.5 + 0.01).requires_grad_()
    inputs = (C, b, P, lam, dt)
    out = dplr_resolvent_bilinear(C, b, P, lam, dt, L, chunk=2)
    ref = resolvent_reference(C, b, P, lam, dt, L)
    assert rel_err(out, ref) < 1e-12
    w = torch.randn(ref.shape, dtype=torch.complex128)
    grads = torch.autograd.grad((out * w).real.sum(), inputs)
    grads_ref = torch.autograd.grad((ref * w).real.sum(), inputs)
    for name, g, g_ref in zip("C b P lam dt".split(), grads, grads_ref):
        assert rel_err(g, g_ref) < 1e-10, name


def test_resolvent_gradcheck():
    torch.manual_seed(0)
    H, M = 2, 3
    C, b = torch.randn(1, H, M, dtype=torch.complex128), torch.randn(2, H, M, dtype=torch.complex128)
    P = 0.5 * torch.randn(1, H, M, dtype=torch.complex128)
    lam = torch.complex(-torch.rand(H, M, dtype=torch.float64) - 0.1, 3 * torch.randn(H, M, dtype=torch.float64))
    dt = torch.rand(H, dtype=torch.float64) * 0.5 + 0.01

    def f(C, b, P, lam, dt):
        c = torch.view_as_complex
        return torch.view_as_real(dplr_resolvent_bilinear(c(C), c(b), c(P), c(lam), dt, 8, chunk=3))

    args = tuple(torch.view_as_real(t).clone().requires_grad_() for t in (C, b, P, lam)) + (dt.requires_grad_(),)
    assert torch.autograd.gradcheck(f, args)


@pytest.mark.parametrize("B,C", [(1, 1), (1, 3), (3, 1)])
def test_fftconv_gradients_for_single_sequence_or_kernel(B, C):
    """The forward multiplies in place of whichever spectrum is as large as the product: every case."""
    torch.manual_seed(0)
    L = 9
    u = torch.randn(B, 2, L, dtype=torch.float64, requires_grad=True)
    k = torch.randn(C, 2, L, dtype=torch.float64, requires_grad=True)
    m = torch.arange(L)
    lags = m[:, None] - m[None, :]  # t - s
    toeplitz = torch.where(lags >= 0, k[..., lags.clamp(min=0)], torch.zeros((), dtype=k.dtype))  # (C, H, t, s)
    ref = torch.einsum("chts,bhs->bcht", toeplitz, u)
    y = fftconv(u, k)
    assert rel_err(y, ref) < 1e-12
    w = torch.randn(ref.shape, dtype=torch.float64)
    for g, g_ref in zip(torch.autograd.grad((y * w).sum(), (u, k)), torch.autograd.grad((ref * w).sum(), (u, k))):
        assert rel_err(g, g_ref) < 1e-12


@pytest.mark.parametrize("name", ["s4", "liquid_s4", "ema"])
def test_kernel_saves_nothing_of_length_L(name):
    """Generating S4's kernel keeps only O(H N) tensors for the backward pass, whatever L."""
    torch.manual_seed(0)
    H, N, L = 16, 64, 8192
    layer = make_layer(name, d_model=H, d_state=N)
    params = list(layer.parameters())
    kept = saved_bytes(lambda: layer.kernel(L), exclude=params)
    assert kept < 64 * H * N * 4  # a few dozen (H, N) tensors; one (H, L) float32 tensor is 512 KiB here
    assert kept < H * L * 4


def test_s4_layer_saves_o_of_HL_not_HNL():
    """A whole S4 layer (kernel, FFT convolution, GELU, GLU projection) keeps a handful of (B, H, L)
    tensors for its backward pass: far below one (H, N, L) tensor (64 of them here)."""
    torch.manual_seed(0)
    B, H, N, L = 1, 16, 64, 8192
    layer = make_layer("s4", d_model=H, d_state=N)
    x = torch.randn(B, L, H, requires_grad=True)
    kept = saved_bytes(lambda: layer(x), exclude=[*layer.parameters(), x])
    unit = B * H * L * 4  # one (B, H, L) float32 tensor
    assert kept <= 8 * unit  # u, k, the activation's input and output, the GLU's input (2 units)
    assert kept < H * N * L * 4 / 8


# ----------------------------------------------------------------- third round: the output block, blocks


def _plain_post(layer, y_bchl):
    """The published block's composition, written out here: activation, output projection (GLU)."""
    z = y_bchl.permute(0, 3, 1, 2).flatten(2)  # (B, L, C H)
    acts = {"gelu": torch.nn.functional.gelu, "silu": torch.nn.functional.silu, "relu": torch.relu,
            "tanh": torch.tanh, "identity": lambda t: t}
    a = acts[layer._act_name](z)
    if layer.postact == "none":
        return a
    lin = layer.output_linear
    p = a @ lin.weight.T + lin.bias
    if layer.postact == "glu":
        h = p.shape[-1] // 2
        return p[..., :h] * torch.sigmoid(p[..., h:])
    return p


@pytest.mark.parametrize("activation,postact,channels", [("gelu", "glu", 1), ("silu", "linear", 2),
                                                          ("tanh", "glu", 2), ("relu", "none", 1)])
def test_fused_output_block_gradcheck_float64(monkeypatch, activation, postact, channels):
    """The fused output block (only its input kept; the backward recomputes block by block) has the
    gradients of the plain composition: gradcheck in float64 over several row blocks and sequences."""
    import ssmcore.layers.base as base

    monkeypatch.setattr(base, "OUTPUT_BLOCK_ELEMENTS", 1)
    monkeypatch.setattr(base, "OUTPUT_BLOCK_MIN_ROWS", 256)  # blocks of 256 rows
    torch.manual_seed(0)
    layer = make_layer("s4d", d_model=3, d_state=4, channels=channels, activation=activation,
                       postact=postact).double()
    layer._act_name = activation
    params = list(layer.output.parameters())
    B, L = 2, 600  # 3 row blocks per sequence, the last one short
    y = torch.randn(B, channels, 3, L, dtype=torch.float64, requires_grad=True)

    def fused(y, *ps):
        return base._FusedOutput.apply(y, layer._post, True, *ps)

    ref = _plain_post(layer, y)
    out = fused(y, *params)
    assert rel_err(out, ref) < 1e-14
    w = torch.randn(ref.shape, dtype=torch.float64)
    for g, g_ref in zip(torch.autograd.grad((out * w).sum(), (y, *params)),
                        torch.autograd.grad((ref * w).sum(), (y, *params))):
        assert rel_err(g, g_ref) < 1e-12
    monkeypatch.setattr(base, "OUTPUT_BLOCK_MIN_ROWS", 2)  # blocks of 2 rows: gradcheck on a tiny input
    small = y[:, :, :, :5].detach().clone().requires_grad_()  # 3 blocks per sequence, the last one short
    assert torch.autograd.gradcheck(fused, (small, *params))
    rows = y.detach().permute(0, 3, 1, 2).flatten(2).flatten(0, 1).clone().requires_grad_()  # channels last
    assert torch.autograd.gradcheck(lambda r, *ps: base._FusedOutput.apply(r, layer._post, False, *ps),
                                    (rows[:7], *params))


def test_layer_output_float32_matches_plain_path():
    """A layer's forward with the fused output block against the same layer's plain path (dropout on
    in training: the plain path), float32, values and gradients."""
    torch.manual_seed(0)
    layer = make_layer("s4", d_model=8, d_state=16)
    x = torch.randn(2, 700, 8, requires_grad=True)
    y = layer(x)[0]
    gx, *gp = torch.autograd.grad((y ** 2).sum(), (x, *layer.parameters()))
    layer._fused_output = lambda y: False
    y_ref = layer(x)[0]
    gx_ref, *gp_ref = torch.autograd.grad((y_ref ** 2).sum(), (x, *layer.parameters()))
    assert rel_err(y, y_ref) < 1e-6
    assert rel_err(gx, gx_ref) < 1e-5
    for g, g_ref in zip(gp, gp_ref):
        assert rel_err(g, g_ref) < 1e-5


@pytest.mark.parametrize("name", ["s4", "s4d", "dss", "sgconv"])
def test_fused_output_gives_functional_call_parameters_their_gradients(name):
    """Under ``torch.func.functional_call`` the forward sees the call's tensors, which are swapped back out
    before the backward: the fused output block's recompute must use the tensors the forward used, so that
    each gets its gradient (it used to recompute with the module's own and return None, silently)."""
    torch.manual_seed(0)
    layer = make_layer(name, d_model=8, d_state=8)
    x = torch.randn(2, 40, 8)
    given = {k: v.detach().clone().requires_grad_(True) for k, v in layer.named_parameters()}
    (torch.func.functional_call(layer, given, (x,))[0] ** 2).sum().backward()
    (layer(x)[0] ** 2).sum().backward()
    assert layer._fused_output(x)
    for k, p in layer.named_parameters():
        if p.grad is None:
            continue
        assert given[k].grad is not None, k
        assert rel_err(given[k].grad, p.grad) < 1e-6, k


def test_fftconv_blocks_match_one_pass(monkeypatch):
    """The convolution over blocks of features gives the one-pass values and gradients (bit for bit in
    float64 up to the FFT's batching)."""
    import ssmcore.fftconv as fc

    torch.manual_seed(0)
    u = torch.randn(3, 5, 40, dtype=torch.float64, requires_grad=True)
    k = torch.randn(2, 5, 80, dtype=torch.float64, requires_grad=True)
    w = torch.randn(3, 2, 5, 40, dtype=torch.float64)
    y1 = fftconv(u, k)
    g1 = torch.autograd.grad((y1 * w).sum(), (u, k))
    monkeypatch.setattr(fc, "BLOCK_ELEMENTS", 1)  # one feature per block
    assert len(fc.feature_blocks(5, 100)) == 5
    y2 = fftconv(u, k)
    g2 = torch.autograd.grad((y2 * w).sum(), (u, k))
    assert rel_err(y2, y1) < 1e-15
    for a, b in zip(g2, g1):
        assert rel_err(a, b) < 1e-15


def test_s4_layer_saves_little_more_than_its_input():
    """Third round: an S4 layer keeps, beyond its input, the kernel (C, H, L) and the SSM's output
    (B, C, H, L) -- the fused output block's only saved tensor; the GELU, projection and GLU values
    are recomputed in the backward."""
    torch.manual_seed(0)
    B, H, N, L = 2, 16, 64, 8192
    layer = make_layer("s4", d_model=H, d_state=N)
    x = torch.randn(B, L, H, requires_grad=True)
    kept = saved_bytes(lambda: layer(x), exclude=[*layer.parameters(), x])
    unit = B * H * L * 4
    assert kept <= 1.75 * unit  # y (1 unit) + k (1 / B = 0.5 unit) + O(H N); was 4.6 units


def _direct_conv_2d(u, k, two_sided):
    """y[b, c, h, i, j] = sum over lags (p, q) of k[c, h, p, q] u[b, h, i - p, j - q], lags per axis
    0..S-1 (causal) or 0..S-1 then -S..-1 (two-sided), zero outside the grid: written out in float64."""
    B, H, S1, S2 = u.shape
    C = k.shape[0]
    y = torch.zeros(B, C, H, S1, S2, dtype=u.dtype)
    lags = [list(range(S)) + ([m - S for m in range(S)] if t else []) for S, t in zip((S1, S2), two_sided)]
    for a, p in enumerate(lags[0]):
        for c_, q in enumerate(lags[1]):
            shifted = torch.zeros_like(u)
            i0, j0 = max(p, 0), max(q, 0)
            i1, j1 = S1 + min(p, 0), S2 + min(q, 0)
            shifted[..., i0:i1, j0:j1] = u[..., i0 - p:i1 - p, j0 - q:j1 - q]
            y = y + k[None, :, :, a, c_, None, None] * shifted.unsqueeze(1)
    return y


@pytest.mark.parametrize("two_sided", [(False, False), (True, False), (True, True)])
def test_fftconv_nd_values_and_gradients_match_direct_sum(monkeypatch, two_sided):
    """fftconv_nd (blocks of one feature, only real inputs kept) against the direct 2-D sum: values,
    gradients, gradcheck; float64."""
    import ssmcore.fftconv as fc

    monkeypatch.setattr(fc, "BLOCK_ELEMENTS", 1)
    torch.manual_seed(0)
    B, C, H, S = 2, 2, 3, (4, 3)
    u = torch.randn(B, H, *S, dtype=torch.float64, requires_grad=True)
    k = torch.randn(C, H, *[s * (2 if t else 1) for s, t in zip(S, two_sided)], dtype=torch.float64,
                    requires_grad=True)
    ref = _direct_conv_2d(u, k, two_sided)
    y = fc.fftconv_nd(u, k)
    assert rel_err(y, ref) < 1e-12
    w = torch.randn(ref.shape, dtype=torch.float64)
    for g, g_ref in zip(torch.autograd.grad((y * w).sum(), (u, k)), torch.autograd.grad((ref * w).sum(), (u, k))):
        assert rel_err(g, g_ref) < 1e-12
    assert torch.autograd.gradcheck(fc.fftconv_nd, (u[:1, :2], k[:, :2]))


def test_liquid_order2_gradcheck_float64():
    """Liquid-S4's order-2 convolution, which now keeps real inputs and recomputes the spectra."""
    from ssmcore.layers.liquid_s4 import _LiquidOrder2

    torch.manual_seed(0)
    for C in (1, 2):
        u, S = torch.randn(2, 3, 6, dtype=torch.float64), torch.randn(2, 3, 6, dtype=torch.float64)
        k1, k2 = torch.randn(C, 3, 6, dtype=torch.float64), torch.randn(C, 3, 6, dtype=torch.float64)
        args = tuple(t.requires_grad_() for t in (u, S, k1, k2))
        assert torch.autograd.gradcheck(_LiquidOrder2.apply, args)


def test_ccnn_kernel_network_recomputed_per_block(monkeypatch):
    """CCNN's kernel network under checkpoint, in blocks of points: the same kernel and gradients as
    the network run in one pass, and no hidden activation kept."""
    import ssmcore.layers.ccnn as ccnn

    torch.manual_seed(0)
    layer = make_layer("ccnn", d_model=4, d_state=8)
    coords = torch.rand(50, 1, dtype=torch.float32)
    w = torch.randn(50, 4)
    params = list(layer.kernel_net.parameters())
    ref = layer.kernel_net(coords)
    g_ref = torch.autograd.grad((ref * w).sum(), params)
    monkeypatch.setattr(ccnn, "NET_BLOCK_POINTS", 16)
    out = layer.evaluate_net(coords)
    assert rel_err(out, ref) < 1e-6  # the matrix products run on fewer rows
    for g, gr in zip(torch.autograd.grad((out * w).sum(), params), g_ref):
        assert rel_err(g, gr) < 1e-6


@pytest.mark.parametrize("name,kw,shape,bound", [
    ("liquid_s4", dict(liquid_degree=2), (2, 4096, 16), 6.0),  # was 14.4
    ("s4nd", dict(dim=2), (2, 64, 64, 16), 3.5),  # was 16.3
    ("ccnn", dict(d_state=32), (2, 4096, 16), 2.5),  # was 32.7
    ("ccnn", dict(d_state=32, dim=2), (2, 64, 64, 16), 6.5),  # was 131: the two-sided kernel is 2 units
    ("s5", dict(d_state=256), (2, 4096, 16), 1.25),  # was 33.1: B~ u and the states (B, L, M) complex
    ("s5", dict(d_state=256, bidirectional=True), (2, 4096, 16), 2.25),  # was 65.1; the reversed input is 1
    ("s5_dt", dict(d_state=256), (2, 4096, 16), 1.25),  # was 97.1: the per-step decays (B, L, M) too
    ("mega", dict(), (2, 4096, 16), 3.0),  # was 51.9: the projections, scores and weights of the attention
    ("mega", dict(chunk_size=0), (2, 1024, 16), 3.0),  # was 259.6: full attention's (L, L) scores
    ("mega", dict(bidirectional=True), (2, 4096, 16), 3.5),
    ("ema", dict(), (2, 4096, 16), 1.75),  # 1.53 before and after: its kernel was already blocked
])
def test_layers_save_few_units_of_BHL(name, kw, shape, bound):
    """Bytes each layer keeps for its backward, in units of one (B, H, L) float32 tensor (L the grid's
    size): the figures before this round were 14.4 (liquid_s4), 16.3 (s4nd), 32.7 and 131 (ccnn 1-D, 2-D)."""
    torch.manual_seed(0)
    layer = make_layer(name.removesuffix("_dt"), d_model=shape[-1], **kw)
    x = torch.randn(*shape, requires_grad=True)
    extra = dict(dt=torch.rand(shape[:2]) + 0.5) if name.endswith("_dt") else {}  # irregular sampling
    kept = saved_bytes(lambda: layer(x, **extra), exclude=[*layer.parameters(), *layer.buffers(), x])
    assert kept <= bound * x.numel() * 4


# ----------------------------------------------------------------- S5's chunked scan, Mega's blocks, EMA


def _s5_reference(layer, x, dt=None, state=None):
    """S5's bare output (B, L, C, H) from its continuous parameters by explicit float64 loops (causal
    from ``state``; with ``bidirectional`` plus the anti-causal sum over the inputs after each step),
    differentiable in the parameters, ``x``, ``dt`` and ``state``; and the last causal state."""
    Lam = torch.complex(layer.Lambda_re.clamp(max=-1e-4), layer.Lambda_im)
    Bt, Ct = torch.view_as_complex(layer.B), torch.view_as_complex(layer.C)
    step = torch.exp(layer.log_step) * (1.0 if dt is None else dt[..., None])  # (M,) or (B, L, M)
    if layer.disc == "zoh":
        a, gain = torch.exp(step * Lam), torch.expm1(step * Lam) / Lam
    else:
        a, gain = (1 + step * Lam / 2) / (1 - step * Lam / 2), step / (1 - step * Lam / 2)
    Bsz, L, _ = x.shape
    a = a.expand(Bsz, L, -1) if a.dim() == 1 else a
    b = gain * torch.einsum("mh,blh->blm", Bt, x.to(Bt.dtype))
    scale = 2.0 if layer.conj_sym else 1.0
    s = torch.zeros_like(b[:, 0]) if state is None else state
    fwd = []
    for k in range(L):
        s = a[:, k] * s + b[:, k]
        fwd.append(s)
    y = scale * torch.einsum("chm,blm->blch", Ct[: layer.channels], torch.stack(fwd, 1)).real
    if layer.bidirectional:
        r, bwd = torch.zeros_like(b[:, 0]), [None] * L
        for k in range(L - 1, -1, -1):  # r_k = sum_{j > k} a_{k+2} .. a_j b_j: r_{k-1} = a_{k+1} r_k + b_k
            bwd[k] = r
            r = a[:, min(k + 1, L - 1)] * r + b[:, k]
        y = y + scale * torch.einsum("chm,blm->blch", Ct[layer.channels:], torch.stack(bwd, 1)).real
    return y, s


@pytest.mark.parametrize("options", [dict(), dict(bidirectional=True, channels=2), dict(disc="bilinear"),
                                     dict(conj_sym=False, bidirectional=True)])
@pytest.mark.parametrize("with_dt", [False, True])
def test_s5_chunked_scan_gradients_match_float64_loops(monkeypatch, options, with_dt):
    """S5's chunked scan (chunks of 5 steps, the last one short; only the states at chunk boundaries
    kept) against explicit loops: values, the next state, and the gradients of the parameters, the
    input, ``dt`` and the incoming state; float64."""
    import ssmcore.layers.s5 as s5

    monkeypatch.setattr(s5, "SCAN_BLOCK_ELEMENTS", 1)
    monkeypatch.setattr(s5, "SCAN_BLOCK_MIN_STEPS", 5)
    torch.manual_seed(0)
    layer = make_layer("s5", d_model=3, d_state=8, **options).double()
    B, L = 2, 23
    x = torch.randn(B, L, 3, dtype=torch.float64, requires_grad=True)
    dt = (torch.rand(B, L, dtype=torch.float64) * 2 + 0.1).requires_grad_() if with_dt else None
    causal = not layer.bidirectional
    state = (0.3 * layer.default_state(B).normal_()).requires_grad_() if causal else None
    y, nxt = layer._scan(x, state, 1.0, dt)
    ref, last = _s5_reference(layer, x, dt, state)
    assert rel_err(y, ref) < 1e-12
    if causal:
        assert rel_err(nxt, last) < 1e-12
    w = torch.randn(ref.shape, dtype=torch.float64)
    wl = torch.randn(last.shape, dtype=torch.complex128)
    leaves = [t for t in (x, dt, state) if t is not None] + list(layer.parameters())
    total = lambda y, s: (y * w).sum() + ((s * wl.conj()).real.sum() if causal else 0)  # noqa: E731
    grads = torch.autograd.grad(total(y, nxt), leaves, allow_unused=True)
    grads_ref = torch.autograd.grad(total(ref, last), leaves, allow_unused=True)
    for g, g_ref in zip(grads, grads_ref):
        if g_ref is None:  # D: not part of the bare SSM
            continue
        assert rel_err(g, g_ref) < 1e-10


@pytest.mark.parametrize("options", [dict(), dict(bidirectional=True)])
def test_s5_chunked_scan_gradcheck(monkeypatch, options):
    """gradcheck of the whole layer (chunks of 2, 2 and 1 steps) in the input, dt, the incoming state
    and the SSM's parameters, float64."""
    import ssmcore.layers.s5 as s5

    monkeypatch.setattr(s5, "SCAN_BLOCK_ELEMENTS", 1)
    monkeypatch.setattr(s5, "SCAN_BLOCK_MIN_STEPS", 2)
    torch.manual_seed(0)
    layer = make_layer("s5", d_model=2, d_state=4, **options).double()
    names = [n for n, _ in layer.named_parameters() if not n.startswith("output.")]
    x = torch.randn(1, 5, 2, dtype=torch.float64, requires_grad=True)
    dt = (torch.rand(1, 5, dtype=torch.float64) + 0.5).requires_grad_()
    causal = not layer.bidirectional
    state = torch.randn(1, 2, 2, dtype=torch.float64, requires_grad=causal)

    def f(x, dt, state, *ps):
        out = torch.func.functional_call(layer, dict(zip(names, ps)), (x,), dict(
            dt=dt, state=torch.view_as_complex(state) if causal else None))
        return out[0] if not causal else (out[0], torch.view_as_real(out[1]))

    params = tuple(layer.get_parameter(n).detach().clone().requires_grad_() for n in names)
    assert torch.autograd.gradcheck(f, (x, dt, state, *params))


def test_s5_layer_float32_matches_plain_composition(monkeypatch):
    """The chunked scan against S5's plain composition (the same layer with the scan in one piece,
    everything kept), float32, with dt, a state and a default-size chunk."""
    import ssmcore.layers.s5 as s5

    torch.manual_seed(0)
    layer = make_layer("s5", d_model=8, d_state=32)
    monkeypatch.setattr(s5, "SCAN_BLOCK_ELEMENTS", 2 * 16 * 100)  # chunks of 100 steps
    x = torch.randn(2, 700, 8, requires_grad=True)
    dt = torch.rand(2, 700) + 0.5
    state = 0.1 * layer.default_state(2).normal_()

    def run():
        y, s = layer(x, state=state, dt=dt)
        return torch.autograd.grad((y ** 2).sum() + s.abs().square().sum(), (x, *layer.parameters())), y, s

    (gx, *gp), y, s = run()

    def plain(states, T, x, dt_a, dt_b, st, readout, *ps):  # the scan in one piece, under autograd
        xs = states(x, dt_a, dt_b, st, *ps)
        return torch.view_as_real(xs).flatten(2) @ readout.t(), xs[:, -1]

    monkeypatch.setattr(s5._ChunkedScan, "apply", plain)
    (gx_ref, *gp_ref), y_ref, s_ref = run()
    assert rel_err(y, y_ref) < 1e-6
    assert rel_err(s, s_ref) < 1e-5  # 700 steps summed in another order (the scan restarts at each chunk)
    assert rel_err(gx, gx_ref) < 1e-5
    for g, g_ref in zip(gp, gp_ref):
        assert rel_err(g, g_ref) < 1e-5


def _plain_attention(layer):
    """Make ``layer`` (a Mega) run its attention in one piece under autograd, everything kept: the plain
    composition the blocked functions are checked against."""
    layer._blocked_attention = lambda x, xe: layer._gated_attention(x, xe, None, None)[0]


def _mega_grads(layer, x, w):
    y = layer(x)[0]
    return y, torch.autograd.grad((y * w).sum(), (x, *layer.parameters()), allow_unused=True)


@pytest.mark.parametrize("options", [dict(chunk_size=4), dict(chunk_size=4, attention="softmax", bidirectional=True),
                                     dict(chunk_size=0), dict(chunk_size=0, attention="softmax"),
                                     dict(chunk_size=0, bidirectional=True),
                                     dict(chunk_size=4, postact="glu", activation="gelu")])
def test_mega_blocked_attention_matches_plain_composition_float64(monkeypatch, options):
    """Mega's blocked attention (blocks of one chunk, the last one short; only x and x' kept) against
    the plain composition (the same layer with the attention in one piece, everything kept): values
    and the gradients of the input and of every parameter, float64; then gradcheck on a tiny case."""
    import ssmcore.layers.mega as mega

    torch.manual_seed(0)
    layer = make_layer("mega", d_model=3, d_state=2, qk_dim=4, **options).double()
    x = torch.randn(2, 19, 3, dtype=torch.float64, requires_grad=True)
    w = torch.randn(2, 19, 3, dtype=torch.float64)
    monkeypatch.setattr(mega, "ATTENTION_BLOCK_ELEMENTS", 1)
    monkeypatch.setattr(mega, "ATTENTION_BLOCK_MIN_ROWS", 4)  # causal full attention: blocks of 4 queries
    y, grads = _mega_grads(layer, x, w)
    prefix = layer.chunk_size == 0 and not layer.bidirectional
    assert ("PrefixAttention" if prefix else "BlockedAttention") in y.grad_fn.name()
    _plain_attention(layer)
    y_ref, grads_ref = _mega_grads(layer, x, w)
    assert "Attention" not in y_ref.grad_fn.name()
    assert rel_err(y, y_ref) < 1e-13
    for g, g_ref in zip(grads, grads_ref):
        assert (g is None) == (g_ref is None)
        if g is not None:
            assert rel_err(g, g_ref) < 1e-12
    del layer._blocked_attention
    xe = layer.ema(x)[0].detach().requires_grad_()
    small = x[:, :6].detach().clone().requires_grad_()
    names, params = layer._attention_parameters()
    params = [p.detach().clone().requires_grad_() for p in params]  # not the layer's own: run with these
    if not prefix:
        def f(a, b, *ps):
            bounds = [(0, 4), (4, 6)] if layer.chunk_size else [(0, 6)]
            return mega._BlockedAttention.apply(layer, names, bounds, False, a, b, *ps)
    else:  # three blocks of queries, the keys and values of the earlier ones carried
        def f(a, b, *ps):
            return mega._PrefixAttention.apply(layer, names, [(0, 2), (2, 4), (4, 6)], False, a, b, *ps)
    assert torch.autograd.gradcheck(f, (small, xe[:, :6], *params))


def test_mega_float32_matches_plain_composition():
    torch.manual_seed(0)
    layer = make_layer("mega", d_model=8, chunk_size=32)
    x = torch.randn(2, 300, 8, requires_grad=True)
    w = torch.randn(2, 300, 8)
    y, grads = _mega_grads(layer, x, w)
    assert "BlockedAttention" in y.grad_fn.name()
    _plain_attention(layer)
    y_ref, grads_ref = _mega_grads(layer, x, w)
    assert "Attention" not in y_ref.grad_fn.name()
    assert rel_err(y, y_ref) < 1e-6
    for g, g_ref in zip(grads, grads_ref):
        assert rel_err(g, g_ref) < 1e-5


@pytest.mark.parametrize("options", [dict(chunk_size=4), dict(chunk_size=0), dict(chunk_size=0, bidirectional=True)])
def test_mega_gives_functional_call_parameters_their_gradients(monkeypatch, options):
    """Under ``torch.func.functional_call`` the forward sees the call's tensors, which are swapped back
    out before the backward: the blocked attention's recompute must use the tensors the forward used.
    The call's tensors hold other values than the module's, so a recompute with the module's own would
    give wrong gradients, not only missing ones; the reference is the plain composition of a copy of the
    layer holding the call's values."""
    import copy

    import ssmcore.layers.mega as mega

    monkeypatch.setattr(mega, "ATTENTION_BLOCK_ELEMENTS", 1)  # several blocks
    monkeypatch.setattr(mega, "ATTENTION_BLOCK_MIN_ROWS", 4)
    torch.manual_seed(0)
    layer = make_layer("mega", d_model=4, d_state=2, qk_dim=4, **options)
    x = torch.randn(2, 19, 4)
    w = torch.randn(2, 19, 4)
    given = {k: (v.detach() + 0.1 * torch.randn_like(v)).requires_grad_(True) for k, v in layer.named_parameters()}
    y = torch.func.functional_call(layer, given, (x,))[0]
    assert "Attention" in y.grad_fn.name()
    (y * w).sum().backward()
    reference = copy.deepcopy(layer)
    with torch.no_grad():
        for k, p in reference.named_parameters():
            p.copy_(given[k])
    _plain_attention(reference)
    y_ref = reference(x)[0]
    (y_ref * w).sum().backward()
    assert "Attention" not in y_ref.grad_fn.name()
    assert rel_err(y, y_ref) < 1e-6
    for k, p in reference.named_parameters():
        if p.grad is None:
            continue
        assert given[k].grad is not None, k
        assert rel_err(given[k].grad, p.grad) < 1e-5, k
    assert all(p.grad is None for p in layer.parameters())


@pytest.mark.parametrize("chunk_size", [4, 0])
def test_mega_blocked_attention_replays_dropout_masks(monkeypatch, chunk_size):
    """With dropout active the backward recomputes each block with the forward's random state: the
    values and gradients are those of the plain composition run block after block from the same seed
    (the same masks), whatever the generator's state at the backward."""
    import ssmcore.layers.mega as mega

    monkeypatch.setattr(mega, "ATTENTION_BLOCK_ELEMENTS", 1)
    monkeypatch.setattr(mega, "ATTENTION_BLOCK_MIN_ROWS", 4)
    torch.manual_seed(0)
    layer = make_layer("mega", d_model=3, d_state=2, qk_dim=4, chunk_size=chunk_size, dropout=0.3).double().train()
    x = torch.randn(2, 19, 3, dtype=torch.float64, requires_grad=True)
    w = torch.randn(2, 19, 3, dtype=torch.float64)
    layer._fused_output = lambda x: False  # the EMA's output block is plain anyway under dropout
    results = []
    for plain in (False, True):
        if plain:
            def blockwise(x, xe):  # blocks of 4 tokens drawn in the same order, keys carried as a cache
                outs, keys, values = [], None, None
                for t in range(0, x.shape[1], 4):
                    o, (keys, values) = layer._gated_attention(x[:, t:t + 4], xe[:, t:t + 4], keys, values)
                    outs.append(o)
                return torch.cat(outs, dim=1)

            monkeypatch.setattr(layer, "_blocked_attention", blockwise)
        torch.manual_seed(1)
        y = layer(x)[0]
        torch.manual_seed(2)  # the backward must not depend on the generator's state by then
        results.append((y, torch.autograd.grad((y * w).sum(), (x, *layer.parameters()), allow_unused=True)))
    (y, grads), (y_ref, grads_ref) = results
    assert rel_err(y, y_ref) < 1e-13
    for g, g_ref in zip(grads, grads_ref):
        if g_ref is not None:
            assert rel_err(g, g_ref) < 1e-12
