"""What every study's local workers share: spawning them, their threads, their identity,
the claim files that split a list of runs between them, and the progress printer.

A study (tune, compare) runs N local processes, each with cpu_count / N torch threads; each
process is named ``host:pid``, so a claim or a trial left behind by a dead process on this
host can be told from one whose owner is alive.
"""

from __future__ import annotations

import multiprocessing
import os
import socket
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

Say = Callable[[str], None]


def printer(quiet: bool) -> Say:
    """One progress line per call on stdout, or nothing when quiet."""
    if quiet:
        return lambda text: None
    return lambda text: print(text, flush=True)


def threads_per_worker(workers: int) -> int:
    """torch threads for each of ``workers`` processes sharing this machine's cores."""
    return max(1, (os.cpu_count() or 1) // workers)


def worker_id() -> str:
    """``host:pid`` of this process, as claims and trials record it."""
    return f"{socket.gethostname()}:{os.getpid()}"


def pid_alive(pid: int) -> bool:
    """Whether a process with this id exists on this host (a stale lock's owner is not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def dead_local_worker(worker: str) -> bool:
    """True when ``host:pid`` names a process of this host that no longer exists."""
    host, _, pid = str(worker).rpartition(":")
    return host == socket.gethostname() and pid.isdigit() and not pid_alive(int(pid))


def spawn_workers(target: Callable[..., None], args: Sequence[Any], workers: int) -> None:
    """Run ``target(*args, threads)`` in ``workers`` spawned processes and wait for all."""
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=target, args=(*args, threads_per_worker(workers)))
             for _ in range(workers)]
    for p in procs:
        p.start()
    for p in procs:
        p.join()


def claim(folder: Path) -> bool:
    """Take the run in ``folder`` for this process (a lock file beside it); a dead local
    owner's claim is taken over. True if this process holds the claim."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    lock = folder.parent / f".{folder.name}.claim"
    for _ in range(2):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            try:
                owner = lock.read_text().strip()
                host, pid = owner.rsplit(":", 1)
                int(pid)
            except (OSError, ValueError):
                return False
            if dead_local_worker(owner):
                lock.unlink(missing_ok=True)
                continue
            return owner == worker_id()
        with os.fdopen(fd, "w") as f:
            f.write(worker_id())
        return True
    return False


def release(folder: Path) -> None:
    """Drop this process's claim on ``folder``."""
    (folder.parent / f".{folder.name}.claim").unlink(missing_ok=True)
