"""Sampling from a SaShiMi in recurrent mode: :func:`sample` (whole clips) and :func:`sample_logits` (one draw).

The prefix (if any) goes through the model once in convolution mode with state passing, which
leaves every layer's recurrent state and every pooling buffer where stepping would have left
them; then the model steps one sample at a time at O(1) cost each (Goel, Gu et al. 2022, Sec. 3.3).
Used by ``ssm sashimi generate`` (:mod:`apps.sashimi.generate`) and by the generator's
training-time samples (:mod:`apps.sashimi.module`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import torch
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn
from torch import Tensor

from apps.sashimi.model import SaShiMi
from apps.sashimi.stepper import FastStepper


def sample_logits(logits: Tensor, temperature: float, top_p: float, generator: torch.Generator | None) -> Tensor:
    """Draw one token per row of ``logits`` (B, K) at ``temperature`` from the top-p nucleus: (B,) long."""
    if temperature <= 0:
        return logits.argmax(-1)
    probs = torch.softmax(logits.float() / temperature, dim=-1)
    if top_p < 1.0:
        sorted_p, order = probs.sort(dim=-1, descending=True)
        drop = sorted_p.cumsum(-1) - sorted_p >= top_p  # keep the smallest set reaching top_p
        sorted_p = sorted_p.masked_fill(drop, 0.0)
        choice = torch.multinomial(sorted_p, 1, generator=generator)
        return order.gather(-1, choice)[:, 0]
    return torch.multinomial(probs, 1, generator=generator)[:, 0]


_CHUNK = 2048  # native steps per call between progress updates


def _progress() -> Progress:
    return Progress(TextColumn("[progress.description]{task.description}"), BarColumn(),
                    TextColumn("{task.completed}/{task.total} samples"), TextColumn("{task.fields[rate]}"),
                    TimeRemainingColumn(), console=Console(stderr=True))  # stdout may carry audio (--stream)


@torch.no_grad()
def sample(
    model: SaShiMi,
    n: int,
    length: int,
    batch: int | None = None,
    temperature: float = 1.0,
    top_p: float = 1.0,
    prefix: Tensor | None = None,
    start_token: int | None = None,
    generator: torch.Generator | None = None,
    progress: bool = True,
    stepper: Any = None,
    on_samples: Callable[[int, Tensor, int], None] | None = None,
) -> tuple[Tensor, Tensor]:
    """Generate ``n`` clips of ``length`` tokens: ``(tokens (n, length) long, loglik (n,) nats)``.

    ``prefix`` (P,) tokens, ``P <= length``, is copied to the start of every clip and consumed in
    convolution mode; ``loglik`` sums the model's (untempered) log-probabilities of the generated
    tokens.  ``start_token`` is the first input (default ``n_classes // 2``, the silence level of
    mu-law and linear quantisation); it must lie in ``[0, n_classes)``.  ``stepper`` (default: :class:`apps.sashimi.stepper.FastStepper` of ``model``) does the
    recurrent steps; with the native backend the sampling runs in C too, ``_CHUNK`` steps per call
    (the same rule as :func:`sample_logits`, drawn by inverse CDF, so the same seed gives other clips
    than the torch backends).  ``on_samples(first, tokens, done)``, when given, is called as the clips
    ``first .. first + b`` grow: ``tokens`` (b, length) holds them, the first ``done`` columns final
    (every ``_CHUNK`` native steps or 256 torch steps, then once with ``done == length``), for streaming.
    """
    was_training = model.training
    model.eval()
    device = model.embedding.weight.device
    batch = min(batch or n, n)
    if start_token is None:
        start_token = model.n_classes // 2
    if not 0 <= start_token < model.n_classes:
        raise ValueError(f"start_token must be in [0, {model.n_classes}) for this model, got {start_token}")
    stepper = stepper or FastStepper(model)
    P = 0 if prefix is None else int(prefix.shape[-1])
    out = torch.empty(n, length, dtype=torch.long, device=device)
    loglik = torch.zeros(n, dtype=torch.float64, device=device)
    bar = _progress() if progress else None
    task = bar.add_task("generating", total=n * length, rate="") if bar else None
    began, done = time.perf_counter(), 0
    if bar:
        bar.start()
    try:
        for first in range(0, n, batch):
            b = min(batch, n - first)
            state = model.default_state(b, device)
            clips = out[first:first + b]
            if P:
                out[first:first + b, :P] = prefix.to(device)
                inputs = torch.cat([torch.full((b, 1), start_token, device=device), out[first:first + b, :P]], 1)
                logits, state = model(inputs, state=state)  # convolution mode, state passed along
                logits = logits[:, -1]
                run = stepper.start(state)
            else:
                run = stepper.start(state)
                logits = run.step(torch.full((b,), start_token, dtype=torch.long, device=device))
            if hasattr(run, "generate"):  # the native step samples in C, many steps per call
                t = P
                while t < length:
                    steps = min(_CHUNK, length - t)
                    tokens, ll = run.generate(logits, steps, temperature, top_p, generator, t + steps < length)
                    out[first:first + b, t:t + steps] = tokens
                    loglik[first:first + b] += ll
                    logits, t = run.logits, t + steps
                    if on_samples and t < length:
                        on_samples(first, clips, t)
                    if bar:
                        rate = (done + b * t) / max(1e-9, time.perf_counter() - began)
                        bar.update(task, completed=first * length + b * t, rate=f"{rate:,.0f} samples/s")
                done += b * length
                if on_samples:
                    on_samples(first, clips, length)
                continue
            for t in range(P, length):
                token = sample_logits(logits, temperature, top_p, generator)
                loglik[first:first + b] += torch.log_softmax(logits.double(), -1).gather(-1, token[:, None])[:, 0]
                out[first:first + b, t] = token
                if t + 1 < length:
                    logits = run.step(token)
                if on_samples and t % 256 == 255 and t + 1 < length:
                    on_samples(first, clips, t + 1)
                if bar and (t % 256 == 255 or t + 1 == length):
                    done_now = done + b * (t + 1)
                    rate = done_now / max(1e-9, time.perf_counter() - began)
                    bar.update(task, completed=first * length + b * (t + 1), rate=f"{rate:,.0f} samples/s")
            done += b * length
            if on_samples:
                on_samples(first, clips, length)
    finally:
        if bar:
            bar.stop()
        model.train(was_training)
    return out, loglik
