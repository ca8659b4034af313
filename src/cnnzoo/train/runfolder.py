"""A run folder held by one trainer at a time: locked, known to be writable, clear of a dead writer's leftovers.

`RunFolder(path)` is a context manager the trainer enters once everything has been validated:

- it creates the folder if it is missing, and removes it again if the run fails before its first checkpoint
  (a failing start leaves nothing behind; a folder that existed is never removed);
- it takes an exclusive `fcntl.flock` on `path/.lock`, which the OS releases when the process ends in any way
  (so a lock left by a killed process is never in the way), and writes its pid there; a second trainer on the
  same folder is refused with the holder's pid;
- holding the lock, it removes the temporary files (`.NAME.*.tmp`) that an atomic write killed halfway left;
- it writes and removes a probe file, so a folder that cannot be written is found before any training, not at
  the first save.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

__all__ = ["RunFolder", "RunFolderError", "LOCK_NAME"]

LOCK_NAME = ".lock"


class RunFolderError(OSError):
    """The run folder cannot be used: another process holds it, or it cannot be written."""

    def __str__(self) -> str:
        return self.args[0] if self.args else super().__str__()


def _in_use(path, fd: int) -> str:
    holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
    return (f"the run folder {path} is in use by another cnnzoo train (pid {holder}); wait for it to finish, "
            f"stop it, or choose another --out")


def _reason(err: OSError) -> str:
    return err.strerror or str(err)


class RunFolder:
    def __init__(self, path: str | os.PathLike, owner: bool = True):
        """`owner`: this process writes the folder (rank 0 of a distributed run; the others only read it)."""
        self.path = Path(path)
        self.owner = owner
        self.created = False
        self.removed_tmp: list[str] = []
        self._fd: int | None = None

    def __enter__(self) -> RunFolder:
        if not self.owner:
            return self
        self.created = not self.path.exists()
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise RunFolderError(f"cannot create the run folder {self.path}: {_reason(err)}; choose another "
                                 f"--out") from None
        try:
            self._lock()
            self._clean()
            self._probe()
        except BaseException:
            self._release(failed=True)
            raise
        return self

    def __exit__(self, kind, error, tb) -> None:
        from cnnzoo.train.health import TrainingDiverged

        # a diverged run keeps its folder (config.json says what diverged); any other failure before the first
        # checkpoint removes a folder this run created
        self._release(failed=error is not None and not isinstance(error, TrainingDiverged))

    @staticmethod
    def refuse_if_held(path: str | os.PathLike) -> None:
        """Raise RunFolderError now if another live process holds the folder (checked again when it is taken)."""
        import fcntl

        lock = Path(path) / LOCK_NAME
        try:
            fd = os.open(lock, os.O_RDONLY)
        except OSError:  # no lock file (no run yet), or unreadable: taking the lock later says what is wrong
            return
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RunFolderError(_in_use(path, fd)) from None
        finally:
            os.close(fd)

    def _lock(self) -> None:
        import fcntl

        lock = self.path / LOCK_NAME
        try:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as err:
            raise RunFolderError(f"the run folder {self.path} is not writable ({_reason(err)} on {lock.name}); "
                                 f"make it writable or choose another --out") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            message = _in_use(self.path, fd)
            os.close(fd)
            raise RunFolderError(message) from None
        self._fd = fd
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)

    def _clean(self) -> None:
        """Temporary files of an atomic write that never finished (no live writer: the lock is ours)."""
        for tmp in self.path.glob(".*.tmp"):
            if tmp.is_file():
                tmp.unlink(missing_ok=True)
                self.removed_tmp.append(tmp.name)

    def _probe(self) -> None:
        try:
            fd, name = tempfile.mkstemp(dir=self.path, prefix=".probe.", suffix=".tmp")
            os.close(fd)
            os.unlink(name)
        except OSError as err:
            raise RunFolderError(f"the run folder {self.path} is not writable ({_reason(err)}); make it writable "
                                 f"or choose another --out") from None

    def _release(self, failed: bool) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor releases the flock
            self._fd = None
        if failed and self.created and not (self.path / "last.pt").exists():
            shutil.rmtree(self.path, ignore_errors=True)
