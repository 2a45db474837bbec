"""``[study] storage``: Ray Tune's experiment storage on a local path or any URI (``s3://``, ...).

The real study uses a ``file://`` URI: Ray reads and writes it through pyarrow's filesystem layer,
the code path of ``s3://`` and ``gs://`` (no network needed). An S3 check against a local moto
server runs when ``moto[server]`` is installed and is skipped otherwise.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from hpo_node.study import apply_overrides, load_study, study_from_dict
from hpo_node.study.build import build_scheduler
from hpo_node.study.command import _parse_set
from hpo_node.study.config import is_storage_uri, join_storage, redact_storage
from hpo_node.study.outputs import summarize
from hpo_node.study.run import _excluded_outputs
from tests.conftest import STUDY_TRAINABLE


def _doc(tmp_path: Path, **study: Any) -> dict[str, Any]:
    return {
        "study": {"name": "tiny", "output_dir": str(tmp_path / "results"), "seed": 0,
                  "trials": 9, "num_cpus": 2, **study},
        "algorithm": {"name": "asha", "max_resource": 3, "eta": 3},
        "resources": {"cpu": 2},
        "space": {"lr": {"type": "loguniform", "low": 1e-4, "high": 3e-2}},
    }


# --- the key ---------------------------------------------------------------------------------


def test_storage_default_is_ray_under_the_study_folder(tmp_path: Path) -> None:
    cfg = study_from_dict(_doc(tmp_path))
    assert cfg.storage is None and not cfg.storage_is_uri
    ray_dir = (tmp_path / "results" / "tiny" / "ray").resolve()
    assert cfg.ray_storage == str(ray_dir)
    assert cfg.ray_experiment == str(ray_dir / "tiny")
    assert cfg.local_storage_dir == ray_dir


@pytest.mark.parametrize("uri", [
    "s3://bucket/prefix",
    "gs://bucket/a/b/",
    "file:///abs/store",
    "s3://bucket/prefix?endpoint_override=127.0.0.1:9000&scheme=http",
])
def test_storage_uri_is_passed_to_ray_unchanged(tmp_path: Path, uri: str) -> None:
    cfg = study_from_dict(_doc(tmp_path, storage=uri))
    assert cfg.storage == uri and cfg.storage_is_uri
    assert cfg.ray_storage == uri
    base, sep, query = uri.partition("?")
    assert cfg.ray_experiment == base.rstrip("/") + "/tiny" + sep + query
    assert cfg.local_storage_dir == (Path("/abs/store") if uri.startswith("file:") else None)


def test_storage_relative_path_is_under_the_study_folder(tmp_path: Path) -> None:
    cfg = study_from_dict(_doc(tmp_path, storage="../shared_ray"))
    assert cfg.ray_storage == str((tmp_path / "results" / "shared_ray").resolve())
    assert cfg.ray_experiment == str((tmp_path / "results" / "shared_ray" / "tiny").resolve())
    absolute = study_from_dict(_doc(tmp_path, storage=str(tmp_path / "abs")))
    assert absolute.ray_storage == str((tmp_path / "abs").resolve())


def test_storage_from_toml_and_set(tmp_path: Path) -> None:
    toml = tmp_path / "study.toml"
    toml.write_text(
        '[study]\nname = "tiny"\nstorage = "gs://bucket/studies"\n'
        '[algorithm]\nname = "asha"\nmax_resource = 3\n'
        '[space]\nlr = { type = "uniform", low = 0.1, high = 0.2 }\n'
    )
    assert load_study(toml).ray_experiment == "gs://bucket/studies/tiny"
    # --set study.storage=...: a URI is not TOML, so it is taken as the string itself
    sets = _parse_set(["study.storage=s3://bucket/x"])
    assert sets == {"study.storage": "s3://bucket/x"}
    assert load_study(toml, sets).ray_storage == "s3://bucket/x"
    assert load_study(toml, _parse_set(['study.storage="/data/ray"'])).ray_storage == "/data/ray"
    doc = apply_overrides(_doc(tmp_path), {"study.storage": "file:///x/y"})
    assert study_from_dict(doc).ray_experiment == "file:///x/y/tiny"


@pytest.mark.parametrize(("value", "exc", "rule"), [
    (3, TypeError, "must be a string"),
    (["s3://b"], TypeError, "must be a string"),
    ("", ValueError, "non-empty"),
    ("   ", ValueError, "non-empty"),
    ("s3://", ValueError, "must name a location"),
    ("file:///", ValueError, "must name a location"),
    ("://bucket", ValueError, "scheme://location"),
    ("1s3://bucket", ValueError, "scheme://location"),
])
def test_storage_bad_values_are_refused(tmp_path: Path, value: Any, exc: type, rule: str) -> None:
    with pytest.raises(exc, match=r"study\.storage") as info:
        study_from_dict(_doc(tmp_path, storage=value))
    assert rule in str(info.value) and repr(value) in str(info.value)


def test_join_storage_and_uri_detection() -> None:
    assert is_storage_uri("s3://b/p") and is_storage_uri("file:///p")
    assert not is_storage_uri("results/ray") and not is_storage_uri("C:\\ray")
    assert join_storage("s3://b", "n") == "s3://b/n"
    assert join_storage("s3://b/p/", "n") == "s3://b/p/n"
    assert join_storage("s3://b/p?region=x", "n") == "s3://b/p/n?region=x"
    assert join_storage("/tmp/r", "n") == str(Path("/tmp/r/n"))
    assert redact_storage("s3://b/p?region=x&secret_key=abc&SESSION_TOKEN=t&access_key=k") == (
        "s3://b/p?region=x&secret_key=***&SESSION_TOKEN=***&access_key=k")
    assert redact_storage("/tmp/secret_key=x") == "/tmp/secret_key=x"


def test_summary_records_the_uri_form(tmp_path: Path) -> None:
    cfg = study_from_dict(_doc(tmp_path, storage="s3://bucket/prefix"))
    summary = summarize(cfg, build_scheduler(cfg, None), 1.0, None, cfg.ray_experiment)
    assert summary["ray_experiment_dir"] == "s3://bucket/prefix/tiny"
    local = study_from_dict(_doc(tmp_path))
    summary = summarize(local, build_scheduler(local, None), 1.0, None, local.ray_experiment)
    assert summary["ray_experiment_dir"] == str((tmp_path / "results/tiny/ray/tiny").resolve())


def test_local_storage_inside_the_shipped_folder_is_excluded(tmp_path: Path) -> None:
    folder = tmp_path / "proj"
    folder.mkdir()
    cfg = study_from_dict(_doc(tmp_path, output_dir=str(folder / "results"),
                               storage=str(folder / "ray_store")))
    assert _excluded_outputs(folder, cfg.study_dir, cfg.local_storage_dir) == (
        "/results/tiny", "/ray_store")
    uri = study_from_dict(_doc(tmp_path, storage="s3://bucket/p"))
    assert _excluded_outputs(folder, uri.study_dir, uri.local_storage_dir) == ()
    # the default storage is inside the study folder: one entry, as before
    default = study_from_dict(_doc(tmp_path, output_dir=str(folder / "results")))
    assert _excluded_outputs(folder, default.study_dir, default.local_storage_dir) == (
        "/results/tiny",)


# --- a real study on a file:// URI -------------------------------------------------------------


def _project(tmp_path: Path, storage: str) -> Path:
    """A user's folder: the trainable and a study TOML naming it, Ray storage at ``storage``."""
    folder = tmp_path / "proj"
    folder.mkdir(parents=True)
    (folder / "store_trainable.py").write_text(STUDY_TRAINABLE)
    (folder / "study.toml").write_text(
        f'[study]\nname = "tiny"\noutput_dir = "{tmp_path / "results"}"\nseed = 0\n'
        f'trials = 9\nnum_cpus = 2\nstorage = "{storage}"\n'
        '[algorithm]\nname = "asha"\nmax_resource = 3\neta = 3\n'
        '[resources]\ncpu = 2\n'
        '[trainable]\nfunction = "store_trainable:train"\n'
        '[space]\nx = { type = "uniform", low = 0.1, high = 1.0 }\n'
    )
    return folder / "study.toml"


def _run_interrupted_then_resume(tmp_path: Path, storage: str, capsys: Any) -> dict[str, Any]:
    """Run the study until a SIGINT after 5 epochs, then ``hpo-node run --resume``; the summary."""
    from hpo_node.study import run_main, run_study
    from tests.ray_callbacks import InterruptOnce

    toml = _project(tmp_path, storage)
    marker = str(tmp_path / "interrupted")
    first = run_study(load_study(toml), callbacks=[InterruptOnce(5, marker)])
    assert os.path.exists(marker)
    assert 0 < first.scheduler.epochs_used() < 15
    capsys.readouterr()
    assert run_main([str(toml), "--resume", "--progress-every", "60"]) == 0
    out = capsys.readouterr().out
    experiment = join_storage(storage, "tiny")
    assert f"resuming {experiment} (" in out, out
    study_dir = tmp_path / "results" / "tiny"
    summary = json.loads((study_dir / "summary.json").read_text())
    # ASHA, 9 configurations, R = 3, eta = 3: 9 * 1 + 3 * 2 epochs; none retrained after resume
    assert summary["trials"] == 9 and summary["epochs_used"] == 15
    assert summary["ray_experiment_dir"] == experiment
    assert not (study_dir / "ray").exists()
    return summary


@pytest.mark.slow
def test_study_on_a_file_uri_storage_and_resume(tmp_path: Path, ray_local: Any,
                                                capsys: Any) -> None:
    store = tmp_path / "store"
    _run_interrupted_then_resume(tmp_path, f"file://{store}", capsys)
    exp = store / "tiny"
    assert list(exp.glob("experiment_state-*.json")) and (exp / "tuner.pkl").exists()
    trial_dirs = [d for d in exp.iterdir() if d.is_dir()]
    assert len(trial_dirs) == 9
    # every trial's checkpoints and results are in the storage, three epochs for the finishers
    assert all(list(d.glob("checkpoint_*")) for d in trial_dirs)
    epochs = sorted(len((d / "result.json").read_text().splitlines()) for d in trial_dirs)
    assert epochs == [1] * 6 + [3] * 3


# --- optional: S3 on a local moto server -------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _moto_server() -> list[str] | None:
    """How to start moto's S3 server: this interpreter's ``moto.server``, else a ``moto_server``
    on PATH (e.g. from its own virtualenv: ``pip install 'moto[server]'``), else ``None``."""
    import importlib.util

    try:
        if importlib.util.find_spec("moto.server") is not None:
            return [sys.executable, "-m", "moto.server"]
    except ModuleNotFoundError:
        pass
    exe = shutil.which("moto_server")
    return [exe] if exe else None


@pytest.mark.slow
def test_study_on_s3_storage_with_a_local_moto_server(tmp_path: Path, ray_local: Any,
                                                      capsys: Any,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    import pyarrow.fs as fs_mod
    command = _moto_server()
    if command is None:
        pytest.skip("moto[server] not installed (optional S3 check): no moto.server, no "
                    "moto_server on PATH")
    port = _free_port()
    server = subprocess.Popen([*command, "-H", "127.0.0.1", "-p", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for key, value in {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test",
                           "AWS_DEFAULT_REGION": "us-east-1", "AWS_REGION": "us-east-1",
                           "AWS_EC2_METADATA_DISABLED": "true"}.items():
            monkeypatch.setenv(key, value)
        s3 = fs_mod.S3FileSystem(endpoint_override=f"127.0.0.1:{port}", scheme="http",
                                 region="us-east-1", access_key="test", secret_key="test",
                                 allow_bucket_creation=True)
        deadline = time.monotonic() + 30
        while True:
            try:
                s3.create_dir("studies")  # the bucket
                break
            except OSError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise
                time.sleep(0.2)
        try:
            with s3.open_output_stream("studies/probe") as fh:
                fh.write(b"probe")
        except OSError as exc:
            # moto 5.2.1 answers pyarrow's CompleteMultipartUpload with an error; 5.2.5 does not
            pytest.skip(f"this moto server cannot complete pyarrow's S3 upload (moto 5.2.5 "
                        f"can): {str(exc).splitlines()[0][:200]}")
        storage = (f"s3://studies/qhpo?endpoint_override=127.0.0.1:{port}&scheme=http"
                   "&region=us-east-1")
        _run_interrupted_then_resume(tmp_path, storage, capsys)
        found = s3.get_file_info(fs_mod.FileSelector("studies/qhpo/tiny", recursive=True))
        names = [f.path.removeprefix("studies/qhpo/tiny/") for f in found]
        assert any(n.startswith("experiment_state-") for n in names), names
        assert "tuner.pkl" in names
        assert sum(1 for n in names if "/" not in n and n.startswith("train_")) == 9, names
        assert any("/checkpoint_" in n for n in names)
    finally:
        server.terminate()
        server.wait(timeout=10)
