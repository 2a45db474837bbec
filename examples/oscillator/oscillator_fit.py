"""A user's own trainable, physics-flavoured: fit a damped oscillator to a noisy trajectory.

The data are generated here: ``x(t) = A exp(-gamma t) cos(omega t + phi)`` plus Gaussian noise,
sampled on ``t`` in [0, 10] (even samples train, odd ones validate). The model has the same form;
its four parameters are fitted by Adam (written in numpy) from a starting frequency ``omega0``.
The loss surface in ``omega`` has many local minima, so ``omega0`` and the optimiser's ``lr`` and
``beta1`` decide whether a fit finds the true frequency: a small HPO problem with a physical
answer (``omega = 2``).

``fit(config)`` is an ordinary Ray Tune function trainable: one epoch is ``steps_per_epoch``
Adam steps; it reports ``epoch`` and ``val_loss`` (validation mean squared error) with a
checkpoint each epoch (a versioned JSON dict) and resumes from the checkpoint Tune hands it.
"""

from __future__ import annotations

import json
import math
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from ray import tune

CHECKPOINT_VERSION = 1
TRUE = {"amplitude": 1.0, "gamma": 0.3, "omega": 2.0, "phi": 0.5}


def trajectory(n: int = 400, noise: float = 0.05, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``(t, x)``: ``n`` samples of the true oscillator with noise, ``t`` in [0, 10]."""
    rng = np.random.default_rng(seed)
    t = np.linspace(0.0, 10.0, n)
    x = (TRUE["amplitude"] * np.exp(-TRUE["gamma"] * t)
         * np.cos(TRUE["omega"] * t + TRUE["phi"]))
    return t, x + noise * rng.standard_normal(n)


def model(theta: np.ndarray, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Prediction ``(n,)`` and its gradient ``(4, n)`` in ``theta = (A, gamma, omega, phi)``."""
    a, g, w, p = theta
    env = np.exp(-g * t)
    c, s = np.cos(w * t + p), np.sin(w * t + p)
    f = a * env * c
    grad = np.stack([env * c, -t * f, -t * a * env * s, -a * env * s])
    return f, grad


def fit(config: dict[str, Any]) -> None:
    t, x = trajectory(seed=int(config.get("data_seed", 0)))
    t_tr, x_tr, t_va, x_va = t[::2], x[::2], t[1::2], x[1::2]
    lr, b1, b2 = float(config["lr"]), float(config["beta1"]), 0.999
    state = {"epoch": 0, "step": 0, "theta": [1.0, 0.1, float(config["omega0"]), 0.0],
             "m": [0.0] * 4, "v": [0.0] * 4}
    ckpt = tune.get_checkpoint()
    if ckpt is not None:
        with ckpt.as_directory() as d:
            saved = json.loads((Path(d) / "state.json").read_text())
        if saved.get("version") != CHECKPOINT_VERSION:
            raise ValueError(f"checkpoint version must be {CHECKPOINT_VERSION}, got {saved.get('version')}")
        state = saved["state"]
    theta, m, v = (np.array(state[k], dtype=np.float64) for k in ("theta", "m", "v"))
    step = int(state["step"])
    for epoch in range(int(state["epoch"]) + 1, int(config["max_epochs"]) + 1):
        for _ in range(int(config["steps_per_epoch"])):
            f, grad = model(theta, t_tr)
            g = 2.0 * (grad @ (f - x_tr)) / t_tr.size
            step += 1
            m = b1 * m + (1 - b1) * g
            v = b2 * v + (1 - b2) * g * g
            theta -= lr * (m / (1 - b1**step)) / (np.sqrt(v / (1 - b2**step)) + 1e-8)
        val = float(np.mean((model(theta, t_va)[0] - x_va) ** 2))
        state = {"epoch": epoch, "step": step, "theta": theta.tolist(), "m": m.tolist(),
                 "v": v.tolist()}
        with tempfile.TemporaryDirectory() as d:
            (Path(d) / "state.json").write_text(json.dumps({"version": CHECKPOINT_VERSION,
                                                            "state": state}))
            tune.report({"epoch": epoch, "val_loss": val if math.isfinite(val) else math.inf,
                         "omega": float(theta[2])},
                        checkpoint=tune.Checkpoint.from_directory(d))
