"""``hpo-node run`` run again on one study name, on a real (local) Ray: Ctrl-C exits 130 with the
line that resumes; a plain second run is refused; ``--resume`` with another config is refused,
with the same one it continues; ``--overwrite`` starts over."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from hpo_node.study import run_main
from tests.conftest import STUDY_TRAINABLE
from tests.ray_callbacks import InterruptOnce


@pytest.mark.slow
def test_hpo_study_cli_rerun_interrupt_resume_overwrite(tmp_path: Path, capsys: Any,
                                                        monkeypatch: Any, ray_local: Any) -> None:
    import hpo_node.study.command as command

    folder = tmp_path / "proj"
    folder.mkdir()
    (folder / "rerun_trainable.py").write_text(STUDY_TRAINABLE)
    toml = folder / "study.toml"
    toml.write_text(
        f'[study]\nname = "tiny"\noutput_dir = "{tmp_path / "results"}"\nseed = 0\n'
        'trials = 9\nnum_cpus = 2\n'
        '[algorithm]\nname = "asha"\nmax_resource = 3\neta = 3\n'
        '[resources]\ncpu = 2\n'
        '[trainable]\nfunction = "rerun_trainable:train"\n'
        '[space]\nx = { type = "uniform", low = 0.1, high = 1.0 }\n'
    )
    study = tmp_path / "results" / "tiny"
    real = command.run_study
    marker = str(tmp_path / "interrupted")

    def interrupted_once(cfg: Any, **kwargs: Any) -> Any:
        return real(cfg, callbacks=[InterruptOnce(5, marker)], **kwargs)

    monkeypatch.setattr(command, "run_study", interrupted_once)
    # Ctrl-C: exit 130 and the command that continues the study
    assert run_main([str(toml), "--set", "study.seed=0", "--progress-every", "60"]) == 130
    err = capsys.readouterr().err
    assert (f"hpo-node run: interrupted; continue the study with: hpo-node run {toml} --resume "
            "--set study.seed=0\n") in err
    assert json.loads((study / "summary.json").read_text())["interrupted"] is True
    monkeypatch.setattr(command, "run_study", real)
    # a second run of the name: refused, nothing touched
    assert run_main([str(toml)]) == 2
    assert "already holds study 'tiny': continue it with --resume" in capsys.readouterr().err
    # a resume with another config: refused
    assert run_main([str(toml), "--resume", "--set", "algorithm.eta=2"]) == 2
    assert "(algorithm.eta 3 -> 2)" in capsys.readouterr().err
    # the same config: continues (a harmless key may change)
    assert run_main([str(toml), "--resume", "--set", "study.num_cpus=1",
                     "--progress-every", "60"]) == 0
    out = capsys.readouterr().out
    assert "trials known" not in out and "resuming " in out
    summary = json.loads((study / "summary.json").read_text())
    assert summary["interrupted"] is False and summary["algorithm"] == "asha"
    assert summary["trials"] == 9 and summary["epochs_used"] == 15
    # --overwrite: starts over
    (study / "best.json").write_text("old")
    assert run_main([str(toml), "--overwrite", "--progress-every", "60"]) == 0
    out = capsys.readouterr().out
    assert f"--overwrite: removed the previous study 'tiny' in {study}" in out
    assert json.loads((study / "best.json").read_text())["found"] is True
    assert json.loads((study / "summary.json").read_text())["epochs_used"] == 15
