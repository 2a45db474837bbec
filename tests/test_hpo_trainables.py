"""The built-in digits trainer: its randomness is its own (seeded, checkpointed), never the
process's torch generator."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from hpo_node.trainables import DigitsTrainer, load_digits_split

CONFIG = {"hidden": 16, "layers": 1, "dropout": 0.3, "seed": 3, "max_epochs": 3}


@pytest.fixture(scope="module")
def data() -> object:
    return load_digits_split(0.25, 0)


def _losses(trainer: DigitsTrainer, epochs: int) -> list[float]:
    return [trainer.step()["train_loss"] for _ in range(epochs)]


def test_trainer_leaves_the_process_torch_generator_untouched(data: object) -> None:
    torch.manual_seed(123)
    before = torch.get_rng_state()
    trainer = DigitsTrainer(CONFIG, device="cpu", data=data)
    trainer.step()
    assert torch.equal(torch.get_rng_state(), before)


def test_trainer_results_do_not_depend_on_others_using_the_generator(data: object) -> None:
    alone = _losses(DigitsTrainer(CONFIG, device="cpu", data=data), 2)
    a = DigitsTrainer(CONFIG, device="cpu", data=data)
    b = DigitsTrainer({**CONFIG, "seed": 4}, device="cpu", data=data)
    mixed = []
    for _ in range(2):  # interleaved with another trainer and with draws from the process's
        torch.rand(1000)
        b.step()
        mixed.append(a.step()["train_loss"])
    assert mixed == alone


def test_trainer_resumed_from_its_checkpoint_continues_identically(
    data: object, tmp_path: Path
) -> None:
    straight = _losses(DigitsTrainer(CONFIG, device="cpu", data=data), 3)
    first = DigitsTrainer(CONFIG, device="cpu", data=data)
    head = _losses(first, 1)
    first.save(tmp_path)
    torch.rand(1000)  # the process's generator moved on meanwhile
    resumed = DigitsTrainer(CONFIG, device="cpu", data=data)
    resumed.load(tmp_path)
    assert head + _losses(resumed, 2) == straight
