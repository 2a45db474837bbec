"""Torch trainables on scikit-learn's ``load_digits``: an MLP and a small CNN, epoch by epoch.

The data ship with scikit-learn (no download): 1797 8x8 grey-level digit images, 10 classes. A
stratified, seeded split holds out ``val_fraction`` of them; inputs are standardised with the
training split's statistics. :class:`DigitsTrainer` trains one configuration one epoch at a time,
evaluates the validation loss (mean cross-entropy) and accuracy, and checkpoints to an explicit
versioned dict (model and optimiser ``state_dict``s, epoch, shuffling generator state), so a paused
trial resumes where it stopped. :func:`train_digits` is the Ray Tune function trainable around it:
one ``tune.report`` per epoch with ``epoch`` (the resource), ``val_loss``, ``val_acc`` and
``train_loss``, and a checkpoint with every report. The device is CUDA when available (Ray gives a
trial its fractional GPU through ``resources_per_trial``), the CPU otherwise.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

CHECKPOINT_VERSION = 1
CHECKPOINT_FILE = "trainer.pt"
MODELS = ("mlp", "cnn")
OPTIMIZERS = ("adam", "sgd")
ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh, "gelu": nn.GELU}

DEFAULTS: dict[str, Any] = {
    "model": "mlp",
    "lr": 1e-3,
    "weight_decay": 0.0,
    "batch_size": 64,
    "hidden": 64,
    "layers": 2,
    "channels": 16,
    "dropout": 0.0,
    "activation": "relu",
    "optimizer": "adam",
    "momentum": 0.9,
    "seed": 0,
    "data_seed": 0,
    "val_fraction": 0.25,
    "max_epochs": 27,
    "threads": 1,
}


@dataclass(frozen=True)
class DigitsData:
    """Standardised digits split: ``x_*`` float32 ``(n, 64)``, ``y_*`` int64 ``(n,)``."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor


def load_digits_split(val_fraction: float = 0.25, seed: int = 0) -> DigitsData:
    """Stratified, seeded train/validation split of ``sklearn.datasets.load_digits``."""
    if isinstance(val_fraction, bool) or not isinstance(val_fraction, int | float):
        raise TypeError(f"val_fraction must be a number, got {val_fraction!r}")
    if not 0.0 < float(val_fraction) < 1.0:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    x, y = load_digits(return_X_y=True)
    x_tr, x_va, y_tr, y_va = train_test_split(
        x, y, test_size=float(val_fraction), random_state=int(seed), stratify=y
    )
    mean = x_tr.mean(axis=0)
    std = x_tr.std(axis=0)
    std = np.where(std > 0, std, 1.0)

    def tensor(a: np.ndarray) -> torch.Tensor:
        return torch.as_tensor((a - mean) / std, dtype=torch.float32)

    return DigitsData(
        tensor(x_tr),
        torch.as_tensor(y_tr, dtype=torch.int64),
        tensor(x_va),
        torch.as_tensor(y_va, dtype=torch.int64),
    )


def _positive_int(config: Mapping[str, Any], key: str) -> int:
    v = config[key]
    if isinstance(v, bool) or not isinstance(v, int | float | np.integer | np.floating):
        raise TypeError(f"{key} must be a number, got {v!r}")
    if float(v) != math.floor(float(v)) or v < 1:
        raise ValueError(f"{key} must be a positive integer, got {v!r}")
    return int(v)


def _float_in(config: Mapping[str, Any], key: str, low: float, high: float) -> float:
    v = config[key]
    if isinstance(v, bool) or not isinstance(v, int | float | np.integer | np.floating):
        raise TypeError(f"{key} must be a number, got {v!r}")
    if not low <= float(v) <= high:
        raise ValueError(f"{key} must be in [{low}, {high}], got {v!r}")
    return float(v)


def resolve_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """Defaults filled in, every key checked; unknown keys are a ``ValueError``."""
    unknown = set(config) - set(DEFAULTS)
    if unknown:
        raise ValueError(f"config has unknown keys {sorted(unknown)}; known: {sorted(DEFAULTS)}")
    c = {**DEFAULTS, **config}
    if c["model"] not in MODELS:
        raise ValueError(f"model must be one of {MODELS}, got {c['model']!r}")
    if c["optimizer"] not in OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {c['optimizer']!r}")
    if c["activation"] not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, got {c['activation']!r}")
    out = dict(c)
    out["lr"] = _float_in(c, "lr", 1e-8, 10.0)
    out["weight_decay"] = _float_in(c, "weight_decay", 0.0, 1.0)
    out["dropout"] = _float_in(c, "dropout", 0.0, 0.95)
    out["momentum"] = _float_in(c, "momentum", 0.0, 0.999)
    out["val_fraction"] = _float_in(c, "val_fraction", 0.05, 0.95)
    for key in ("batch_size", "hidden", "layers", "channels", "max_epochs", "threads"):
        out[key] = _positive_int(c, key)
    for key in ("seed", "data_seed"):
        if isinstance(c[key], bool) or not isinstance(c[key], int | np.integer) or c[key] < 0:
            raise ValueError(f"{key} must be an integer >= 0, got {c[key]!r}")
        out[key] = int(c[key])
    return out


class MLP(nn.Module):
    """``layers`` hidden layers of width ``hidden`` with dropout, on the 64 pixels."""

    def __init__(self, hidden: int, layers: int, dropout: float, activation: str) -> None:
        super().__init__()
        mods: list[nn.Module] = []
        width = 64
        for _ in range(layers):
            mods += [nn.Linear(width, hidden), ACTIVATIONS[activation](), nn.Dropout(dropout)]
            width = hidden
        mods.append(nn.Linear(width, 10))
        self.net = nn.Sequential(*mods)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class SmallCNN(nn.Module):
    """Two 3x3 convolutions (``channels``, ``2 channels``) with 2x2 max-pooling, on 8x8 images."""

    def __init__(self, channels: int, hidden: int, dropout: float, activation: str) -> None:
        super().__init__()
        act = ACTIVATIONS[activation]
        self.features = nn.Sequential(
            nn.Conv2d(1, channels, 3, padding=1),
            act(),
            nn.MaxPool2d(2),
            nn.Conv2d(channels, 2 * channels, 3, padding=1),
            act(),
            nn.MaxPool2d(2),
        )
        self.head = nn.Sequential(
            nn.Flatten(),
            nn.Dropout(dropout),
            nn.Linear(2 * channels * 4, hidden),
            act(),
            nn.Linear(hidden, 10),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x.view(-1, 1, 8, 8)))


def default_device() -> torch.device:
    """CUDA when a GPU is visible to this process, else the CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


class DigitsTrainer:
    """One configuration on the digits split, trained one epoch at a time.

    ``config`` keys (all optional, see ``DEFAULTS``): ``model`` (``mlp``/``cnn``), ``lr``,
    ``weight_decay``, ``batch_size``, ``hidden``, ``layers`` (MLP), ``channels`` (CNN), ``dropout``,
    ``activation``, ``optimizer`` (``adam``/``sgd`` with ``momentum``), ``seed`` (weights and
    shuffling), ``data_seed`` and ``val_fraction`` (the split), ``max_epochs``, ``threads``.
    """

    def __init__(
        self,
        config: Mapping[str, Any],
        *,
        device: torch.device | str | None = None,
        data: DigitsData | None = None,
    ) -> None:
        self.config = resolve_config(config)
        c = self.config
        self.device = torch.device(device) if device is not None else default_device()
        if self.device.type == "cuda" and self.device.index is None:
            self.device = torch.device("cuda", torch.cuda.current_device())
        if self.device.type == "cpu":
            torch.set_num_threads(c["threads"])
        d = data if data is not None else load_digits_split(c["val_fraction"], c["data_seed"])
        self.x_train, self.y_train = d.x_train.to(self.device), d.y_train.to(self.device)
        self.x_val, self.y_val = d.x_val.to(self.device), d.y_val.to(self.device)
        # the trainer's own generator state (weights, dropout), swapped in around its own work
        # (torch's dropout draws from the process's generator): the process's state is untouched
        with self._forked():
            torch.manual_seed(c["seed"])
            if c["model"] == "mlp":
                model: nn.Module = MLP(c["hidden"], c["layers"], c["dropout"], c["activation"])
            else:
                model = SmallCNN(c["channels"], c["hidden"], c["dropout"], c["activation"])
            self.model = model.to(self.device)
            self._rng = self._rng_state()
        if c["optimizer"] == "adam":
            self.optimizer: torch.optim.Optimizer = torch.optim.Adam(
                self.model.parameters(), lr=c["lr"], weight_decay=c["weight_decay"]
            )
        else:
            self.optimizer = torch.optim.SGD(
                self.model.parameters(),
                lr=c["lr"],
                momentum=c["momentum"],
                weight_decay=c["weight_decay"],
            )
        self.shuffle = torch.Generator().manual_seed(c["seed"])
        self.loss_fn = nn.CrossEntropyLoss()
        self.epoch = 0

    def _forked(self) -> contextlib.AbstractContextManager[None]:
        """The process's torch generators (CPU, and every CUDA device: ``manual_seed`` seeds them
        all) restored on exit."""
        cuda = list(range(torch.cuda.device_count())) if self.device.type == "cuda" else []
        return torch.random.fork_rng(devices=cuda)

    def _rng_state(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        cuda = torch.cuda.get_rng_state(self.device) if self.device.type == "cuda" else None
        return torch.get_rng_state(), cuda

    @contextlib.contextmanager
    def _own_rng(self) -> Iterator[None]:
        """Run with the trainer's generator state, kept afterwards; the process's is restored."""
        with self._forked():
            cpu, cuda = self._rng
            torch.set_rng_state(cpu)
            if cuda is not None:
                torch.cuda.set_rng_state(cuda, self.device)
            yield
            self._rng = self._rng_state()

    def train_epoch(self) -> float:
        """One pass over the training split in shuffled mini-batches; returns the mean loss."""
        with self._own_rng():
            return self._train_epoch()

    def _train_epoch(self) -> float:
        self.model.train()
        n = self.x_train.shape[0]
        order = torch.randperm(n, generator=self.shuffle).to(self.device)
        total = 0.0
        bs = self.config["batch_size"]
        for start in range(0, n, bs):
            idx = order[start : start + bs]
            self.optimizer.zero_grad(set_to_none=True)
            loss = self.loss_fn(self.model(self.x_train[idx]), self.y_train[idx])
            loss.backward()
            self.optimizer.step()
            total += float(loss.detach()) * idx.shape[0]
        self.epoch += 1
        return total / n

    @torch.no_grad()
    def evaluate(self) -> tuple[float, float]:
        """Validation ``(mean cross-entropy, accuracy)``; a diverged model gives ``inf`` loss."""
        self.model.eval()
        logits = self.model(self.x_val)
        loss = float(self.loss_fn(logits, self.y_val))
        acc = float((logits.argmax(dim=1) == self.y_val).float().mean())
        return (loss if math.isfinite(loss) else math.inf), acc

    def step(self) -> dict[str, float]:
        """Train one epoch and evaluate: ``{epoch, train_loss, val_loss, val_acc}``."""
        train_loss = self.train_epoch()
        val_loss, val_acc = self.evaluate()
        return {
            "epoch": self.epoch,
            "train_loss": train_loss,
            "val_loss": val_loss,
            "val_acc": val_acc,
        }

    def state_dict(self) -> dict[str, Any]:
        """Versioned checkpoint: epoch, config, model, optimiser, shuffling generator and the
        trainer's own torch generator states (dropout; CPU, and CUDA on a GPU)."""
        return {
            "version": CHECKPOINT_VERSION,
            "epoch": self.epoch,
            "config": dict(self.config),
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "shuffle": self.shuffle.get_state(),
            "torch_rng": self._rng[0],
            "cuda_rng": self._rng[1],
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict` of a trainer built with the same configuration."""
        if not isinstance(state, Mapping):
            raise TypeError(f"state must be a mapping, got {type(state).__name__}")
        if state.get("version") != CHECKPOINT_VERSION:
            raise ValueError(
                f"checkpoint version must be {CHECKPOINT_VERSION}, got {state.get('version')!r}"
            )
        if dict(state["config"]) != self.config:
            raise ValueError("checkpoint config must equal the trainer's config, got a different one")
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.shuffle.set_state(state["shuffle"].cpu())
        cuda = state.get("cuda_rng") if self.device.type == "cuda" else None
        self._rng = (state["torch_rng"].cpu(), self._rng[1] if cuda is None else cuda.cpu())
        self.epoch = int(state["epoch"])

    def save(self, directory: str | Path) -> Path:
        """Write :meth:`state_dict` to ``directory/trainer.pt``."""
        path = Path(directory) / CHECKPOINT_FILE
        torch.save(self.state_dict(), path)
        return path

    def load(self, directory: str | Path) -> None:
        """Load ``directory/trainer.pt`` written by :meth:`save`: tensors, numbers, strings and
        containers only (``weights_only``: no object is unpickled)."""
        state = torch.load(Path(directory) / CHECKPOINT_FILE, map_location=self.device,
                           weights_only=True)
        self.load_state_dict(state)


def train_digits(config: dict[str, Any]) -> None:
    """Ray Tune function trainable: one report (and checkpoint) per epoch up to ``max_epochs``.

    Resumes from ``tune.get_checkpoint()`` when Tune restarts a paused or restored trial. A
    diverged model reports ``val_loss = inf``; the scheduler adapter decides what that counts as.
    """
    import tempfile

    from ray import tune

    trainer = DigitsTrainer(config)
    ckpt = tune.get_checkpoint()
    if ckpt is not None:
        with ckpt.as_directory() as d:
            trainer.load(d)
    while trainer.epoch < trainer.config["max_epochs"]:
        metrics = trainer.step()
        with tempfile.TemporaryDirectory() as d:
            trainer.save(d)
            tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(d))


# ---------------------------------------------------------------------------------------------
# User trainables: ``[trainable] function = "module:callable"``

# Never shipped with the code of a trainable's folder (gitignore syntax, relative to the folder).
SHIP_EXCLUDES = (
    ".git", "__pycache__", "*.pyc", ".venv", "venv", ".ipynb_checkpoints", ".pytest_cache",
    "results", "ray_results", "*.ckpt", "*.pt", "*.pth", "*.sqlite",
)


def load_trainable(spec: str, base: Path | None = None, *, key: str = "trainable.function") -> Any:
    """The callable named ``"module:callable"`` (``module`` may be dotted, ``callable`` too).

    ``module`` is looked up first in ``base`` (the study TOML's folder), then on ``sys.path``;
    ``base`` stays on ``sys.path`` so that the module's own imports keep working. A module of the
    same name imported earlier from another folder is replaced by the one in ``base``.
    ``ValueError`` (naming ``key``) when the module or the attribute is missing or not callable, or
    when importing the module raises (its error and line in the message).
    """
    import importlib
    import sys

    if not isinstance(spec, str) or spec.count(":") != 1:
        raise ValueError(f"{key} must be 'module:callable', got {spec!r}")
    mod_name, _, attr = spec.partition(":")
    parts = mod_name.split(".")
    if not all(p.isidentifier() for p in parts) or not all(
        a.isidentifier() for a in attr.split(".")
    ):
        raise ValueError(f"{key} must be 'module:callable' with Python names, got {spec!r}")
    if base is not None:
        base = Path(base).resolve()
        top = base / parts[0]
        if top.with_suffix(".py").is_file() or top.is_dir():
            folder = str(base)
            if folder in sys.path:
                sys.path.remove(folder)
            sys.path.insert(0, folder)
            loaded = sys.modules.get(parts[0])
            origin = getattr(loaded, "__file__", None)
            if loaded is not None and (origin is None or not Path(origin).resolve().is_relative_to(
                    base)):
                for name in [m for m in sys.modules if m == parts[0] or
                             m.startswith(parts[0] + ".")]:
                    del sys.modules[name]
            importlib.invalidate_caches()
    try:
        module = importlib.import_module(mod_name)
    except ModuleNotFoundError as exc:
        if exc.name is not None and not f"{mod_name}.".startswith(f"{exc.name}."):
            raise ValueError(f"{key}: importing {mod_name!r} failed: {exc}") from exc
        where = f"{base} or sys.path" if base is not None else "sys.path"
        raise ValueError(f"{key}: module {mod_name!r} not found in {where} ({exc})") from exc
    except Exception as exc:  # the module's own code failed: one line, where and what
        raise ValueError(f"{key}: importing {mod_name!r} failed{_import_site(exc, mod_name)}: "
                         f"{type(exc).__name__}: {exc}") from exc
    obj: Any = module
    for name in attr.split("."):
        if not hasattr(obj, name):
            raise ValueError(f"{key}: {mod_name!r} has no attribute {attr!r}")
        obj = getattr(obj, name)
    if not callable(obj):
        raise ValueError(f"{key}: {spec!r} must name a callable, got {type(obj).__name__}")
    return obj


def _import_site(exc: BaseException, mod_name: str) -> str:
    """`` at FILE:LINE``, the last line of ``mod_name``'s own files in ``exc``'s traceback (a
    ``SyntaxError`` names its line itself), or ``""``."""
    import traceback

    top = mod_name.split(".")[0]
    own = [f for f in traceback.extract_tb(exc.__traceback__)
           if Path(f.filename).stem == top or top in Path(f.filename).parts]
    return f" at {own[-1].filename}:{own[-1].lineno}" if own else ""


def code_folder(fn: Any) -> Path | None:
    """The folder to ship to Ray's workers so that they can import ``fn``, or ``None``.

    ``None`` for a function of ``__main__`` (cloudpickle sends it by value), of an installed
    distribution (``hpo_node`` itself, site-packages) or of the standard library. Otherwise the
    folder that holds ``fn``'s top-level module or package.
    """
    import importlib.metadata
    import inspect
    import sys

    module = inspect.getmodule(fn)
    if module is None or module.__name__ == "__main__":
        return None
    top = module.__name__.split(".")[0]
    if top in sys.stdlib_module_names or top in importlib.metadata.packages_distributions():
        return None
    origin = getattr(sys.modules.get(top), "__file__", None)
    if origin is None:
        return None
    path = Path(origin).resolve()
    return path.parent.parent if path.name == "__init__.py" else path.parent


def runtime_env(folder: Path, excludes: tuple[str, ...] = ()) -> dict[str, Any]:
    """Ray ``runtime_env`` shipping ``folder`` as every worker's ``working_dir`` (importable on
    every node), without :data:`SHIP_EXCLUDES` and ``excludes``."""
    return {"working_dir": str(folder), "excludes": [*SHIP_EXCLUDES, *excludes]}


def ship_by_value(folder: Path) -> list[str]:
    """Pickle the modules loaded from ``folder`` by value (for a Ray started without
    :func:`runtime_env`): Ray's workers then need only their imports. Returns their names."""
    import sys

    import ray.cloudpickle

    names = []
    for name, mod in list(sys.modules.items()):
        origin = getattr(mod, "__file__", None)
        if origin and Path(origin).resolve().is_relative_to(folder):
            ray.cloudpickle.register_pickle_by_value(mod)
            names.append(name)
    return sorted(names)
