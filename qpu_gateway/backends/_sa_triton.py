"""The fused GPU kernel of ``gpu-sa``: every read's whole anneal inside one Triton launch.

The same algorithm as the torch path in :mod:`qpu_gateway.backends.gpu_sa`, in float32: single-spin
Metropolis updates in a fixed variable order per sweep, one β per sweep, local fields kept and
updated on accepted flips. All sweeps and steps run inside the kernel, with no launch per step.

One program (one warp up to 1024 variables) per read. The read's spins ``s = 1 − 2x`` and fields
``f`` (``N_PAD``,) are spread over the lanes. A step compares ``s·f < −ln(u)/β`` lane-wise (ΔE of
flipping each variable against the threshold: ``exp(−βΔE) > u`` without an ``exp``), extracts
variable ``i``'s verdict (``tl.gather``, or a one-hot sum) and applies it as ``f += change · W[i]``,
``change`` being 0 when the flip is rejected. ``u`` comes from the read's xorshift128 generator
(Marsaglia 2003; the family dwave-samplers uses), drawn one step ahead because it does not depend on
the state; row ``i`` of ``W`` is loaded before it is needed (``prefetch``). A seed reproduces a run
on a given device. Long anneals run as several launches of whole sweeps, each resuming the spins,
fields and generators the previous one stored, so that an interrupt (the Fit's deadline) is
polled between launches; chunked and single launches return the same samples.

Correctness is checked in Triton's interpreter on the CPU (``TRITON_INTERPRET=1``) and on CUDA
where a GPU is present (``tests/test_gpu_sa.py``); speed is measured by ``benchmarks/gpu_sa.py``.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
import triton
import triton.language as tl
from numpy.typing import NDArray

__all__ = ["anneal_triton"]


@triton.jit
def _xorshift128(a, b, c, d):
    """One step of Marsaglia's xorshift128 on uint32 words; returns the new state."""
    t = a ^ (a << 11)
    return b, c, d, d ^ (d >> 19) ^ (t ^ (t >> 8))


@triton.jit
def _read_kernel(
    w_ptr, f_ptr, s_ptr, rng_ptr, inv_betas_ptr, n, num_sweeps,
    N_PAD: tl.constexpr, PREFETCH: tl.constexpr, GATHER: tl.constexpr,
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
    a_prev = a
    a, b, c, d = _xorshift128(a, b, c, d)
    neg_log_u = -tl.log((d >> 8).to(tl.float32) * 5.9604644775390625e-08)
    ahead = tl.load(w_ptr + cols)
    for sweep in range(num_sweeps):
        inv_beta = tl.load(inv_betas_ptr + sweep)
        for i in range(n):
            if PREFETCH == 1:
                row = tl.load(w_ptr + i * N_PAD + cols)
            else:
                row = ahead
                ahead = tl.load(w_ptr + ((i + 1) % n) * N_PAD + cols)
            threshold = neg_log_u * inv_beta
            a_prev = a
            a, b, c, d = _xorshift128(a, b, c, d)
            neg_log_u = -tl.log((d >> 8).to(tl.float32) * 5.9604644775390625e-08)
            candidate = tl.where(s * f < threshold, s, 0.0)
            if GATHER:
                change = tl.sum(tl.gather(candidate, tl.full((1,), i, tl.int32), 0), axis=0)
            else:
                change = tl.sum(tl.where(cols == i, candidate, 0.0), axis=0)
            s = tl.where(cols == i, s - 2.0 * change, s)
            f += change * row
    tl.store(s_ptr + read * N_PAD + cols, s)
    tl.store(f_ptr + read * N_PAD + cols, f)
    # Store the generator as it was before the look-ahead draw, so that the next launch (the next
    # chunk of sweeps) draws that number again: chunked and single launches give the same run.
    tl.store(rng_ptr + read * 4, a_prev.to(tl.int32, bitcast=True))
    tl.store(rng_ptr + read * 4 + 1, a.to(tl.int32, bitcast=True))
    tl.store(rng_ptr + read * 4 + 2, b.to(tl.int32, bitcast=True))
    tl.store(rng_ptr + read * 4 + 3, c.to(tl.int32, bitcast=True))


# Steps (variables x sweeps) per launch: about 0.15-0.3 s on an H200, the granularity at which an
# interrupt (the Fit's deadline) is honoured; the benchmarked 1000-sweep anneals are one launch.
CHUNK_STEPS = 1 << 20


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
    num_warps: int | None = None,
    prefetch: int = 2,
    gather: bool = True,
    interrupt: Callable[[], bool] | None = None,
    chunk_steps: int = CHUNK_STEPS,
) -> NDArray[np.int8]:
    """Anneal the QUBO ``q`` (n, n), one sweep per β in ``betas`` (S,); returns (num_reads, n) bits.

    ``num_warps``: warps per read (default: one per 1024 padded variables); ``prefetch``: read row
    ``i`` of ``W`` at the start of step ``i`` (1) or one step ahead (2); ``gather``: extract
    variable ``i``'s verdict with ``tl.gather`` (True) or a one-hot sum (False). The defaults are
    the fastest of these on an H200 (``benchmarks/gpu_sa.py --tune``; benchmarks/README.md).
    The sweeps run in launches of about ``chunk_steps`` variable updates per read; ``interrupt``
    is polled before each launch and stops the anneal early when it returns True.
    """
    if prefetch not in (1, 2):
        raise ValueError(f"prefetch must be 1 or 2, got {prefetch!r}")
    if isinstance(chunk_steps, bool) or not isinstance(chunk_steps, int) or chunk_steps < 1:
        raise ValueError(f"chunk_steps must be an integer >= 1, got {chunk_steps!r}")
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
    # xorshift128 must not start from an all-zero state: every word is drawn from [1, 2^32).
    state = rng.integers(1, 2**32, size=(num_reads, 4), dtype=np.uint64).astype(np.uint32)
    state_t = torch.as_tensor(state.view(np.int32), device=dev)
    f = f.contiguous()
    inv_betas = torch.as_tensor((1.0 / np.asarray(betas)).astype(np.float32), device=dev)
    chunk = max(1, chunk_steps // max(n, 1))
    for start in range(0, len(betas), chunk):
        if interrupt is not None and interrupt():
            break
        sweeps = inv_betas[start:start + chunk]
        _read_kernel[(num_reads,)](
            w_t, f, s, state_t, sweeps, n, len(sweeps), N_PAD=n_pad, PREFETCH=prefetch,
            GATHER=gather, num_warps=num_warps or _default_warps(n_pad),
        )
        if interrupt is not None and dev.type == "cuda":
            # Launches are asynchronous: wait for this one, so that the next poll of the
            # interrupt comes after it has run, not microseconds after it was queued.
            torch.cuda.synchronize(dev)
    return ((1.0 - s[:, :n]) / 2).round().to(torch.int8).cpu().numpy()
