"""gpu-sa vs dwave-samplers' simulated annealing on QSVR QUBOs, measured in one run.

For each size (n = 2KN binary variables of a QSVR QUBO with K = 3): the time of gpu-sa on its
device (``TorchAnnealer.sample`` end to end, median of 3 after a warm-up), of dwave-samplers on one
CPU core, and of dwave-samplers on every core (reads split over
processes); mean energies of both, and their ratio.

    .venv/bin/python benchmarks/gpu_sa.py --sizes 20,80 --reads 1000 --sweeps 1000   # on a GPU
    .venv/bin/python benchmarks/gpu_sa.py --sizes 20,80 --kernel torch               # the other kernel
    .venv/bin/python benchmarks/gpu_sa.py --sizes 20 --reads 100 --sweeps 100 --device cpu
    .venv/bin/python benchmarks/gpu_sa.py --sizes 20,80 --sweeps 100 --tune    # Triton layouts
"""

from __future__ import annotations

import argparse
import os
import time
from concurrent.futures import ProcessPoolExecutor

import dimod
import numpy as np

from qpu_gateway.backends.gpu_sa import TorchAnnealer, default_beta_range, dense_qubo
from qpu_gateway.qubo import build_svr_qubo, rbf_kernel


def qsvr_bqm(n_points: int, seed: int = 0) -> dimod.BinaryQuadraticModel:
    rng = np.random.default_rng(seed)
    x, y = rng.random((n_points, 25)), rng.random(n_points)
    return dimod.BinaryQuadraticModel(build_svr_qubo(rbf_kernel(x, x, 0.1), y), "BINARY")


def _dwave(args: tuple[dimod.BinaryQuadraticModel, int, int, int]) -> np.ndarray:
    from dwave.samplers import SimulatedAnnealingSampler

    bqm, reads, sweeps, seed = args
    return SimulatedAnnealingSampler().sample(bqm, num_reads=reads, num_sweeps=sweeps,
                                              seed=seed).record.energy


def tune(sizes: list[int], reads: int, sweeps: int, device: str) -> None:
    """Time the fused kernel's variants (row prefetch, verdict extraction) on the same problems."""
    import torch

    from qpu_gateway.backends._sa_triton import anneal_triton
    from qpu_gateway.qubo import qubo_energy

    print(f"{reads} reads x {sweeps} sweeps on {device}, kernel only\n")
    print("| n | prefetch | gather | s | mean E |\n|---|---|---|---|---|")
    for n_points in sizes:
        q = dense_qubo(qsvr_bqm(n_points))[0]
        betas = np.geomspace(*default_beta_range(q), sweeps)
        for prefetch in (1, 2):
            for gather in (False, True):
                run = {"seed": 1, "device": device, "prefetch": prefetch, "gather": gather}
                anneal_triton(q, betas[:2], reads, **run)
                torch.cuda.synchronize()
                t0 = time.perf_counter()
                bits = anneal_triton(q, betas, reads, **run)
                seconds = time.perf_counter() - t0
                energy = qubo_energy(q, bits.astype(np.float64)).mean()
                print(f"| {q.shape[0]} | {prefetch} | {gather} | {seconds:.4f} | {energy:.4f} |",
                      flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", default="20,80", help="training points N (n = 6N variables)")
    p.add_argument("--reads", type=int, default=1000)
    p.add_argument("--sweeps", type=int, default=1000)
    p.add_argument("--device", default="auto")
    p.add_argument("--kernel", default="auto", choices=("auto", "torch", "triton"))
    p.add_argument("--tune", action="store_true", help="time the Triton kernel's layouts instead")
    args = p.parse_args()
    if args.tune:
        tune([int(v) for v in args.sizes.split(",")], args.reads, args.sweeps,
             "cuda" if args.device == "auto" else args.device)
        return
    sampler = TorchAnnealer(device=args.device, kernel=args.kernel)
    cores = os.cpu_count() or 1
    print(f"device: {sampler.properties['device']}, kernel {sampler.properties['kernel']}; "
          f"CPU cores: {cores}; {args.reads} reads x "
          f"{args.sweeps} sweeps\n")
    print("| n | gpu-sa s | dwave 1 core s | dwave all cores s | ratio vs 1 core | ratio vs all cores "
          "| mean E gpu-sa | mean E dwave |")
    print("|---|---|---|---|---|---|---|---|")
    for n_points in (int(s) for s in args.sizes.split(",")):
        bqm = qsvr_bqm(n_points)
        # Warm-up on the same shapes (kernel compilation, lazily loaded CUDA modules), then the
        # median of three timed runs: the steady state a serving gateway sees.
        sampler.sample(bqm, num_reads=args.reads, num_sweeps=2, seed=0)
        times = []
        for _ in range(3):
            t0 = time.perf_counter()
            ours = sampler.sample(bqm, num_reads=args.reads, num_sweeps=args.sweeps, seed=1).record.energy
            times.append(time.perf_counter() - t0)
        t_ours = float(np.median(times))
        t0 = time.perf_counter()
        theirs = _dwave((bqm, args.reads, args.sweeps, 1))
        t_one = time.perf_counter() - t0
        chunks = [(bqm, len(c), args.sweeps, i) for i, c in
                  enumerate(np.array_split(np.arange(args.reads), cores)) if len(c)]
        with ProcessPoolExecutor(cores) as pool:
            list(pool.map(_dwave, chunks[:1]))
            t0 = time.perf_counter()
            list(pool.map(_dwave, chunks))
            t_all = time.perf_counter() - t0
        print(f"| {bqm.num_variables} | {t_ours:.4f} | {t_one:.3f} | {t_all:.3f} | {t_one / t_ours:.1f}x "
              f"| {t_all / t_ours:.1f}x | {ours.mean():.4f} | {theirs.mean():.4f} |", flush=True)


if __name__ == "__main__":
    main()
