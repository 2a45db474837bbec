"""``hpo-node run``: the command line of a study."""

from __future__ import annotations

import argparse
import shlex
import sys
import tomllib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hpo_node.study.load import load_study
from hpo_node.study.run import StudyFailed, run_study


def _parse_set(items: Sequence[str]) -> dict[str, Any]:
    """``--set`` items as overrides: ``{"section.key": value}``, the value read as TOML (else the
    string itself); a longer path reaches into a table (``algorithm.params.d=4``)."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or "." not in key:
            raise ValueError(f"--set must be SECTION.KEY=VALUE, got {item!r}")
        try:
            out[key] = tomllib.loads(f"v = {value}")["v"]
        except tomllib.TOMLDecodeError:
            out[key] = value
    return out


def add_run_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``run`` to an ``argparse`` subparsers object (``hpo-node run CONFIG ...``)."""
    p = subparsers.add_parser("run", help="run an HPO study (TOML) on Ray Tune",
                              description="Run an HPO study on Ray Tune with the gateway.")
    _fill_run_parser(p)
    return p


def _fill_run_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", type=Path, help="study TOML file (e.g. examples/digits.toml)")
    p.add_argument("--gateway", default=None, metavar="HOST:PORT",
                   help="use this running gateway instead of starting one")
    p.add_argument("--ray-address", default=None, metavar="ADDR",
                   help="connect to this Ray cluster instead of starting a local Ray")
    again = p.add_mutually_exclusive_group()
    again.add_argument("--resume", action="store_true",
                       help="continue an interrupted study from its Ray experiment (in "
                       "study.storage); its config must be the one it was started with")
    again.add_argument("--overwrite", action="store_true",
                       help="start over: delete the outputs and the local Ray experiment of a "
                       "previous study of the same study.name (without it, that is refused)")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override a config entry, e.g. --set study.seed=1, or one key of a table "
                   "in it, e.g. --set algorithm.params.d=4 (repeatable)")
    p.add_argument("--progress-every", type=float, default=5.0, metavar="SECONDS",
                   help="seconds between progress lines (default 5)")


def run_main(argv: Sequence[str] | None = None) -> int:
    """``hpo-node run``: parse ``argv`` (without the ``run`` word), run, return an exit code."""
    parser = argparse.ArgumentParser(prog="hpo-node run",
                                     description="Run an HPO study on Ray Tune with the gateway.")
    _fill_run_parser(parser)
    args = parser.parse_args(argv)
    return run_args(args)


# Exit status of a study stopped by Ctrl-C (128 + SIGINT, as a shell reports it).
EXIT_INTERRUPTED = 130


def _resume_command(args: argparse.Namespace) -> str:
    """The ``hpo-node run`` line that continues this study (same config and ``--set`` items)."""
    words = ["hpo-node", "run", str(args.config), "--resume"]
    for item in args.set:
        words += ["--set", item]
    for flag, value in (("--gateway", args.gateway), ("--ray-address", args.ray_address)):
        if value is not None:
            words += [flag, value]
    return shlex.join(words)


def run_args(args: argparse.Namespace) -> int:
    """Run from parsed ``hpo-node run`` arguments (what ``cli.py`` calls): 0 when the study
    ended (some trials may have failed: decision ``error`` in trials.csv), 2 for a configuration
    error (one line on stderr), 1 when every trial that ran failed or the trainable broke the
    trainable contract (one line on stderr), 130 when Ctrl-C stopped it (the line to resume it
    on stderr)."""
    from hpo_node.integrations.ray_tune import TrainableContractError

    try:
        cfg = load_study(args.config, _parse_set(args.set))
        result = run_study(cfg, gateway=args.gateway, ray_address=args.ray_address,
                           resume=args.resume, overwrite=getattr(args, "overwrite", False),
                           progress_every_s=args.progress_every, caller="hpo-node run")
    except (ValueError, TypeError, FileNotFoundError, ConnectionError) as exc:
        print(f"hpo-node run: error: {exc}", file=sys.stderr)
        return 2
    except (StudyFailed, TrainableContractError) as exc:
        print(f"hpo-node run: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        result = None
    if result is None or result.interrupted:
        print(f"hpo-node run: interrupted; continue the study with: {_resume_command(args)}",
              file=sys.stderr, flush=True)
        return EXIT_INTERRUPTED
    return 0
