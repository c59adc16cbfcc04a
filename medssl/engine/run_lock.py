"""One live run per run folder: a lock file naming its owner (PID and host).

Two runs writing one folder interleave their config, metrics, checkpoints and encoder, and each
reports its own result path although the folder ends with the other's files. A run therefore
creates ``run_dir/.medssl-run.lock`` before it writes anything, in one atomic step
(``O_CREAT | O_EXCL``), holding ``{"pid", "host", "started"}``; it removes the file when it
ends, however it ends (an exception included).

A lock found in place is judged:

* owned by a live process on this host: the folder is in use, :class:`~medssl.errors.RunError`
  names the owner;
* owned by a process of this host that no longer exists (a run killed with ``kill -9``, a machine
  restarted): the lock is stale; a warning names it and the new run takes it over;
* owned by another host: its process cannot be checked from here, so the run is refused; the
  error says which host and that the file may be deleted once that run is known to be gone;
* unreadable (not the JSON written here): refused, naming the file.

Gap filled: ``fcntl.flock`` locks are released by the kernel on exit (no stale state), but are not
reliable on the network file systems run folders of multi-machine jobs live on, and they say
nothing about who holds them; a PID file with a liveness check does both.

Example:
    >>> import tempfile
    >>> folder = tempfile.mkdtemp()
    >>> with RunFolderLock(folder) as lock:
    ...     lock.held
    True
    >>> (Path(folder) / LOCK_FILE).exists()
    False
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
from pathlib import Path
from typing import Any

from medssl.errors import RunError

logger = logging.getLogger(__name__)

LOCK_FILE = ".medssl-run.lock"


def process_alive(pid: int) -> bool:
    """Whether process ``pid`` exists on this host (``kill(pid, 0)``; a process of another user counts)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _describe(owner: dict[str, Any]) -> str:
    started = owner.get("started")
    when = f" since {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(started))}" if isinstance(started, (int, float)) else ""
    return f"PID {owner.get('pid')} on host {owner.get('host')}{when}"


class RunFolderLock:
    """The lock of one run folder (see the module docstring); a context manager.

    Args:
        run_dir: the run folder (must exist).
    """

    def __init__(self, run_dir: str | os.PathLike):
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / LOCK_FILE
        self.held = False
        self._owner: dict[str, Any] = {}

    def acquire(self) -> "RunFolderLock":
        """Take the lock; take over a stale one (with a warning); raise :class:`RunError` otherwise."""
        for _ in range(3):  # a stale lock removed by us, or a racing run, then one more try
            if self._create():
                return self
            owner = self._read_owner()
            if owner is None:  # it vanished between our try and the read: try again
                continue
            host, pid = owner.get("host"), owner.get("pid")
            if host != socket.gethostname():
                raise RunError(
                    f"run folder {self.run_dir} is in use by {_describe(owner)} (lock {self.path}); this machine "
                    "cannot check a process of another host: wait for that run, choose another --run-dir, or "
                    "delete the lock file if you know that run has ended"
                )
            if isinstance(pid, int) and process_alive(pid):
                raise RunError(
                    f"run folder {self.run_dir} is in use by {_describe(owner)} (lock {self.path}): wait for "
                    "that run to end or choose another --run-dir"
                )
            logger.warning("run folder %s: stale lock of %s (the process no longer exists); taking it over",
                           self.run_dir, _describe(owner))
            try:
                self.path.unlink()
            except FileNotFoundError:
                pass
            except OSError as exc:
                raise RunError(f"cannot remove the stale lock {self.path} ({exc.strerror or exc})") from None
        raise RunError(f"cannot take the lock {self.path}: another run keeps taking it")

    def _create(self) -> bool:
        self._owner = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.time()}
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            return False
        except OSError as exc:
            raise RunError(f"cannot use {self.run_dir} as the run folder: cannot write its lock file "
                           f"({exc.strerror or exc})") from None
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write(json.dumps(self._owner))
        except OSError as exc:
            self.path.unlink(missing_ok=True)
            raise RunError(f"cannot use {self.run_dir} as the run folder: cannot write its lock file "
                           f"({exc.strerror or exc})") from None
        self.held = True
        return True

    def _read_owner(self) -> dict[str, Any] | None:
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise RunError(f"cannot read the lock {self.path} of run folder {self.run_dir} ({exc.strerror or exc})") from None
        try:
            owner = json.loads(text)
        except ValueError:
            owner = None
        if not isinstance(owner, dict) or "pid" not in owner or "host" not in owner:
            raise RunError(f"run folder {self.run_dir} has an unreadable lock {self.path}: if no run uses this "
                           "folder, delete that file")
        return owner

    def release(self) -> None:
        """Remove the lock file if this process still owns it (idempotent)."""
        if not self.held:
            return
        self.held = False
        try:
            owner = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return
        if isinstance(owner, dict) and owner.get("pid") == self._owner["pid"] and owner.get("host") == self._owner["host"]:
            self.path.unlink(missing_ok=True)

    def __enter__(self) -> "RunFolderLock":
        return self.acquire()

    def __exit__(self, *exc: Any) -> None:
        self.release()


def prepare_run_dir(run_dir: Path) -> None:
    """Create ``run_dir`` and check that files can be written in it.

    Raises:
        RunError: naming the folder and the system's reason (a parent that is a file, no permission,
            a read-only or virtual file system such as ``/proc``).
    """
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        if not os.access(run_dir, os.W_OK | os.X_OK):
            raise PermissionError(13, "Permission denied")
    except OSError as exc:
        raise RunError(f"cannot use {run_dir} as the run folder: {exc.strerror or exc}; choose a writable "
                       "--run-dir (run_dir)") from None
