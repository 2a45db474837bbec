"""Ray Tune callbacks shared by the study tests (imported only by tests that run Ray)."""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

from ray.tune.callback import Callback


class InterruptOnce(Callback):
    """Sends SIGINT to this process after ``after`` results, once (a marker file remembers);
    ``times = 2``: two SIGINTs at once, a user pressing Ctrl-C twice."""

    def __init__(self, after: int, marker: str | os.PathLike[str], times: int = 1) -> None:
        self.after = after
        self.marker = marker
        self.times = times
        self.count = 0

    def on_trial_result(self, iteration: int, trials: list[Any], trial: Any, result: dict,
                        **info: Any) -> None:
        self.count += 1
        if self.count == self.after and not os.path.exists(self.marker):
            Path(self.marker).write_text("interrupted")
            for _ in range(self.times):
                os.kill(os.getpid(), signal.SIGINT)
