"""Conditional diffusion for imputation with diffusers' schedulers (SSSD, Lopez Alcaraz & Strodthoff 2022).

Training and ancestral sampling follow DDPM (Ho et al. 2020) with SSSD's settings: T = 200,
linear betas from 1e-4 to 0.02, epsilon prediction, the "fixed small" posterior variance
(beta tilde), and no clipping (series are standardised, not bounded to [-1, 1]).

Observed entries are conditioning, not generated: the network's input holds their values
(clean when the loss falls on the imputed entries only, the paper's default; noised to the
current level q(x_t | x_0) when the loss falls on every entry), re-imposed before every
denoising step and once more at the end.  DDIM (Song et al. 2021) and DPM-Solver++ (Lu et al.
2022) reuse the same trained network with any number of steps.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

if TYPE_CHECKING:  # diffusers is imported when a scheduler is built, so that `ssm --help` stays fast
    from diffusers import DDPMScheduler

SAMPLERS = ("ddpm", "ddim", "dpm")
LOSS_ON = ("missing", "all")
#: one CPU generator for the whole batch, or one per row (the row's draws then do not depend on its batch)
Generators = torch.Generator | Sequence[torch.Generator] | None


def _per_row(generator: Generators, rows: int) -> list[torch.Generator] | None:
    if generator is None or isinstance(generator, torch.Generator):
        return None
    if len(generator) != rows:
        raise ValueError(f"got {len(generator)} generators for {rows} rows; give one per row or a single one")
    return list(generator)


def randn_rows(shape: Sequence[int], generator: Generators = None) -> Tensor:
    """Standard normal noise of ``shape`` (rows first); with one generator per row, row b draws from its own."""
    gens = _per_row(generator, shape[0])
    if gens is None:
        return torch.randn(tuple(shape), generator=generator)
    return torch.stack([torch.randn(tuple(shape[1:]), generator=g) for g in gens])


def randint_rows(high: int, rows: int, generator: Generators = None) -> Tensor:
    """``rows`` integers in ``[0, high)``; with one generator per row, each from its own."""
    gens = _per_row(generator, rows)
    if gens is None:
        return torch.randint(0, high, (rows,), generator=generator)
    return torch.cat([torch.randint(0, high, (1,), generator=g) for g in gens])


def make_scheduler(num_steps: int = 200, beta_start: float = 1e-4, beta_end: float = 0.02) -> DDPMScheduler:
    """The training scheduler: DDPM, linear betas, epsilon prediction, fixed_small variance, no clipping."""
    from diffusers import DDPMScheduler

    return DDPMScheduler(num_train_timesteps=num_steps, beta_start=beta_start, beta_end=beta_end,
                         beta_schedule="linear", prediction_type="epsilon", variance_type="fixed_small",
                         clip_sample=False)


def make_sampler(name: str, train_scheduler: DDPMScheduler, steps: int | None = None):
    """A sampling scheduler (``ddpm``, ``ddim`` or ``dpm``) sharing the training betas, set to ``steps`` steps
    (default: every training step for ``ddpm``, 50 for the others)."""
    from diffusers import DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler

    if name not in SAMPLERS:
        raise ValueError(f"unknown sampler {name!r}; choose one of {', '.join(SAMPLERS)}")
    T = train_scheduler.config.num_train_timesteps
    steps = steps or (T if name == "ddpm" else 50)
    if not 1 <= steps <= T:
        raise ValueError(f"sampler steps must be in [1, {T}] (the training diffusion steps), got {steps}")
    config = dict(train_scheduler.config)
    if name == "ddpm":
        sampler = DDPMScheduler.from_config(config)
    elif name == "ddim":
        sampler = DDIMScheduler.from_config(config, clip_sample=False, set_alpha_to_one=True)
    else:
        sampler = DPMSolverMultistepScheduler.from_config(config, algorithm_type="dpmsolver++", solver_order=2)
    sampler.set_timesteps(steps)
    return sampler


def diffusion_loss(net: nn.Module, x0: Tensor, available: Tensor, cond_mask: Tensor, scheduler: DDPMScheduler,
                   loss_on: str = "missing", generator: Generators = None,
                   cond_values: Tensor | None = None, per_row: bool = False, dt: Tensor | None = None) -> Tensor:
    """Mean squared noise-prediction error of one training step (``per_row``: its sum per series, (B,)).

    Args:
        net: the denoiser, ``net(x_t, cond, mask, t)``.
        x0: standardised series (B, L, C), zero (not NaN) where data is missing.
        available: (B, L, C) bool, False where the data had NaN: never a target.
        cond_mask: (B, L, C) bool, the observed entries given as conditioning (subset of ``available``).
        loss_on: ``missing`` (the entries to impute, the paper's default) or ``all`` available entries.
        generator: for reproducible steps and noise (validation); one per series for per-series draws.
        cond_values: what the network is shown as observed values (default ``x0``; the module passes the
            series itself when ``x0`` is its residual after interpolation).
        dt: (B, L) per-step time steps of irregularly sampled series, passed to the network (None: regular).
    """
    if loss_on not in LOSS_ON:
        raise ValueError(f"model.loss_on must be one of {', '.join(LOSS_ON)}, got {loss_on!r}")
    B = x0.shape[0]
    T = scheduler.config.num_train_timesteps
    t = randint_rows(T, B, generator).to(x0.device)
    noise = randn_rows(x0.shape, generator).to(x0)
    x_t = scheduler.add_noise(x0, noise, t)
    if loss_on == "missing":
        x_t = torch.where(cond_mask, x0, x_t)
        target = available & ~cond_mask
    else:
        target = available
    cond = (x0 if cond_values is None else cond_values) * cond_mask
    eps = net(x_t, cond, cond_mask, t) if dt is None else net(x_t, cond, cond_mask, t, dt=dt)
    weight = target.to(eps.dtype)
    if per_row:
        return ((eps - noise) ** 2 * weight).sum(dim=(1, 2))
    return ((eps - noise) ** 2 * weight).sum() / weight.sum().clamp_min(1.0)


def _impose(x: Tensor, x0: Tensor, cond_mask: Tensor, scheduler: DDPMScheduler, t: Tensor, noised: bool,
            generator: Generators) -> Tensor:
    if noised and int(t) > 0:
        noise = randn_rows(x0.shape, generator).to(x0)
        obs = scheduler.add_noise(x0, noise, t.expand(x0.shape[0]))
        return torch.where(cond_mask, obs, x)
    return torch.where(cond_mask, x0, x)


@torch.no_grad()
def impute(net: nn.Module, x0: Tensor, cond_mask: Tensor, scheduler: DDPMScheduler, sampler: str = "ddpm",
           steps: int | None = None, loss_on: str = "missing", generator: Generators = None,
           on_step: Callable[[], None] | None = None, cond_values: Tensor | None = None,
           dt: Tensor | None = None) -> Tensor:
    """Draw one imputation per series by reverse diffusion.

    Args:
        net: the trained denoiser; if it has ``condition(cond, mask)`` (:class:`apps.sssd.model.SSSDS4`), the
            conditioning is prepared once and passed to every step as ``condition=``.
        x0: (B, L, C) standardised series; only entries where ``cond_mask`` is True are read.
        cond_mask: (B, L, C) bool, True = observed.
        scheduler: the training DDPM scheduler (betas).
        sampler, steps: ``ddpm`` (ancestral, default every step), ``ddim`` or ``dpm`` with ``steps`` steps.
        loss_on: how the model was trained (``missing``: observed entries enter clean; ``all``: noised).
        generator: CPU generator for the initial noise and the ancestral noise, or one per series (each
            series' draws are then its own, whatever else is in the batch).
        on_step: called after every denoising step (progress bars).
        cond_values: the observed values shown to the network, if not ``x0`` (see :func:`diffusion_loss`).
        dt: (B, L) per-step time steps of irregularly sampled series, passed to the network (None: regular).
    Returns:
        (B, L, C): the observed entries exactly as given, the others sampled.
    """
    x0 = torch.where(cond_mask, x0, torch.zeros_like(x0))
    sched = make_sampler(sampler, scheduler, steps)
    x = randn_rows(x0.shape, generator).to(x0) * sched.init_noise_sigma
    cond = (x0 if cond_values is None else cond_values) * cond_mask
    # the conditioning is the same at every step: networks that can take it prepared get it once
    prepared = {}
    if hasattr(net, "condition"):
        prepared["condition"] = net.condition(cond, cond_mask) if dt is None else net.condition(cond, cond_mask, dt)
    if dt is not None:
        prepared["dt"] = dt
    # diffusers draws the ancestral noise with one generator per row when given a list
    kwargs = {"generator": generator if isinstance(generator, torch.Generator) or generator is None
              else list(generator)} if sampler != "ddim" else {}
    for t in sched.timesteps:
        t_dev = t.to(x0.device)
        x = _impose(x, x0, cond_mask, scheduler, t_dev, loss_on == "all", generator)
        eps = net(x, cond, cond_mask, t_dev.reshape(1), **prepared)  # one step for the whole batch
        x = sched.step(eps, t_dev, x, **kwargs).prev_sample
        if on_step is not None:
            on_step()
    return torch.where(cond_mask, x0, x)


@torch.no_grad()
def impute_samples(net: nn.Module, x0: Tensor, cond_mask: Tensor, scheduler: DDPMScheduler, n_samples: int,
                   batch_size: int = 64, cond_values: Tensor | None = None, dt: Tensor | None = None,
                   **kwargs) -> Tensor:
    """``n_samples`` imputations per series, batched: (B, L, C) -> (S, B, L, C).  Options as :func:`impute`
    (``dt``: (B, L), each series' time steps); ``generator`` may be one per imputation, S * B of them,
    sample-major (sample s of series b at s * B + b)."""
    B = x0.shape[0]
    dt_rep = dt.repeat(n_samples, 1) if dt is not None else None  # (S B, L), sample-major
    x_rep = x0.repeat(n_samples, 1, 1)  # (S B, L, C), sample-major
    m_rep = cond_mask.repeat(n_samples, 1, 1)
    c_rep = cond_values.repeat(n_samples, 1, 1) if cond_values is not None else x_rep
    generator = kwargs.pop("generator", None)
    gens = _per_row(generator, len(x_rep))
    out = [impute(net, x_rep[i:i + batch_size], m_rep[i:i + batch_size], scheduler,
                  cond_values=c_rep[i:i + batch_size], dt=None if dt_rep is None else dt_rep[i:i + batch_size],
                  generator=generator if gens is None else gens[i:i + batch_size], **kwargs)
           for i in range(0, len(x_rep), batch_size)]
    return torch.cat(out).reshape(n_samples, B, *x0.shape[1:])
