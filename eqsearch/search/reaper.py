"""A watchdog that ends a search's local Ray processes when the driver dies, even by SIGKILL.

Ray's daemons (raylet, GCS, dashboard and runtime-env agents, workers) are started by the
driver but outlive a driver that is killed. :func:`start` spawns this module as a separate
process (its own session, so a Ctrl-C to the driver's group does not reach it), connected to
the driver by a pipe. While the pipe is open it records, every second, the driver's
descendants that appeared after it started (pid and start time, from /proc); when the pipe closes (the driver exited or was
killed) it sends SIGTERM to every recorded process still alive, and their descendants, then
SIGKILL to those left after a few seconds. Linux only (/proc); elsewhere it does nothing.

    python -m eqsearch.search.reaper DRIVER_PID
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

PROC = Path("/proc")
GRACE_S = 5.0


def start() -> subprocess.Popen | None:
    """Start the watchdog of this process; None where there is no /proc. Keep the returned
    object alive: its stdin pipe is the driver's heartbeat (closing it reaps now)."""
    if not PROC.is_dir():
        return None
    return subprocess.Popen([sys.executable, "-m", "eqsearch.search.reaper", str(os.getpid())],
                            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)


def stop(proc: subprocess.Popen | None) -> None:
    """The driver's normal end, after ``ray.shutdown()``: close the pipe. The watchdog, in its own
    session, reaps what Ray left (workers orphaned by the raylet's exit, which take up to a second
    to go) on its own; the driver does not wait for it."""
    if proc is not None:
        proc.stdin.close()


def _stat(pid: int) -> tuple[int, int] | None:
    """(parent pid, start time in clock ticks) of ``pid``, or None if it is gone."""
    try:
        text = (PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2:].split()  # after "pid (comm) "
    return int(fields[1]), int(fields[19])


def descendants(root: int) -> dict[int, int]:
    """pid -> start time of every living descendant of ``root``."""
    children: dict[int, list[int]] = {}
    start: dict[int, int] = {}
    for entry in PROC.iterdir():
        if entry.name.isdigit():
            st = _stat(int(entry.name))
            if st is not None:
                children.setdefault(st[0], []).append(int(entry.name))
                start[int(entry.name)] = st[1]
    out, todo = {}, [root]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in out and child in start:
                out[child] = start[child]
                todo.append(child)
    return out


def _alive(known: dict[int, int]) -> dict[int, int]:
    """Those of ``known`` still running (same pid and start time: not a reused pid)."""
    return {pid: t for pid, t in known.items() if (st := _stat(pid)) is not None and st[1] == t}


def reap(known: dict[int, int]) -> None:
    """SIGTERM the living ones of ``known`` and their descendants, then SIGKILL the rest."""
    targets = _alive(known)
    for pid in list(targets):
        targets.update(descendants(pid))
    for sig, wait in ((signal.SIGTERM, GRACE_S), (signal.SIGKILL, 0.0)):
        for pid in _alive(targets):
            try:
                os.kill(pid, sig)
            except OSError:
                pass
        deadline = time.monotonic() + wait
        while _alive(targets) and time.monotonic() < deadline:
            time.sleep(0.2)


def watch(driver: int) -> None:
    """Record the driver's new descendants (not those it had before Ray started, nor this
    watchdog) until the pipe closes, then reap them."""
    before = set(descendants(driver)) | {os.getpid()}
    known: dict[int, int] = {}
    while True:
        known.update({p: t for p, t in descendants(driver).items() if p not in before})
        ready, _, _ = select.select([sys.stdin], [], [], 1.0)
        if ready and not os.read(sys.stdin.fileno(), 1024):  # EOF: the driver is gone or done
            break
    reap(known)


if __name__ == "__main__":
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    watch(int(sys.argv[1]))
