"""R² of QSVR beside scikit-learn's SVR on the MLPF learning curves, under two protocols.

- ``ours`` (design brief §4, the stricter one): per split, 20 random training curves; features =
  the first 25% of the curve, target = the final loss; all scaling is fitted on the 20 training
  curves (QSVR's own min-max scaling); R² on the other 276 curves, in the caller's units.
- ``published`` (the seed authors' notebook 20_points_SVR.ipynb): drop the curve with the largest
  final loss; features = every other epoch of the first 25; target = loss_98;
  ``QuantileTransformer(n_quantiles=50)`` on X and y over the whole table;
  ``train_test_split(test_size=0.5, random_state=123 + i)``, first 20 training rows;
  ``r2_score(pred, true)`` in that argument order. Its baseline is the published
  ``SVR(gamma=0.1, epsilon=0.02, C=67.61)``.

Each QSVR fit keeps the ``--top-k`` lowest distinct solutions with ``ensemble="mean"``, so that
every ensemble method and size is scored on the same samples; the ``robust`` rows at the default
``top_k`` are exactly what ``QSVR()`` predicts (checked on the first split). The rows "robust's
median rule (before)" are the ``robust`` ensemble as it was before 2026-12-02 (members with a
training MSE above the median dropped), on the same samples. ``--backend`` takes
the samples from a gateway backend (e.g. ``mock-qpu``) instead of in-process simulated annealing.

    .venv/bin/python benchmarks/gateway_r2.py --protocols published,ours --splits 100
    .venv/bin/python benchmarks/gateway_r2.py --protocols ours --splits 20 --backend mock-qpu
    .venv/bin/python benchmarks/gateway_r2.py --splits 100 --first-split 100  # held-out splits
    .venv/bin/python benchmarks/gateway_r2.py --protocols published --splits 1000 --no-qsvr
    .venv/bin/python benchmarks/gateway_r2.py --params relevance_power=0  # the reference scaling
    .venv/bin/python benchmarks/gateway_r2.py --params linear_share=0  # the pure RBF kernel
    # the kernel of state version 4 (RBF + 2 x linear, clipped at the training box):
    .venv/bin/python benchmarks/gateway_r2.py --gammas 0.05 \
        --params linear_share=2,linear_margin=0,linear_reach=0

The row "sklearn SVR on QSVR's kernel" is QSVR's own kernel, scaling and C solved exactly by the
``classical`` backend (sklearn's SVR on the precomputed kernel): the fast proxy of QSVR for any
``--params`` (with ``--no-qsvr``, the only QSVR-like row).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable, Iterator

import numpy as np
from _data import (
    PUBLISHED_SVR,
    load_mlpf,
    load_mlpf_published,
    published_split,
    r2,
    r2_published,
    split,
    svr_baseline,
)
from scipy.stats import spearmanr

from qpu_gateway.backends.classical import ClassicalSVRSolver
from qpu_gateway.ensemble import ENSEMBLE_METHODS, member_weights
from qpu_gateway.qsvr import (
    DEFAULT_GAMMA,
    DEFAULT_RELEVANCE_POWER,
    DEFAULT_TOP_K,
    QSVR,
    STATE_PARAM_NAMES,
)

SIZES = (1, 4, 8, 16, 32)
Split = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]


def _summary(values: list[float]) -> str:
    v = np.asarray(values)
    return (
        f"{v.mean():.4f} | {np.percentile(v, 5):.4f} | {v.min():.4f} | {v.std():.4f} "
        f"| {int((v < 0.5).sum())}"
    )


def _splits(
    protocol: str, n: int, first: int = 0
) -> tuple[Iterator[Split], Callable[[np.ndarray, np.ndarray], float]]:
    """Splits ``first .. first + n - 1`` of ``protocol`` and its score."""
    if protocol == "published":
        x, y = load_mlpf_published()
        return (published_split(x, y, i) for i in range(first, first + n)), r2_published
    x, y = load_mlpf()

    def ours() -> Iterator[Split]:
        for seed in range(first, first + n):
            tr, te = split(len(y), seed)
            yield x[tr], y[tr], x[te], y[te]

    return ours(), r2


def _params(text: str) -> dict[str, float]:
    """``--params "k=4,k0=-3"`` -> QSVR keyword arguments (numbers only)."""
    out: dict[str, float] = {}
    for item in filter(None, text.split(",")):
        name, _, value = item.partition("=")
        if name not in STATE_PARAM_NAMES or name in ("gamma", "num_reads", "num_sweeps", "top_k", "ensemble"):
            raise SystemExit(f"--params: {name!r} is not a QSVR parameter this option sets")
        out[name] = int(value) if name == "k" else float(value)
    return out


def _median_rule_weights(train_mse: np.ndarray, chain_break: np.ndarray) -> np.ndarray:
    """``robust`` as it was before 2026-12-02: the members with a training MSE at most the
    median, weighted by their intact chains (for comparison on the same samples)."""
    keep = train_mse <= np.median(train_mse) * (1 + 1e-9)
    w = keep * (1.0 - chain_break)
    w = w if w.sum() > 0 else keep.astype(np.float64)
    return w / w.sum()


def _run(protocol: str, args: argparse.Namespace, sampler: object) -> None:
    gammas = [float(g) for g in args.gammas.split(",")]
    sweeps = [int(s) for s in args.sweeps.split(",")]
    sizes = [s for s in SIZES if s <= args.top_k]
    svr_cs = [float(c) for c in args.svr_c.split(",") if c]
    params = _params(args.params)
    power = params.get("relevance_power", DEFAULT_RELEVANCE_POWER)
    rows: dict[str, list[float]] = {}
    fit_seconds: dict[str, list[float]] = {}
    rank_corr: list[float] = []
    cbf_corr: list[float] = []
    splits, score = _splits(protocol, args.splits, args.first_split)
    for seed, (x_tr, y_tr, x_te, y_te) in enumerate(splits, start=args.first_split):
        if protocol == "published":
            from sklearn.svm import SVR

            pred = SVR(**PUBLISHED_SVR).fit(x_tr, y_tr).predict(x_te)
            rows.setdefault("sklearn SVR, published (γ=0.1, ε=0.02, C=67.61)", []).append(
                score(y_te, pred)
            )
        for gamma in gammas:
            pred = svr_baseline(x_tr, y_tr, x_te, gamma)
            rows.setdefault(f"sklearn SVR, min-max scaling and C=Σp_k, γ={gamma}", []).append(
                score(y_te, pred)
            )
            if power > 0:
                pred = svr_baseline(x_tr, y_tr, x_te, gamma, relevance_power=power)
                rows.setdefault(
                    f"sklearn SVR, QSVR's scaling (relevance_power={power:g}) and C=Σp_k, γ={gamma}",
                    [],
                ).append(score(y_te, pred))
            for c in svr_cs:
                rows.setdefault(
                    f"sklearn SVR, QSVR's scaling (relevance_power={power:g}), γ={gamma}, C={c}", []
                ).append(score(y_te, svr_baseline(x_tr, y_tr, x_te, gamma, c, power)))
            pred = QSVR(gamma=gamma, sampler=ClassicalSVRSolver(), **params).fit(x_tr, y_tr).predict(x_te)
            rows.setdefault(f"sklearn SVR on QSVR's kernel (classical backend), γ={gamma}", []).append(
                score(y_te, pred)
            )
            for sw in [] if args.no_qsvr else sweeps:
                t0 = time.perf_counter()
                model = QSVR(gamma=gamma, num_reads=args.reads, num_sweeps=sw, top_k=args.top_k,
                             ensemble="mean", sampler=sampler, random_state=seed,
                             **params).fit(x_tr, y_tr)
                fit_seconds.setdefault(f"γ={gamma}, sweeps={sw}", []).append(
                    time.perf_counter() - t0
                )
                members = model.predict_members(x_te)
                member_r2 = [score(y_te, p) for p in members]
                if len(members) > 2:
                    rank_corr.append(float(spearmanr(model.member_train_mse_, member_r2)[0]))
                    if np.ptp(model.member_chain_break_) > 0:
                        cbf_corr.append(float(spearmanr(model.member_chain_break_, member_r2)[0]))
                for size in sizes:
                    m = min(size, members.shape[0])
                    for method in ENSEMBLE_METHODS:
                        if size == 1 and method not in ("mean", "robust"):
                            continue
                        w = member_weights(method, model.member_energies_[:m],
                                           model.member_train_mse_[:m],
                                           model.member_chain_break_[:m])
                        key = f"QSVR γ={gamma}, sweeps={sw}, top_k={size}, {method}"
                        rows.setdefault(key, []).append(score(y_te, w @ members[:m]))
                    if size > 1:
                        w = _median_rule_weights(model.member_train_mse_[:m],
                                                 model.member_chain_break_[:m])
                        key = f"QSVR γ={gamma}, sweeps={sw}, top_k={size}, robust's median rule (before)"
                        rows.setdefault(key, []).append(score(y_te, w @ members[:m]))
                if seed == args.first_split and args.top_k == DEFAULT_TOP_K:
                    default = QSVR(gamma=gamma, num_reads=args.reads, num_sweeps=sw,
                                   sampler=sampler, random_state=seed, **params).fit(x_tr, y_tr)
                    w = member_weights("robust", model.member_energies_, model.member_train_mse_,
                                       model.member_chain_break_)
                    np.testing.assert_allclose(default.predict(x_te), w @ members, rtol=1e-9)

    print(f"\n## protocol: {protocol}; {args.splits} splits from split {args.first_split}, 20 training "
          f"curves, {args.reads} reads, backend {args.backend}, QSVR params {params or 'defaults'}\n")
    print("| model | mean | 5th pct | min | std | splits < 0.5 |\n|---|---|---|---|---|---|")
    for key, values in rows.items():
        print(f"| {key} | {_summary(values)} |")
    print("\n| QSVR fit | mean seconds |\n|---|---|")
    for key, values in fit_seconds.items():
        print(f"| {key} | {np.mean(values):.3f} |")
    if rank_corr:
        print(f"\nSpearman rank correlation of a member's training MSE with its test R², mean over "
              f"fits: {np.nanmean(rank_corr):.3f}")
    if cbf_corr:
        print(f"Spearman rank correlation of a member's chain-break fraction with its test R², mean "
              f"over fits: {np.nanmean(cbf_corr):.3f}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--protocols", default="published,ours")
    p.add_argument("--splits", type=int, default=100)
    p.add_argument("--first-split", type=int, default=0,
                   help="index of the first split (split i is seeded with i; e.g. 100 for held-out splits)")
    p.add_argument("--sweeps", default="100")
    p.add_argument("--gammas", default=str(DEFAULT_GAMMA))
    p.add_argument("--reads", type=int, default=1000)
    p.add_argument("--top-k", type=int, default=DEFAULT_TOP_K)
    p.add_argument("--svr-c", default="", help="extra SVR baselines at these C (QSVR's scaling)")
    p.add_argument("--no-qsvr", action="store_true", help="score the SVR baselines only")
    p.add_argument("--params", default="",
                   help="other QSVR parameters, e.g. k=4,k0=-3 or relevance_power=0 (min-max scaling)")
    p.add_argument("--backend", default="neal",
                   help="neal: in-process simulated annealing (QSVR's default); else a gateway backend")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as cache:
        sampler = None
        if args.backend != "neal":
            from qpu_gateway.backends import BackendRegistry

            sampler = BackendRegistry({args.backend: {"embedding_cache_dir": cache}}
                                      if args.backend in ("mock-qpu", "qpu") else {}
                                      ).sampler(args.backend)
        for protocol in args.protocols.split(","):
            if protocol not in ("published", "ours"):
                raise SystemExit(f"--protocols: unknown protocol {protocol!r} (published, ours)")
            _run(protocol, args, sampler)


if __name__ == "__main__":
    main()
