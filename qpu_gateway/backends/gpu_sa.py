"""``gpu-sa``: batched simulated annealing of dense QUBOs with torch, every read in parallel.

The algorithm is the one dwave-samplers runs per read:
- single-spin Metropolis updates in a fixed variable order per sweep;
- a geometric β schedule whose default range follows dwave-samplers' rule for the same problem
  (:func:`default_beta_range`);
- a seeded generator.

Here the reads are the batch dimension: each variable update is one vectorised step over all
reads. Local fields ``f = diag(Q) + W x`` (``W = Q + Qᵀ`` off the diagonal) are kept and updated
only where a flip was accepted, never recomputed. Two implementations of the same algorithm:

- ``torch``: one vectorised step per variable; runs on the CPU (what CI tests) and on CUDA.
- ``triton``: every read's whole anneal fused into one GPU kernel launch per chunk of sweeps
  (:mod:`qpu_gateway.backends._sa_triton`; tested on an H200 and in Triton's CPU interpreter).

``interrupt_function`` (the Fit's deadline) is polled before every sweep by the torch path and
before every launch (about 10^6 variable updates per read) by the triton path.
``kernel="auto"`` picks ``triton`` on CUDA when triton is installed (it ships with CUDA builds of
torch), else ``torch``. Returned energies are recomputed from the returned samples in float64
(``x Q xᵀ`` + offset, one batched product on the device: dimod's per-sample loop over a dense
QUBO took longer than the anneal itself).

Settings: ``device`` (``auto`` | ``cpu`` | ``cuda`` | ``cuda:N``), ``kernel`` (``auto`` | ``torch``
| ``triton``), ``dtype`` of the torch kernel (``float32`` | ``float64``; default float64 on the
CPU, float32 on CUDA; the triton kernel is float32), ``max_variables`` (default 4096).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import dimod
import numpy as np
from numpy.typing import NDArray

from qpu_gateway.errors import ProblemTooLargeError

__all__ = ["TorchAnnealer", "anneal", "create", "default_beta_range", "dense_qubo", "sample_energies"]


def dense_qubo(bqm: dimod.BinaryQuadraticModel) -> tuple[NDArray[np.float64], list[Any]]:
    """Upper-triangular (n, n) QUBO of ``bqm`` (binary vartype) and its variable order."""
    binary = bqm if bqm.vartype is dimod.BINARY else bqm.change_vartype(dimod.BINARY, inplace=False)
    variables = list(binary.variables)
    n = len(variables)
    q = np.zeros((n, n))
    ldata, (irow, icol, qdata), _ = binary.to_numpy_vectors(variable_order=variables)
    q[np.arange(n), np.arange(n)] = ldata
    lo, hi = np.minimum(irow, icol), np.maximum(irow, icol)
    np.add.at(q, (lo, hi), qdata)
    return q, variables


def sample_energies(
    q: NDArray[np.float64], bits: NDArray[np.int8], offset: float = 0.0, device: str = "cpu"
) -> NDArray[np.float64]:
    """Energies ``x Q xᵀ + offset`` (R,) of the bit rows ``bits`` (R, n) under ``q`` (n, n), float64."""
    import torch

    dev = torch.device(device)
    x = torch.as_tensor(bits, device=dev).to(torch.float64)
    qt = torch.as_tensor(q, dtype=torch.float64, device=dev)
    return (((x @ qt) * x).sum(dim=1) + offset).cpu().numpy()


def default_beta_range(q: NDArray[np.float64], excitation_rate: float = 0.01) -> tuple[float, float]:
    """dwave-samplers' default (hot, cold) β for the QUBO ``q`` (n, n), vectorised.

    On the Ising form (h, J) of the problem: hot β = ln 2 / (2 max_i (|h_i| + Σ_j |J_ij|)), so
    every spin flips with probability ≥ 1/2 at the start; cold β = ln(m / rate) / (2 g), with g
    the smallest non-zero |bias| touching any spin and m the number of spins whose smallest
    bias equals g, so the final sweep excites a spin with probability ≈ ``rate``.
    """
    w = np.triu(q, 1)
    w = w + w.T
    h = np.diag(q) / 2 + w.sum(axis=1) / 4
    j = np.abs(w / 4)
    max_field = float((np.abs(h) + j.sum(axis=1)).max(initial=0.0))
    hot = 1.0 if max_field == 0 else float(np.log(2) / (2 * max_field))
    candidates = np.where(j > 0, j, np.inf)
    per_spin = np.minimum(candidates.min(axis=1, initial=np.inf), np.where(h != 0, np.abs(h), np.inf))
    finite = per_spin[np.isfinite(per_spin)]
    if finite.size == 0:
        return (0.1, 1.0) if max_field == 0 else (hot, hot)
    gap = float(finite.min())
    count = int((finite == gap).sum())
    return hot, float(np.log(count / excitation_rate) / (2 * gap))


def anneal(
    q: NDArray[np.float64],
    betas: NDArray[np.float64],
    num_reads: int,
    *,
    seed: int | None = None,
    device: str = "cpu",
    dtype: str = "float64",
    interrupt: Callable[[], bool] | None = None,
) -> NDArray[np.int8]:
    """Anneal the QUBO ``q`` (n, n) with one sweep per β in ``betas`` (S,); returns (R, n) bits.

    The reads run in parallel on ``device``; ``interrupt`` is polled between sweeps and stops
    the anneal early when it returns True (the current states are returned).
    """
    import torch

    tdtype = {"float32": torch.float32, "float64": torch.float64}[dtype]
    dev = torch.device(device)
    gen = torch.Generator(device=dev)
    gen.manual_seed(int(np.random.SeedSequence(seed).generate_state(1)[0]) if seed is None else seed)
    n = q.shape[0]
    upper = np.triu(q, 1)
    w = torch.as_tensor(upper + upper.T, dtype=tdtype, device=dev)
    lin = torch.as_tensor(np.diag(q).copy(), dtype=tdtype, device=dev)
    # Variables x reads, so that each update touches contiguous rows.
    x = torch.randint(0, 2, (n, num_reads), generator=gen, device=dev).to(tdtype)
    field = lin[:, None] + w @ x
    threads = torch.get_num_threads()
    if dev.type == "cpu":
        torch.set_num_threads(1)  # per-step ops are small: threading costs more than it gives
    try:
        for beta in betas:
            if interrupt is not None:
                if dev.type == "cuda":
                    torch.cuda.synchronize(dev)  # poll after the previous sweep ran, not when queued
                if interrupt():
                    break
            log_u = torch.rand((n, num_reads), generator=gen, device=dev, dtype=tdtype).log_()
            for i in range(n):
                xi = x[i]
                step = 1.0 - 2.0 * xi
                accept = -float(beta) * (step * field[i]) > log_u[i]
                change = torch.where(accept, step, torch.zeros_like(step))
                xi += change
                field.addr_(w[i], change)
    finally:
        torch.set_num_threads(threads)
    return x.T.to(torch.int8).cpu().numpy()


class TorchAnnealer(dimod.Sampler):
    """The ``gpu-sa`` sampler: :func:`anneal` on the best available device."""

    def __init__(
        self,
        device: str = "auto",
        dtype: str | None = None,
        max_variables: int = 4096,
        kernel: str = "auto",
    ) -> None:
        if dtype not in (None, "float32", "float64"):
            raise ValueError(f"dtype must be float32 or float64, got {dtype!r}")
        if kernel not in ("auto", "torch", "triton"):
            raise ValueError(f"kernel must be auto, torch or triton, got {kernel!r}")
        if max_variables < 1:
            raise ValueError(f"max_variables must be >= 1, got {max_variables}")
        self.device = device
        self.dtype = dtype
        self.max_variables = max_variables
        self.kernel = kernel

    @property
    def parameters(self) -> dict[str, list[Any]]:
        return {"num_reads": [], "num_sweeps": [], "seed": [], "beta_range": [],
                "interrupt_function": []}

    @property
    def properties(self) -> dict[str, Any]:
        return {"device": self._device(), "kernel": self._kernel(self._device())}

    def _kernel(self, device: str) -> str:
        if self.kernel != "auto":
            return self.kernel
        if not device.startswith("cuda"):
            return "torch"
        try:
            import triton  # noqa: F401
        except ImportError:
            return "torch"
        return "triton"

    def _device(self) -> str:
        if self.device != "auto":
            return self.device
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"

    def sample(
        self,
        bqm: dimod.BinaryQuadraticModel,
        *,
        num_reads: int = 10,
        num_sweeps: int = 1000,
        seed: int | None = None,
        beta_range: tuple[float, float] | None = None,
        interrupt_function: Callable[[], bool] | None = None,
        **kwargs: Any,
    ) -> dimod.SampleSet:
        """Anneal ``bqm``; returns a SampleSet whose energies dimod computed from the samples."""
        if num_reads < 1 or num_sweeps < 1:
            raise ValueError(f"num_reads and num_sweeps must be >= 1, got {num_reads}, {num_sweeps}")
        if bqm.num_variables > self.max_variables:
            raise ProblemTooLargeError(
                f"gpu-sa accepts at most {self.max_variables} variables; this problem has "
                f"{bqm.num_variables}"
            )
        binary = bqm if bqm.vartype is dimod.BINARY else bqm.change_vartype(dimod.BINARY, inplace=False)
        q, variables = dense_qubo(binary)
        lo, hi = default_beta_range(q) if beta_range is None else beta_range
        if not 0 < lo <= hi:
            raise ValueError(f"beta_range must be two positive numbers, low <= high; got {(lo, hi)}")
        device = self._device()
        kernel = self._kernel(device)
        betas = np.geomspace(lo, hi, num_sweeps)
        if kernel == "triton":
            from qpu_gateway.backends._sa_triton import anneal_triton

            run_seed = int(np.random.SeedSequence(seed).generate_state(1)[0])
            bits = anneal_triton(q, betas, int(num_reads), seed=run_seed, device=device,
                                 interrupt=interrupt_function)
        else:
            dtype = self.dtype or ("float64" if device == "cpu" else "float32")
            bits = anneal(q, betas, int(num_reads), seed=seed, device=device, dtype=dtype,
                          interrupt=interrupt_function)
        energies = sample_energies(q, bits, float(binary.offset), device)
        samples = 2 * bits.astype(np.int8) - 1 if bqm.vartype is dimod.SPIN else bits
        return dimod.SampleSet.from_samples(
            (samples, variables), bqm.vartype, energy=energies,
            info={"beta_range": [lo, hi], "device": device, "kernel": kernel},
        )


def create(settings: Mapping[str, Any]) -> TorchAnnealer:
    unknown = set(settings) - {"device", "dtype", "max_variables", "kernel"}
    if unknown:
        raise ValueError(
            f"unknown gpu-sa settings {sorted(unknown)}; known: device, dtype, kernel, max_variables"
        )
    return TorchAnnealer(
        device=str(settings.get("device", "auto")),
        dtype=settings.get("dtype"),
        max_variables=int(settings.get("max_variables", 4096)),
        kernel=str(settings.get("kernel", "auto")),
    )
