"""The native (C) recurrent step of a whole SaShiMi model, for fast exact generation on CPU.

``native_step.c`` runs one step of every tier -- the same diagonal-plus-low-rank recurrences,
layer norms, GLU, feed-forward and pooling as :mod:`apps.sashimi.stepper` -- in one call, with no
per-op dispatch; OpenMP splits the batch over threads, and at batch 1 two threads share each step
(a leader hands half of each large linear's columns and of each SSM block's channels to a spinning
worker).  It is compiled with the system C compiler
on first use (a second or two) into ``$SSM_CACHE`` (default ``~/.cache/ssm-suite``), keyed by the
source, the compiler and the CPU (it is built with ``-march=native``, so a library from a cache
shared with another machine could die with SIGILL); without a compiler :func:`available` is False and generation uses the torch path.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from apps.sashimi.model import SaShiMi
from apps.sashimi.recurrent import block_terms, pool_states, tier_states

SOURCE = Path(__file__).with_name("native_step.c")
REC, LREC, HEAD = 16, 10, 12  # record sizes of native_step.c
WEIGHTS = ("float32", "bf16", "int8")  # how the linears' matrices are stored (see compile_program)
SPLIT_MIN = 16384  # see NativeStepper.split_min
_lib: Any = None
_error: str | None = None


def _cache_dir() -> Path:
    return Path(os.environ.get("SSM_CACHE", Path.home() / ".cache" / "ssm-suite"))


def _machine_key(compiler: str) -> bytes:
    """What ``-march=native`` means here: the compiler's version and the target options it resolves to."""
    parts = []
    for args in (["--version"], ["-march=native", "-Q", "--help=target"]):
        result = subprocess.run([compiler, *args], capture_output=True, text=True)
        parts.append(result.stdout)
    return "\n".join(parts).encode()


def build(extra_flags: tuple[str, ...] = ()) -> Any:
    """Compile ``native_step.c`` (cached per source, flags, compiler and CPU) and load it; ``extra_flags``
    such as ``("-DSASHIMI_PROFILE",)`` give a variant library.  RuntimeError without a compiler."""
    compiler = shutil.which(os.environ.get("CC", "gcc")) or shutil.which("cc")
    if compiler is None:
        raise RuntimeError("no C compiler found (set CC); generation falls back to the torch stepper")
    flags = ["-O3", "-march=native", "-fno-math-errno", "-fopenmp", "-fPIC", "-shared", *extra_flags]
    key = hashlib.sha256(SOURCE.read_bytes() + " ".join([compiler, *flags]).encode() + _machine_key(compiler))
    key = key.hexdigest()[:16]
    target = _cache_dir() / f"sashimi_step_{key}.so"
    if not target.is_file():
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(suffix=".so", dir=target.parent)
        os.close(fd)
        result = subprocess.run([compiler, *flags, "-o", tmp, str(SOURCE), "-lm"], capture_output=True, text=True)
        if result.returncode:
            Path(tmp).unlink(missing_ok=True)
            raise RuntimeError(f"compiling {SOURCE.name} failed: {result.stderr.strip()[-400:]}")
        os.replace(tmp, target)
    lib = ctypes.CDLL(str(target))
    lib.sashimi_vector_width.restype = ctypes.c_int
    lib.sashimi_vector_width.argtypes = []
    lib.sashimi_step.restype = ctypes.c_int
    lib.sashimi_step.argtypes = [ctypes.c_void_p] * 7 + [ctypes.c_int, ctypes.c_int, ctypes.c_float]
    lib.sashimi_generate.restype = None
    lib.sashimi_generate.argtypes = ([ctypes.c_void_p] * 6 + [ctypes.c_int, ctypes.c_int, ctypes.c_float, ctypes.c_int,
                                     ctypes.c_void_p, ctypes.c_float, ctypes.c_float, ctypes.c_int]
                                     + [ctypes.c_void_p] * 2 + [ctypes.c_long])
    return lib


def library() -> Any:
    """The compiled library (built once per source version); raises RuntimeError without a compiler."""
    global _lib, _error
    if _lib is not None:
        return _lib
    if _error:
        raise RuntimeError(_error)
    try:
        _lib = build()
    except RuntimeError as e:
        _error = str(e)
        raise
    return _lib


def available() -> bool:
    """Whether the native step can be built here."""
    try:
        library()
    except RuntimeError:
        return False
    return True


class _Packer:
    def __init__(self) -> None:
        self.chunks: list[Tensor] = []
        self.size = 0

    def add(self, t: Tensor) -> int:
        flat = t.detach().to(torch.float32).reshape(-1).contiguous()
        at = self.size
        self.chunks.append(flat)
        self.size += flat.numel()
        return at


def strip_widths(lib: Any = None) -> tuple[int, int, int]:
    """The column strips' widths of the compiled step ``lib`` (default: :func:`library`): 3 VL, VL and 1,
    where VL is its vector width in floats (16 with AVX-512, else 8)."""
    vl = int((lib or library()).sashimi_vector_width())
    return 3 * vl, vl, 1


def pack_strips(W: Tensor, widths: tuple[int, ...] | None = None) -> Tensor:
    """A weight matrix (in, out) in the order ``native_step.c``'s ``linear`` reads it: column strips of
    :func:`strip_widths` (3 VL, then VL, then single columns), each strip stored row by row (in x width)
    and contiguous, so a strip streams through the cache in one sequential pass."""
    W = W.detach().to(torch.float32)
    out, parts, j = W.shape[1], [], 0
    for width in widths or strip_widths():
        while j + width <= out:
            parts.append(W[:, j:j + width].reshape(-1))
            j += width
    return torch.cat(parts)


def as_bf16_slots(flat: Tensor) -> Tensor:
    """float32 values rounded to bfloat16 (to nearest, ties to even) and stored two per float32 slot,
    element i in the low half of slot i // 2 (little endian), padded to an even count: the layout that
    ``native_step.c`` reads as ``uint16_t`` when the program says bf16."""
    half = flat.to(torch.bfloat16).view(torch.int16)
    if half.numel() % 2:
        half = torch.cat([half, half.new_zeros(1)])
    return half.view(torch.float32)


def as_int8_slots(W: Tensor, widths: tuple[int, ...] | None = None) -> Tensor:
    """A matrix (in, out) as ``native_step.c`` reads an int8 one: ``out`` float32 scales, one per output
    column (the column's largest magnitude over 127; 1 for an all-zero column), then the weights
    divided by their column's scale, rounded to nearest and packed in strips (:func:`pack_strips`) as
    int8, four per float32 slot (little endian), padded to a whole slot."""
    W = W.detach().to(torch.float32)
    peak = W.abs().amax(0)
    scale = torch.where(peak > 0, peak / 127.0, torch.ones_like(peak))
    q = pack_strips(torch.round(W / scale).clamp(-127, 127), widths).to(torch.int8)
    if q.numel() % 4:
        q = torch.cat([q, q.new_zeros(4 - q.numel() % 4)])
    return torch.cat([scale, q.view(torch.float32)])


def pack_lanes(re: Tensor, im: Tensor, vl: int) -> Tensor:
    """Complex terms ``re + i im`` of shape (..., H, M) in the layout of ``native_step.c``'s ``ssm_lanes``:
    the H channels padded with zeros to a multiple of ``vl`` and cut into groups of ``vl`` (one channel
    per vector lane), each group mode by mode, its real lanes then its imaginary lanes:
    (..., H / vl, M, 2, vl), flattened.  SSM states (B, H, M) use the same layout per sequence."""
    H = re.shape[-2]
    pad = -H % vl
    z = torch.stack([re, im], -1).to(torch.float32)  # (..., H, M, 2)
    z = torch.nn.functional.pad(z, (0, 0, 0, 0, 0, pad))  # (..., Hp, M, 2)
    z = z.unflatten(-3, (z.shape[-3] // vl, vl))  # (..., G, vl, M, 2)
    return z.movedim(-3, -1).flatten(-4)  # (..., G, M, 2, vl), flattened (also with no rows: rank 0)


def _padded(t: Tensor, vl: int) -> Tensor:
    """A per-channel term (..., H) padded with zeros to a multiple of ``vl`` channels."""
    return torch.nn.functional.pad(t.to(torch.float32), (0, -t.shape[-1] % vl))


def compile_program(model: SaShiMi, weights: str = "float32", widths: tuple[int, ...] | None = None
                    ) -> tuple[Tensor, Tensor, int, list[tuple[str, Any]]]:
    """``(program int64, weights float32, state floats per sequence, state map)`` of ``model``.

    ``widths``: the strips' widths of the library that will run it (:func:`strip_widths`).
    ``weights="bf16"`` stores the matrices of every linear (block projections, feed-forward, pooling,
    decoder) as bfloat16 -- half the memory traffic, with float32 products and sums; embeddings,
    norms, biases and the SSM recurrences stay float32.  It is an approximation of the float32 step
    (relative weight error up to 2^-9), opt-in; ``"int8"`` stores them as int8 with a float32 scale per
    output column (:func:`as_int8_slots`: a quarter of the traffic; each weight within half a step,
    1/254 of its column's largest magnitude), also opt-in; ``"float32"`` is the exact step.

    The state map lists where each model state goes: ``("ssm", (offset, H, M))`` per SSM block in
    :meth:`ssmcore.blocks.SequenceModel.tiers` order (2 Hp M floats in :func:`pack_lanes`' layout, Hp = H
    rounded up to the vector width), then ``("down"/"pend", (offset, p, H))``.
    Everything is read through :func:`apps.sashimi.recurrent.block_terms` (the layers' public
    recurrences) and the modules' public attributes.
    """
    if weights not in WEIGHTS:
        raise ValueError(f"weights must be one of {WEIGHTS}, got {weights!r}")
    bb, w = model.backbone, _Packer()
    vl = (widths or strip_widths())[1]  # the library's vector width: SSM channels run one per lane

    def mat(W: Tensor) -> int:  # a linear's matrix (in, out), packed in strips, in the chosen format
        if weights == "int8":
            return w.add(as_int8_slots(W, widths))
        strips = pack_strips(W, widths)
        return w.add(as_bf16_slots(strips) if weights == "bf16" else strips)

    prog: list[int] = [0] * HEAD
    levels: list[list[int]] = [[0] * LREC for _ in bb.pool]
    state_size, state_map = 0, []

    def blocks(mods: Any) -> int:
        nonlocal state_size
        at = len(prog)
        prog.append(len(mods))
        for block in mods:
            kind, p = block_terms(block, torch.float32)
            rec = [0] * REC
            rec[4], rec[5] = w.add(p[0]), w.add(p[1])
            if kind == "ff":
                rec[0], rec[1], rec[2] = 0, p[2].shape[0], p[2].shape[1]
                rec[6:10] = [mat(p[2]), w.add(p[3]), mat(p[4]), w.add(p[5])]
            elif kind == "ssm":
                lam_r, lam_i, b_r, b_i, a_r, a_i, c, G_r, G_i, C_r, C_i, D, W, bias = p[2:]
                H, M = lam_r.shape
                rec[0], rec[1], rec[2], rec[3] = 1, H, M, a_r.shape[0]
                rec[6:15] = [w.add(pack_lanes(lam_r, lam_i, vl)), w.add(pack_lanes(b_r, b_i, vl)),
                             w.add(pack_lanes(a_r, a_i, vl)), w.add(_padded(c, vl)), w.add(pack_lanes(G_r, G_i, vl)),
                             w.add(pack_lanes(C_r, C_i, vl)), w.add(_padded(D, vl)), mat(W), w.add(bias)]
                rec[15] = state_size
                state_map.append(("ssm", (state_size, H, M)))
                state_size += 2 * (H + -H % vl) * M
            else:
                raise ValueError(f"the native step runs per-feature SSM blocks, not {kind!r} ones (use the torch backend)")
            prog.extend(rec)
        return at

    at = {key: blocks(mods) for key, mods in bb.tiers()}  # SSM blocks in state order
    for i, p in enumerate(bb.pool):
        H = bb.down[i].d_model
        lv = levels[i]
        lv[0], lv[1] = p, H
        lv[2], lv[3] = mat(bb.down[i].linear.weight.t()), w.add(bb.down[i].linear.bias)
        lv[4], lv[5] = mat(bb.up[i]["pool"].linear.weight.t()), w.add(bb.up[i]["pool"].linear.bias)
        lv[6], lv[7] = state_size, state_size + p * H
        state_map += [("down", (state_size, p, H)), ("pend", (state_size + p * H, p, H))]
        state_size += 2 * p * H
        lv[8], lv[9] = at[("down_blocks", i)], at[("up", i)]
    level_widths = [bb.d_model * 1] + [d.d_output for d in bb.down]
    norm_weight, norm_bias, _ = bb.norm.affine()
    prog[0:HEAD] = [len(bb.pool), model.n_classes, bb.d_model, w.add(model.embedding.weight),
                    w.add(norm_weight), w.add(norm_bias), mat(bb.decoder.weight.t()),
                    w.add(bb.decoder.bias), state_size, level_widths[-1], at[("center",)], WEIGHTS.index(weights)]
    program = torch.tensor(prog[:HEAD] + [v for lv in levels for v in lv] + prog[HEAD:], dtype=torch.int64)
    shift = len(levels) * LREC  # the level records sit between the header and the block lists
    for i in range(len(levels)):
        program[HEAD + i * LREC + 8] += shift
        program[HEAD + i * LREC + 9] += shift
    program[10] += shift  # CENTER_BLK
    return program, torch.cat(w.chunks), state_size, state_map


class NativeRun:
    """A batch in flight: ``step(token (B,)) -> logits (B, K)``."""

    def __init__(self, stepper: NativeStepper, state: dict) -> None:
        self.s = stepper
        bb = stepper.model.backbone
        batch = state["down"][0].shape[0] if bb.pool else next(iter(state["center"])).shape[0]
        self.state = torch.zeros(batch, stepper.state_size, dtype=torch.float32)
        ssm_states = [s for tier in tier_states(stepper.model, state) for s in tier if s is not None]
        maps = [m for kind, m in stepper.state_map if kind == "ssm"]
        vl = stepper.vector_width
        for (at, H, M), s in zip(maps, ssm_states, strict=True):
            if tuple(s.shape[-2:]) != (H, M):
                raise ValueError(f"an SSM state of shape {tuple(s.shape)} for a block of {H} channels x {M} modes")
            lanes = pack_lanes(s.real, s.imag, vl)  # (B, Hp M 2): groups of vl channels, one per lane
            self.state[:, at:at + lanes.shape[-1]] = lanes
        self.count = torch.zeros(len(bb.pool), dtype=torch.int64)
        self.next = torch.zeros(len(bb.pool), dtype=torch.int64)
        pools = [m for kind, m in stepper.state_map if kind != "ssm"]
        for i, (buffered, pending) in enumerate(pool_states(stepper.model, state)):
            (d_at, p, H), (p_at, _, _) = pools[2 * i], pools[2 * i + 1]
            k, j, Hp = buffered.shape[1], pending.shape[1], pending.shape[2]
            self.state[:, d_at:d_at + k * H] = buffered.reshape(batch, -1)
            self.state[:, p_at + (p - j) * Hp:p_at + p * Hp] = pending.reshape(batch, -1)
            self.count[i], self.next[i] = k, p - j
        self.tokens = torch.zeros(batch, dtype=torch.int64)
        self.logits = torch.zeros(batch, stepper.model.n_classes, dtype=torch.float32)
        s = stepper
        self._args = [ctypes.c_void_p(t.data_ptr()) for t in (s.program, s.weights, self.state, self.tokens,
                                                              self.logits, self.count, self.next)]
        self._batch = batch

    @torch.no_grad()
    def step(self, token: Tensor) -> Tensor:
        """``token`` (B,) long -> logits (B, n_classes) of the next token; IndexError for a token
        outside ``[0, n_classes)`` (the state is then left as it was)."""
        self.tokens.copy_(token)
        if self.s.lib.sashimi_step(*self._args, self._batch, self.s.threads, self.s.eps):
            K = self.logits.shape[1]
            raise IndexError(f"token out of range: the model has {K} classes (0..{K - 1}), got {token.tolist()}")
        return self.logits.clone()

    @torch.no_grad()
    def generate(self, logits: Tensor, steps: int, temperature: float = 1.0, top_p: float = 1.0,
                 generator: torch.Generator | None = None, step_last: bool = False) -> tuple[Tensor, Tensor]:
        """Sample ``steps`` tokens per sequence in one native call: ``(tokens (B, steps), loglik (B,) nats)``.

        Starts from ``logits`` (B, K), the distribution of the next token; each drawn token is fed back
        (no Python per step, no per-step thread synchronisation).  The sampling rule is
        :func:`apps.sashimi.sampling.sample_logits`' (temperature, top-p nucleus; temperature 0 is
        greedy), drawn by inverse CDF from ``torch.rand`` numbers of ``generator``; ``loglik`` sums the
        untempered log-probabilities.  With ``step_last`` the model also steps on the last token, and
        :attr:`logits` then holds the next distribution (to continue with another call).
        """
        B, K = self.logits.shape
        if logits.shape != (B, K):
            raise ValueError(f"logits must be ({B}, {K}), got {tuple(logits.shape)}")
        self.logits.copy_(logits)
        uniform = torch.rand(steps, B, generator=generator, dtype=torch.float32)
        out = torch.empty(B, steps, dtype=torch.int64)
        loglik = torch.zeros(B, dtype=torch.float64)
        ptr = lambda t: ctypes.c_void_p(t.data_ptr())  # noqa: E731
        a = self._args
        self.s.lib.sashimi_generate(a[0], a[1], a[2], a[4], a[5], a[6], B, self.s.threads, self.s.eps, steps,
                                    ptr(uniform), float(temperature), float(top_p), int(step_last), ptr(out),
                                    ptr(loglik), self.s.split_min)
        return out, loglik


class NativeStepper:
    """Native stepping of a float32 CPU :class:`SaShiMi` whose blocks are feed-forward or per-feature SSM
    blocks (:func:`apps.sashimi.recurrent.block_kind` ``"ff"`` / ``"ssm"``); ``weights`` ``"float32"``
    (exact, the default), ``"bf16"`` or ``"int8"`` (the linears' matrices in bfloat16, or in int8 with a
    scale per output column; see :func:`compile_program`).  With ``threads >= 2`` a batch is split across
    threads, and a single sequence is shared by two (see :attr:`split_min`); either way the result is
    bit-identical to one thread's."""

    def __init__(self, model: SaShiMi, threads: int | None = None, weights: str = "float32", lib: Any = None) -> None:
        self.lib = lib or library()  # lib: a variant build (benchmarks), e.g. build(("-mno-avx512f",))
        self.weights_format = weights
        self.model = model
        # One thread unless asked: a step is microseconds of work, and an OpenMP barrier that waits on a
        # descheduled thread costs milliseconds (30x slower on a busy 2-core machine, measured).
        self.threads = threads or 1
        # At batch 1 with threads >= 2, the two threads share each step: linears of at least this many
        # weights and SSM blocks of at least this many terms (H x M x 10) are split between them.
        self.split_min = SPLIT_MIN
        widths = strip_widths(self.lib)
        self.vector_width = widths[1]  # floats per SIMD vector of the library: SSM channels per lane group
        with torch.no_grad():
            self.program, self.weights, self.state_size, self.state_map = compile_program(model, weights, widths)
        if model.embedding.weight.device.type != "cpu":
            raise ValueError("the native step runs on CPU; use the torch backend on other devices")
        norms = [m.eps for m in model.modules() if isinstance(m, torch.nn.LayerNorm)]
        self.eps = float(norms[0]) if norms else 1e-5

    def start(self, state: dict) -> NativeRun:
        return NativeRun(self, state)
