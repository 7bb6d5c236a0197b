"""One writer per run folder: a second ``train`` into the same ``--out`` is refused.

The lock is an advisory ``flock`` on ``OUT/.lock``, held while the run writes; the operating
system drops it when the process ends in any way (kill -9 included), so a crashed run never
leaves the folder stuck. The file holds the holder's pid and host for the refusal message.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from segdecay.errors import UserError

LOCK_FILE = ".lock"


@contextmanager
def run_folder_lock(folder: Path, enabled: bool = True) -> Iterator[None]:
    """Hold ``folder``'s lock for the block (``enabled`` False: a DDP rank other than 0)."""
    try:
        import fcntl
    except ImportError:  # no flock (Windows): one writer is the user's to keep
        enabled = False
    if not enabled:
        yield
        return
    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "unknown"
            raise UserError(f"--out {folder}: another segdecay process ({holder}) is writing "
                            "this run folder; wait for it to finish or choose another "
                            "folder (nothing was written)") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)
