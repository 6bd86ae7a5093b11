"""Helpers for tests that spawn processes: wait for an explicit readiness line with a deadline
(never a fixed sleep, never a blocking ``readline`` that can hang the suite), and kill and
reap the child whatever happened, so that no process outlives its test (a child still running
when its ``Popen`` is garbage-collected raises ``ResourceWarning``, which
``filterwarnings = error`` turns into a failure of some *later* test).

Deadlines are generous on purpose: the suite must pass on a loaded 2-core machine.
"""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

#: seconds; for a child process to reach a readiness signal or to finish after being asked
DEADLINE = 180.0

REPO = Path(__file__).resolve().parents[1]


def child_env(**extra: str) -> dict[str, str]:
    """The environment for a child ``python``: this checkout first on ``PYTHONPATH``."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(REPO), *([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])])
    env.update(extra)
    return env


class LineReader:
    """Read a text stream on a daemon thread into a queue, so the test can wait for a line
    with a deadline.  Every line read is kept in ``lines``."""

    def __init__(self, stream) -> None:
        self.lines: list[str] = []
        self._q: queue.Queue[str | None] = queue.Queue()
        self._t = threading.Thread(target=self._run, args=(stream,), daemon=True)
        self._t.start()

    def _run(self, stream) -> None:
        try:
            for line in iter(stream.readline, ""):
                self._q.put(line)
        except (OSError, ValueError):  # the stream was closed under us (child reaped)
            pass
        finally:
            self._q.put(None)

    def wait_for(self, predicate: Callable[[str], bool], timeout: float = DEADLINE) -> str:
        """The first line (from now on) for which ``predicate`` holds; ``AssertionError``
        naming what was seen if the stream ends or ``timeout`` seconds pass first."""
        end = time.monotonic() + timeout
        while True:
            left = end - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no readiness line within {timeout:.0f} s; saw "
                                     f"{self.lines[-5:]!r}")
            try:
                line = self._q.get(timeout=left)
            except queue.Empty:
                continue
            if line is None:
                raise AssertionError(f"the child's output ended first; saw {self.lines[-5:]!r}")
            self.lines.append(line)
            if predicate(line):
                return line

    def rest(self, timeout: float = DEADLINE) -> str:
        """Everything after the lines already consumed, up to the end of the stream."""
        end = time.monotonic() + timeout
        out: list[str] = []
        while True:
            left = end - time.monotonic()
            if left <= 0:
                raise AssertionError(f"the child's output did not end within {timeout:.0f} s")
            try:
                line = self._q.get(timeout=left)
            except queue.Empty:
                continue
            if line is None:
                self._t.join(timeout=5)
                return "".join(out)
            self.lines.append(line)
            out.append(line)


def sigint_default() -> None:
    """``preexec_fn`` for a child the test will Ctrl-C: SIGINT at its default action.

    A process started from a shell without job control (``cmd &`` in a script, ``nohup cmd
    &``) inherits SIGINT *ignored*, exec keeps that, and a Python child then never raises
    KeyboardInterrupt: the test would wait its whole deadline for a child that ignores the
    signal (seen once: a ``.ci/run`` launched in the background failed exactly the tests
    that send SIGINT)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def reap(proc: subprocess.Popen) -> None:
    """Kill ``proc`` if it still runs, wait for it and close its pipes (call in ``finally``)."""
    if proc.poll() is None:
        proc.kill()
    try:
        proc.wait(timeout=60)
    finally:
        for s in (proc.stdin, proc.stdout, proc.stderr):
            if s is not None:
                s.close()


def run_python(args: list[str], *, timeout: float = DEADLINE, check: bool = False,
               env: dict[str, str] | None = None, cwd: str | os.PathLike[str] | None = None,
               ) -> subprocess.CompletedProcess[str]:
    """``python ARGS`` to completion with a deadline (``subprocess.run`` kills and reaps the
    child when it passes), output captured as text."""
    return subprocess.run([sys.executable, *args], capture_output=True, text=True,
                          timeout=timeout, check=check, env=env, cwd=cwd)
