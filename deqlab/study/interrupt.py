"""Ctrl-C during a study: Tune's graceful stop, without its pruned-looking finish or its restore hint.

Tune catches SIGINT itself, saves its state, stops the trials and returns as
if the study had ended: the driver then recorded the stopped trials `pruned`,
printed Ray's `Tuner.restore(...)` hint and exited 0. Here SIGINT is turned
into Tune's other stop signal (SIGUSR1, same graceful stop) while the driver
remembers that the user interrupted, so `run_study` can leave the unfinished
trials `running` on disk (what `deqlab resume` reruns), name the command that
continues the study and exit 130. A second Ctrl-C stops at once.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
from dataclasses import dataclass

# Tune's own lines about the interrupt: replaced by ours, which names `deqlab resume`
_TUNE_NOISE = ("Tuner.restore", "has been interrupted", "Stop signal received", "Trials did not complete")


class StudyInterrupted(KeyboardInterrupt):
    """The user stopped the study; the message says how to continue it."""


@dataclass
class Interrupt:
    requested: bool = False


class _DropTuneHints(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not any(text in record.getMessage() for text in _TUNE_NOISE)


@contextlib.contextmanager
def graceful_interrupt():
    """Within: the first SIGINT asks Tune to stop gracefully and sets `.requested`; the second raises."""
    state = Interrupt()
    if threading.current_thread() is not threading.main_thread():
        yield state
        return
    previous, env_before = signal.getsignal(signal.SIGINT), os.environ.get("TUNE_DISABLE_SIGINT_HANDLER")

    def on_sigint(sig, frame):
        tune_handler = signal.getsignal(signal.SIGUSR1)
        if state.requested or tune_handler in (signal.SIG_DFL, signal.SIG_IGN, None):
            raise KeyboardInterrupt  # a second Ctrl-C, or Tune is not running yet: stop now
        state.requested = True
        os.kill(os.getpid(), signal.SIGUSR1)  # Tune's handler: save the state, stop the trials, return

    hints = _DropTuneHints()
    logger = logging.getLogger("ray.tune.tune")
    os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = "1"
    signal.signal(signal.SIGINT, on_sigint)
    logger.addFilter(hints)
    try:
        yield state
    finally:
        logger.removeFilter(hints)
        signal.signal(signal.SIGINT, previous)
        if env_before is None:
            os.environ.pop("TUNE_DISABLE_SIGINT_HANDLER", None)
        else:
            os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = env_before


def resume_hint(name: str, storage: str) -> str:
    return (f"interrupted: the unfinished trials of {name} are kept to resume; continue with "
            f"`deqlab resume {name} --storage {storage}`")


__all__ = ["StudyInterrupted", "graceful_interrupt", "resume_hint"]
