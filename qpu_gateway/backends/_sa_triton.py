"""The fused GPU kernel of ``gpu-sa``: every read's whole anneal in one Triton program.

Each program owns ``BLOCK_R`` reads. It keeps their states ``x`` and local fields ``f``
(``BLOCK_R x N_PAD``) in registers for the whole anneal: all sweeps and all single-spin Metropolis
steps run inside the kernel, with no launch per step. A step reads variable ``i``'s field and
state with a one-hot reduction, draws one Philox uniform per read (``tl.rand(seed + sweep,
i * R + read)``, so a seed reproduces a run on the same device), accepts with ``u < exp(-β ΔE)``,
and on acceptance adds row ``i`` of ``W`` to the fields. It is the same algorithm as the torch
path in :mod:`qpu_gateway.backends.gpu_sa`, in float32.

Correctness is checked in Triton's interpreter on the CPU (``TRITON_INTERPRET=1``,
``tests/test_gpu_sa.py``). Speed needs a GPU: ``benchmarks/gpu_sa.py``.
"""

from __future__ import annotations

import numpy as np
import torch
import triton
import triton.language as tl
from numpy.typing import NDArray

__all__ = ["anneal_triton"]


@triton.jit
def _anneal_kernel(
    w_ptr, lin_ptr, x_ptr, betas_ptr, seed, n, num_sweeps, num_reads,
    N_PAD: tl.constexpr, BLOCK_R: tl.constexpr,
):
    pid = tl.program_id(0)
    reads = pid * BLOCK_R + tl.arange(0, BLOCK_R)
    cols = tl.arange(0, N_PAD)
    rmask = reads < num_reads
    cmask = cols < n
    tile = rmask[:, None] & cmask[None, :]
    x = tl.load(x_ptr + reads[:, None] * N_PAD + cols[None, :], mask=tile, other=0.0)
    f = tl.zeros((BLOCK_R, N_PAD), dtype=tl.float32)
    f += tl.load(lin_ptr + cols, mask=cmask, other=0.0)[None, :]
    for j in range(n):
        xj = tl.sum(tl.where(cols[None, :] == j, x, 0.0), axis=1)
        f += xj[:, None] * tl.load(w_ptr + j * N_PAD + cols, mask=cmask, other=0.0)[None, :]
    for s in range(num_sweeps):
        beta = tl.load(betas_ptr + s)
        for i in range(n):
            onehot = cols[None, :] == i
            f_i = tl.sum(tl.where(onehot, f, 0.0), axis=1)
            x_i = tl.sum(tl.where(onehot, x, 0.0), axis=1)
            step = 1.0 - 2.0 * x_i
            u = tl.rand(seed + s, i * num_reads + reads)
            accept = u < tl.exp(-beta * step * f_i)
            change = tl.where(accept, step, 0.0)
            x += tl.where(onehot, change[:, None], 0.0)
            f += change[:, None] * tl.load(w_ptr + i * N_PAD + cols, mask=cmask, other=0.0)[None, :]
    tl.store(x_ptr + reads[:, None] * N_PAD + cols[None, :], x, mask=tile)


def anneal_triton(
    q: NDArray[np.float64],
    betas: NDArray[np.float64],
    num_reads: int,
    *,
    seed: int,
    device: str,
    block_reads: int | None = None,
) -> NDArray[np.int8]:
    """Anneal the QUBO ``q`` (n, n), one sweep per β; returns (num_reads, n) bits.

    ``block_reads`` (a power of two) reads per program; by default ``8192 / N_PAD`` (at most 32)
    keeps the two register tiles of a program near 16k floats whatever the problem size.
    """
    n = q.shape[0]
    n_pad = max(16, triton.next_power_of_2(n))
    if block_reads is None:
        block_reads = max(1, min(32, 8192 // n_pad))
    upper = np.triu(q, 1)
    w = np.zeros((n_pad, n_pad), dtype=np.float32)
    w[:n, :n] = upper + upper.T
    lin = np.zeros(n_pad, dtype=np.float32)
    lin[:n] = np.diag(q)
    gen = torch.Generator(device="cpu")
    gen.manual_seed(seed)
    x0 = torch.zeros((num_reads, n_pad), dtype=torch.float32)
    x0[:, :n] = torch.randint(0, 2, (num_reads, n), generator=gen).to(torch.float32)
    dev = torch.device(device)
    x = x0.to(dev)
    grid = (triton.cdiv(num_reads, block_reads),)
    _anneal_kernel[grid](
        torch.as_tensor(w, device=dev), torch.as_tensor(lin, device=dev), x,
        torch.as_tensor(np.asarray(betas, dtype=np.float32), device=dev),
        seed % (2**31 - 1), n, len(betas), num_reads,
        N_PAD=n_pad, BLOCK_R=block_reads,
    )
    return x[:, :n].to(torch.int8).cpu().numpy()
