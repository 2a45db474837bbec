"""The fused GPU kernels of ``gpu-sa``: every read's whole anneal inside one Triton launch.

The same algorithm as the torch path in :mod:`qpu_gateway.backends.gpu_sa`, in float32: single-spin
Metropolis updates in a fixed variable order per sweep, one β per sweep, local fields kept and
updated only on accepted flips. All sweeps and steps run inside the kernel, with no launch per
step. Two layouts:

- ``"read"`` (default): one program (``num_warps`` warps) per read. The read's spins ``s = 1 − 2x``
  and fields ``f`` (``N_PAD``,) are spread over the program's lanes. A step draws one uniform ``u``
  from the read's xorshift128 generator (Marsaglia 2003; the family dwave-samplers uses), turns it
  into a threshold ``t = −ln(u)/β``, compares ``s·f < t`` lane-wise (ΔE of flipping each variable;
  ``exp(−βΔE) > u`` without an ``exp``) and extracts variable ``i``'s verdict with one reduction.
  The flip itself is a branch uniform over the program. ``PREFETCH`` says when row ``i`` of ``W``
  is read: 0 only on an accepted flip, 1 at the start of every step (its latency overlaps the
  step's arithmetic), 2 one step ahead.
- ``"tile"``: one program per ``BLOCK_R`` reads, a (``BLOCK_R``, ``N_PAD``) register tile, every
  step applied to all reads of the tile with masks; the randoms come from Philox (``tl.rand``).

Both are deterministic for a seed on a given device. Correctness is checked in Triton's interpreter
on the CPU (``TRITON_INTERPRET=1``, ``tests/test_gpu_sa.py``) and on CUDA where a GPU is present;
speed is measured by ``benchmarks/gpu_sa.py``.
"""

from __future__ import annotations

import numpy as np
import torch
import triton
import triton.language as tl
from numpy.typing import NDArray

__all__ = ["LAYOUTS", "anneal_triton"]

LAYOUTS = ("read", "tile")


@triton.jit
def _xorshift128(a, b, c, d):
    """One step of Marsaglia's xorshift128 on uint32 words; returns the new state."""
    t = a ^ (a << 11)
    return b, c, d, d ^ (d >> 19) ^ (t ^ (t >> 8))


@triton.jit
def _read_kernel(
    w_ptr, f_ptr, s_ptr, rng_ptr, inv_betas_ptr, n, num_sweeps,
    N_PAD: tl.constexpr, PREFETCH: tl.constexpr, BRANCH: tl.constexpr, GATHER: tl.constexpr,
):
    read = tl.program_id(0).to(tl.int64)
    cols = tl.arange(0, N_PAD)
    s = tl.load(s_ptr + read * N_PAD + cols)
    f = tl.load(f_ptr + read * N_PAD + cols)
    a = tl.load(rng_ptr + read * 4).to(tl.uint32, bitcast=True)
    b = tl.load(rng_ptr + read * 4 + 1).to(tl.uint32, bitcast=True)
    c = tl.load(rng_ptr + read * 4 + 2).to(tl.uint32, bitcast=True)
    d = tl.load(rng_ptr + read * 4 + 3).to(tl.uint32, bitcast=True)
    # -ln(u) of the next step is drawn one step ahead: it does not depend on the state, so its
    # arithmetic overlaps the current step's reduction instead of preceding it.
    a, b, c, d = _xorshift128(a, b, c, d)
    neg_log_u = -tl.log((d >> 8).to(tl.float32) * 5.9604644775390625e-08)
    ahead = tl.load(w_ptr + cols)
    for sweep in range(num_sweeps):
        inv_beta = tl.load(inv_betas_ptr + sweep)
        for i in range(n):
            if PREFETCH == 1:
                row = tl.load(w_ptr + i * N_PAD + cols)
            elif PREFETCH == 2:
                row = ahead
                ahead = tl.load(w_ptr + ((i + 1) % n) * N_PAD + cols)
            threshold = neg_log_u * inv_beta
            a, b, c, d = _xorshift128(a, b, c, d)
            neg_log_u = -tl.log((d >> 8).to(tl.float32) * 5.9604644775390625e-08)
            candidate = tl.where(s * f < threshold, s, 0.0)
            if GATHER:
                change = tl.sum(tl.gather(candidate, tl.full((1,), i, tl.int32), 0), axis=0)
            else:
                change = tl.sum(tl.where(cols == i, candidate, 0.0), axis=0)
            if BRANCH:
                if change != 0.0:
                    s = tl.where(cols == i, -s, s)
                    if PREFETCH == 0:
                        f += change * tl.load(w_ptr + i * N_PAD + cols)
                    else:
                        f += change * row
            else:
                s = tl.where(cols == i, s - 2.0 * change, s)
                f += change * row
    tl.store(s_ptr + read * N_PAD + cols, s)


@triton.jit
def _tile_kernel(
    w_ptr, f_ptr, s_ptr, betas_ptr, seed, n, num_sweeps, num_reads,
    N_PAD: tl.constexpr, BLOCK_R: tl.constexpr,
):
    pid = tl.program_id(0)
    reads = pid * BLOCK_R + tl.arange(0, BLOCK_R)
    cols = tl.arange(0, N_PAD)
    tile = (reads < num_reads)[:, None] & (cols < N_PAD)[None, :]
    offsets = reads[:, None] * N_PAD + cols[None, :]
    s = tl.load(s_ptr + offsets, mask=tile, other=1.0)
    f = tl.load(f_ptr + offsets, mask=tile, other=0.0)
    for sweep in range(num_sweeps):
        beta = tl.load(betas_ptr + sweep)
        for i in range(n):
            onehot = cols[None, :] == i
            delta = tl.sum(tl.where(onehot, s * f, 0.0), axis=1)
            s_i = tl.sum(tl.where(onehot, s, 0.0), axis=1)
            u = tl.rand(seed + sweep, i * num_reads + reads)
            change = tl.where(u < tl.exp(-beta * delta), s_i, 0.0)
            s = tl.where(onehot, s - 2.0 * change[:, None], s)
            f += change[:, None] * tl.load(w_ptr + i * N_PAD + cols)[None, :]
    tl.store(s_ptr + offsets, s, mask=tile)


def _default_warps(n_pad: int) -> int:
    """Warps per read: one warp up to 1024 variables (32 per lane), more lanes beyond."""
    return int(min(8, max(1, n_pad // 1024)))


def anneal_triton(
    q: NDArray[np.float64],
    betas: NDArray[np.float64],
    num_reads: int,
    *,
    seed: int,
    device: str,
    layout: str = "read",
    num_warps: int | None = None,
    block_reads: int | None = None,
    prefetch: int = 1,
    branch: bool = False,
    gather: bool = False,
) -> NDArray[np.int8]:
    """Anneal the QUBO ``q`` (n, n), one sweep per β in ``betas`` (S,); returns (num_reads, n) bits.

    ``layout`` picks the kernel (module docstring). ``num_warps``: warps per program (default: one
    per 512 padded variables for ``read``, 4 for ``tile``); ``block_reads`` (``tile`` only; a power
    of two): reads per program, by default ``8192 / N_PAD`` (at most 32); ``prefetch`` (``read``
    only): 0, 1 or 2, when rows of ``W`` are read; ``branch``: apply a flip under a branch instead
    of as an arithmetic no-op; ``gather``: extract variable ``i``'s verdict with ``tl.gather``
    instead of a one-hot sum (module docstring).
    """
    if prefetch not in (0, 1, 2) or (prefetch == 0 and not branch):
        raise ValueError(f"prefetch must be 1 or 2, or 0 with branch=True; got {prefetch}, {branch}")
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
    n = q.shape[0]
    n_pad = max(32, triton.next_power_of_2(n))
    upper = np.triu(q, 1)
    w = np.zeros((n_pad, n_pad), dtype=np.float32)
    w[:n, :n] = upper + upper.T
    lin = np.zeros(n_pad, dtype=np.float32)
    lin[:n] = np.diag(q)
    rng = np.random.Generator(np.random.Philox(seed))
    x0 = np.zeros((num_reads, n_pad), dtype=np.float32)
    x0[:, :n] = rng.integers(0, 2, size=(num_reads, n))
    dev = torch.device(device)
    w_t = torch.as_tensor(w, device=dev)
    x = torch.as_tensor(x0, device=dev)
    # Padded variables: spin +1 (x = 0), zero field and zero rows, never flipped by the kernels.
    f = torch.as_tensor(lin, device=dev)[None, :] + x @ w_t
    s = 1.0 - 2.0 * x
    if layout == "read":
        # xorshift128 must not start from an all-zero state: every word is drawn from [1, 2^32).
        state = rng.integers(1, 2**32, size=(num_reads, 4), dtype=np.uint64).astype(np.uint32)
        _read_kernel[(num_reads,)](
            w_t, f.contiguous(), s, torch.as_tensor(state.view(np.int32), device=dev),
            torch.as_tensor((1.0 / np.asarray(betas)).astype(np.float32), device=dev),
            n, len(betas), N_PAD=n_pad, PREFETCH=prefetch, BRANCH=branch, GATHER=gather,
            num_warps=num_warps or _default_warps(n_pad),
        )
    else:
        if block_reads is None:
            block_reads = max(1, min(32, 8192 // n_pad))
        _tile_kernel[(triton.cdiv(num_reads, block_reads),)](
            w_t, f.contiguous(), s, torch.as_tensor(np.asarray(betas, dtype=np.float32), device=dev),
            seed % (2**31 - 1), n, len(betas), num_reads,
            N_PAD=n_pad, BLOCK_R=block_reads, num_warps=num_warps or 4,
        )
    return ((1.0 - s[:, :n]) / 2).round().to(torch.int8).cpu().numpy()
