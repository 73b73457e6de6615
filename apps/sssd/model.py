"""The SSSD^S4 denoiser (Lopez Alcaraz & Strodthoff 2022, Sec. 3 and Fig. 1).

A DiffWave-style stack of residual layers whose dilated convolutions are replaced by two
bidirectional structured state-space layers.  Per residual layer:

    h = x + fc_t(diffusion-step embedding)           # (B, C, L), embedding broadcast over time
    h = Conv1d(C -> 2C, k=3)(h)
    h = SSM_1(h)                                      # bidirectional SSM over time, 2C features
    h = h + Conv1d(2 C_in -> 2C, k=1)([x0 * mask, mask])   # conditioning: observed values and the mask
    h = SSM_2(h)
    out = tanh(h[:C]) * sigmoid(h[C:])               # gated activation
    residual = (x + Conv1x1(out)) / sqrt(2), skip = Conv1x1(out)

Skips are summed and scaled by 1/sqrt(n_layers), then a 1x1 conv -> ReLU -> a
zero-initialised 1x1 conv give the noise estimate.  Any ssmcore layer that takes
``bidirectional=True`` can be the SSM (S4 by default, as in the paper).

Irregularly sampled series: a layer that takes per-step time steps (``has_dt``: S5, S5-PTD; see
``ssmcore.registry.dt_layer_names()``) gets ``dt`` (B, L), the time since the previous sample in units of
the series' nominal step (1 everywhere for a regular series: the same output as no ``dt``), in both SSMs of
every residual layer (``forward(..., dt=dt)``); the convolutions around them stay per-sample.

Two variants (``variant``):

- ``ours`` (default): every SSM parameter trains (A, dt, P, B with their own lr and no weight decay, as
  every ssm-suite app does); the S4 layer ends in ssmcore's default GLU projection; the convolutions are
  plain, Kaiming-normal initialised.
- ``official``: the network of the published SSSD code (AI4HealthUOL/SSSD, ``SSSDS4Imputer``), checked
  against it: the SSM's A (Lambda, P), dt and B are frozen at their HiPPO-LegS initialisation (only C, D and
  the output projection train); the S4 layer is SSM + D -> GELU -> a plain Linear(H, H) (no GLU); every
  convolution except the zero-initialised output one is weight-normalised (``init_conv``, the k=3 conv, the
  conditioning, residual, skip and final convs) and keeps PyTorch's default initialisation (the reference
  calls ``kaiming_normal_`` on the weight-normed weight, which the next forward overwrites, so its effective
  initialisation is the default one); and S4's ``C~`` starts as ``C (I - Abar^L)`` for a random ``C`` at
  the training length L (:meth:`SSSDS4.init_official_C`, as the reference's length correction), not as a
  random ``C~``.  Everything else (step embedding, the two SSMs per layer with residual + LayerNorm, the
  conditioning on ``[x0 * mask, mask]``, the gated activation, the skip sum) is the same in both.
"""

from __future__ import annotations

import math

import torch
from einops import rearrange
from torch import Tensor, nn

from apps.common.layers import LayerSpec, layer_spec
from apps.sssd.evaluate import linear_fill, time_positions
from ssmcore.layers.s4 import S4, conj_full
from ssmcore.optim import ssm_parameters
from ssmcore.registry import dt_layer_names, make_layer, sequence_defaults

#: the paper's SSM: a bidirectional S4 with 64 states
SSSD_LAYER: LayerSpec = {"name": "s4", "d_state": 64}
#: ``ours`` (every SSM parameter trains, GLU output) or ``official`` (the published code's network)
VARIANTS = ("ours", "official")


def conv1d(in_channels: int, out_channels: int, kernel_size: int, official: bool) -> nn.Module:
    """A same-padded Conv1d: Kaiming-normal initialised (``ours``), or weight-normalised with PyTorch's
    default initialisation (``official``, what the published code's weight-normed convs start from)."""
    conv = nn.Conv1d(in_channels, out_channels, kernel_size=kernel_size, padding=(kernel_size - 1) // 2)
    if official:
        return nn.utils.parametrizations.weight_norm(conv)
    nn.init.kaiming_normal_(conv.weight)
    return conv


def timestep_embedding(t: Tensor, dim: int) -> Tensor:
    """Sinusoidal embedding of diffusion steps ``t`` (B,) -> (B, dim), as in DiffWave / SSSD."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, device=t.device, dtype=torch.float32) / max(half - 1, 1))
    angles = t.float().unsqueeze(1) * freqs.unsqueeze(0)  # (B, half)
    return torch.cat([torch.sin(angles), torch.cos(angles)], dim=1)


class StepEmbedding(nn.Module):
    """Diffusion-step embedding: sinusoid -> Linear -> SiLU -> Linear -> SiLU, (B,) -> (B, d_out)."""

    def __init__(self, d_in: int = 128, d_hidden: int = 512, d_out: int = 512) -> None:
        super().__init__()
        self.d_in = d_in
        self.mlp = nn.Sequential(nn.Linear(d_in, d_hidden), nn.SiLU(), nn.Linear(d_hidden, d_out), nn.SiLU())

    def forward(self, t: Tensor) -> Tensor:
        return self.mlp(timestep_embedding(t, self.d_in).to(self.mlp[0].weight.dtype))


class SSMBlock(nn.Module):
    """A bidirectional SSM layer with dropout, a residual connection and LayerNorm (SSSD's S4 layer).

    Input and output (B, H, L), channels first like the surrounding convolutions.
    """

    def __init__(self, d_model: int, layer: LayerSpec, dropout: float = 0.0) -> None:
        super().__init__()
        name = layer if isinstance(layer, str) else layer["name"]
        self.ssm = make_layer(layer, d_model=d_model, **sequence_defaults(name))  # S4ND over the time axis
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.norm = nn.LayerNorm(d_model)

    @property
    def has_dt(self) -> bool:
        """Whether the SSM takes per-step time steps ``dt`` (B, L) (S5, S5-PTD)."""
        return bool(getattr(self.ssm, "has_dt", False))

    def forward(self, x: Tensor, dt: Tensor | None = None) -> Tensor:
        """``x`` (B, H, L) -> (B, H, L); ``dt`` (B, L): per-step time steps, for a layer that takes them."""
        u = rearrange(x, "b h l -> b l h")
        y, _ = self.ssm(u) if dt is None else self.ssm(u, dt=dt)
        y = self.norm(u + self.dropout(y))
        return rearrange(y, "b l h -> b h l")


class ResidualLayer(nn.Module):
    """One SSSD^S4 residual layer: (x (B, C, L), projected conditioning (B, 2C, L), emb (B or 1, E)) ->
    (residual, skip).  The conditioning is projected by :meth:`project` (its 1x1 conv) beforehand, so that a
    sampler can do it once for all its denoising steps."""

    def __init__(self, res_channels: int, skip_channels: int, cond_channels: int, embed_dim: int,
                 layer: LayerSpec, dropout: float = 0.0, official: bool = False) -> None:
        super().__init__()
        self.res_channels = res_channels
        self.fc_t = nn.Linear(embed_dim, res_channels)
        self.conv = conv1d(res_channels, 2 * res_channels, 3, official)
        self.ssm_1 = SSMBlock(d_model=2 * res_channels, layer=layer, dropout=dropout)
        self.cond_conv = conv1d(cond_channels, 2 * res_channels, 1, official)
        self.ssm_2 = SSMBlock(d_model=2 * res_channels, layer=layer, dropout=dropout)
        self.res_conv = conv1d(res_channels, res_channels, 1, official)
        self.skip_conv = conv1d(res_channels, skip_channels, 1, official)

    def project(self, conditioning: Tensor) -> Tensor:
        """The conditioning (B, 2 or 3 C_in, L) as this layer adds it: (B, 2C, L)."""
        return self.cond_conv(conditioning)

    def forward(self, x: Tensor, cond: Tensor, emb: Tensor, dt: Tensor | None = None) -> tuple[Tensor, Tensor]:
        h = x + self.fc_t(emb).unsqueeze(-1)  # (B, C, L)
        h = self.ssm_1(self.conv(h), dt)  # (B, 2C, L)
        h = self.ssm_2(h + cond, dt)
        out = torch.tanh(h[:, : self.res_channels]) * torch.sigmoid(h[:, self.res_channels:])
        return (x + self.res_conv(out)) * math.sqrt(0.5), self.skip_conv(out)


class SSSDS4(nn.Module):
    """The SSSD^S4 noise-prediction network.

    Args:
        in_channels: series channels C_in.
        res_channels, skip_channels: widths of the residual and skip paths (paper: 256, 256).
        n_layers: residual layers (paper: 36).
        layer: the SSM layer spec (``{name: s4, d_state: 64}`` as in the paper; ``s4d``, ``dss``, ... any layer
            that takes ``bidirectional``, which is true unless the spec says otherwise).
        embed_dim_in, embed_dim_mid, embed_dim_out: diffusion-step embedding sizes (paper: 128, 512, 512).
        dropout: dropout after each SSM.
        interp_cond: also condition on the linear interpolation of the observed values (as PriSTI,
            Liu et al. 2023, does); not in SSSD, off by default.  It speeds up learning on smooth series.
        variant: ``ours`` or ``official`` (the published code's network: frozen A, dt, P, B; GELU + Linear
            at the end of each S4 layer; weight-normed convolutions; see the module docstring).  ``official``
            builds the layer with ``activation: gelu, postact: linear`` unless the spec says otherwise.

    ``forward(x_t, cond, mask, t, dt=None)``: noisy series (B, L, C_in), observed values (B, L, C_in) (zero
    where not observed), boolean observation mask (B, L, C_in) and diffusion steps (B,), or (1,) for one step
    shared by the batch -> noise estimate (B, L, C_in).  ``dt`` (B, L): per-step time steps of an irregularly
    sampled series, in units of its nominal step (:attr:`has_dt` layers only; None: 1 everywhere).  The
    conditioning does not change between denoising steps: a sampler computes it once with :meth:`condition`
    and passes it as ``condition=``.
    """

    def __init__(self, in_channels: int, res_channels: int = 64, skip_channels: int = 64, n_layers: int = 4,
                 layer: LayerSpec = SSSD_LAYER, embed_dim_in: int = 128, embed_dim_mid: int = 512,
                 embed_dim_out: int = 512, dropout: float = 0.0, interp_cond: bool = False,
                 variant: str = "ours") -> None:
        super().__init__()
        if min(in_channels, res_channels, skip_channels, n_layers) < 1:
            raise ValueError("model.in_channels, res_channels, skip_channels and n_layers must be positive")
        if variant not in VARIANTS:
            raise ValueError(f"model.variant: unknown {variant!r}; choose one of {', '.join(VARIANTS)}")
        official = variant == "official"
        if official and interp_cond:
            raise ValueError("model.interp_cond is not part of the published SSSD; set it to false with "
                             "model.variant: official")
        self.in_channels, self.n_layers, self.interp_cond, self.variant = in_channels, n_layers, interp_cond, variant
        cond_channels = (3 if interp_cond else 2) * in_channels
        self.init_conv = nn.Sequential(conv1d(in_channels, res_channels, 1, official), nn.ReLU())
        self.embed = StepEmbedding(embed_dim_in, embed_dim_mid, embed_dim_out)
        defaults = {"activation": "gelu", "postact": "linear"} if official else {}
        spec = layer_spec(layer, bidirectional=True, **defaults)
        self.layers = nn.ModuleList(
            ResidualLayer(res_channels=res_channels, skip_channels=skip_channels, cond_channels=cond_channels,
                          embed_dim=embed_dim_out, layer=spec, dropout=dropout, official=official)
            for _ in range(n_layers)
        )
        self.final_conv = nn.Sequential(conv1d(skip_channels, skip_channels, 1, official), nn.ReLU())
        self.out_conv = nn.Conv1d(skip_channels, in_channels, kernel_size=1)
        nn.init.zeros_(self.out_conv.weight)
        nn.init.zeros_(self.out_conv.bias)
        if official:  # the published S4 registers A, dt, P and B as buffers: only C, D and the projection train
            for p in ssm_parameters(self):
                p.requires_grad_(False)

    @property
    def has_dt(self) -> bool:
        """Whether every SSM takes per-step time steps ``dt`` (an irregularly sampled series can be fed)."""
        return all(layer.ssm_1.has_dt and layer.ssm_2.has_dt for layer in self.layers)

    @torch.no_grad()
    def init_official_C(self, length: int) -> int:
        """The published S4's start for ``C~``: ``C (I - Abar^L)`` with the current ``C~`` read as a random
        ``C`` and ``L = length`` (its ``l_max``, the training length), fixing every S4's reference length
        to ``length``.  Call once, before training.  Returns the number of S4 layers changed."""
        changed = 0
        for layer in self.modules():
            if not isinstance(layer, S4):
                continue
            _, Abar, _ = layer.dense_system()  # (H, N, N) complex128
            power = torch.linalg.matrix_power(Abar, length)
            C = conj_full(layer.continuous()[4]).to(Abar.dtype)  # (n_kernels, H, N)
            C_tilde = C - torch.einsum("chn,hnm->chm", C, power)
            layer.C.copy_(torch.view_as_real(C_tilde[..., : layer.d_state // 2].to(torch.complex64)))
            layer.l_ref.fill_(length)
            layer.reference_length()
            changed += 1
        return changed

    def condition(self, cond: Tensor, mask: Tensor, dt: Tensor | None = None) -> list[Tensor]:
        """Every layer's projected conditioning from the observed values and mask (B, L, C_in): n_layers x (B, 2R, L);
        ``dt`` (B, L): the series' time steps, for ``interp_cond``'s interpolation to be in time (None: row index)."""
        mask = mask.to(cond.dtype)
        parts = [cond * mask, mask]
        if self.interp_cond:
            parts.append(linear_fill(cond * mask, mask > 0, torch.zeros(self.in_channels, device=cond.device),
                                     time_positions(dt)))
        conditioning = rearrange(torch.cat(parts, dim=-1), "b l c -> b c l")  # (B, 2 or 3 C_in, L)
        return [layer.project(conditioning) for layer in self.layers]

    def forward(self, x_t: Tensor, cond: Tensor, mask: Tensor, t: Tensor,
                condition: list[Tensor] | None = None, dt: Tensor | None = None) -> Tensor:
        if dt is not None and not self.has_dt:
            raise ValueError("dt (per-step time steps) needs an SSM that takes them: "
                             f"model.layer.name one of {', '.join(dt_layer_names())}")
        if condition is None:
            condition = self.condition(cond, mask, dt)
        x = self.init_conv(rearrange(x_t, "b l c -> b c l"))  # (B, R, L)
        emb = self.embed(t)  # (B or 1, E)
        skip = 0.0
        for layer, c in zip(self.layers, condition):
            x, s = layer(x, c, emb, dt)
            skip = skip + s
        y = self.out_conv(self.final_conv(skip * math.sqrt(1.0 / self.n_layers)))
        return rearrange(y, "b c l -> b l c")
