"""Where results go: output paths checked before any work, files written atomically or not at all.

:func:`atomic_write` writes a regular file through a hidden temporary file beside it
(``.NAME.PID.HEX.tmp``), renamed into place only when the block ends without error; inside
:func:`write_together` the renames wait until that block ends, so the files appear together.

An output that is not a regular file is never replaced. A character device or a FIFO
(``/dev/null``, ``mkfifo``, or a symbolic link to one) and an open descriptor named as a file
(``/dev/stdout``, ``/dev/stderr``, ``/dev/fd/N``) are written through, like ``sort -o /dev/null``:
the bytes are kept in an anonymous temporary file and written to the device only when the
block succeeds, so a failed run writes nothing there either. A block device or a socket is
refused (``E121``).

Disk full (``ENOSPC``, ``EDQUOT``, ``EFBIG``) while writing is ``E125``; a file name too long
for the file system is ``E121`` before any work (:func:`check_outputs`). A temporary file left by
a run killed with SIGKILL (SIGINT and SIGTERM remove theirs on the way out) is removed by the
next write to the same output, once its process is gone (:func:`remove_stale_temps`).

:func:`to_json` is the one rendering of a result document (``rank``, ``audit``, ``-o``): sorted keys,
floats rounded by :func:`round_floats`.
"""

from __future__ import annotations

import contextlib
import contextvars
import errno
import io
import json
import math
import os
import re
import secrets
import stat
import sys
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Any

from .errors import InputError, input_error

try:  # the lock that tells a live writer's temporary file from a dead one's (POSIX)
    import fcntl
except ImportError:  # pragma: no cover - Windows: stale temporary files are left alone
    fcntl = None  # type: ignore[assignment]

#: errno values that mean the file system has no room for the output.
NO_SPACE_ERRNOS = frozenset(e for e in (errno.ENOSPC, getattr(errno, "EDQUOT", None), errno.EFBIG) if e is not None)
#: Longest file name (bytes) assumed where the file system does not say (``os.pathconf``).
DEFAULT_NAME_MAX = 255
#: Paths that name an open descriptor of this process (``/dev/stdout`` links to ``/proc/self/fd/1``).
_DESCRIPTOR_RE = re.compile(r"/(?:dev/fd|proc/self/fd|proc/thread-self/fd)/(\d+)")
#: What follows ``.NAME.`` in a temporary file's name: the writer's process id and a random part.
_TEMP_TAIL_RE = re.compile(r"(\d{1,10})\.[0-9a-f]{8}\.tmp")
#: Bytes a temporary file's name adds to the output's name: ``.``, ``.PID`` (up to 10 digits), ``.HEX8.tmp``.
_TEMP_EXTRA = 1 + 11 + 13


# -- what an output path names ---------------------------------------------------------------------------
def named_descriptor(path: str | os.PathLike) -> int | None:
    """The descriptor ``N`` when ``path`` is, or links to, ``/dev/fd/N`` or ``/proc/self/fd/N``
    (``/dev/stdout`` is 1, ``/dev/stderr`` 2); else None."""
    current = os.path.abspath(path)
    for _ in range(40):  # the kernel's own limit on symbolic links followed
        match = _DESCRIPTOR_RE.fullmatch(current)
        if match:
            return int(match[1])
        try:
            link = os.readlink(current)
        except OSError:
            return None
        current = os.path.normpath(os.path.join(os.path.dirname(current), link))
    return None


def output_kind(path: str | os.PathLike) -> str:
    """How an output is written: ``"file"`` (a regular file, or none yet: replaced atomically),
    ``"descriptor"`` (an open descriptor named as a file) or ``"device"`` (a character device or FIFO,
    written through).

    Raises
    ------
    InputError
        ``E121`` for a block device or a socket (never written), or a path the system cannot look up.
    """
    if named_descriptor(path) is not None:
        return "descriptor"
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return "file"
    except OSError as exc:
        if exc.errno == errno.ENAMETOOLONG:  # no such file can exist; check_outputs says which name
            return "file"
        raise input_error("E121", path=path, detail=exc.strerror or str(exc)) from None
    if stat.S_ISCHR(mode) or stat.S_ISFIFO(mode):
        return "device"
    if stat.S_ISBLK(mode) or stat.S_ISSOCK(mode):
        what = "a block device" if stat.S_ISBLK(mode) else "a socket"
        raise input_error("E121", path=path, detail=f"it is {what}; only files, character devices and FIFOs are "
                          "written")
    return "file"


def _identity(path: Path) -> tuple[int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_dev, st.st_ino


def check_outputs(outputs: Iterable[str | os.PathLike | None],
                  inputs: Iterable[str | os.PathLike | None] = ()) -> None:
    """Check, before any work, that every output can be written and overwrites nothing it must not.

    An output may not be (through symbolic or hard links) one of the ``inputs`` or another of the
    ``outputs``; its directory, or the nearest existing ancestor when the directory is still to be
    created, must be a directory where a file can be created (a probe file is created there and
    removed at once), and every name on the path must fit the file system. A character device, a FIFO
    or an open descriptor (``/dev/null``, ``/dev/stdout``) is written through: it must be writable, and
    may be named by several outputs. Nothing else is created or changed.

    Raises
    ------
    InputError
        ``E120`` naming the clash, or ``E121`` saying why the path cannot be written.
    """
    taken: list[tuple[Path, tuple[int, int] | None, str]] = []
    for path in inputs:
        if path is not None:
            path = Path(path)
            taken.append((Path(os.path.realpath(path)), _identity(path), f"the input {path}"))
    for path in outputs:
        if path is None:
            continue
        path = Path(path)
        kind = output_kind(path)
        real, ident = Path(os.path.realpath(path)), _identity(path)
        for other_real, other_ident, role in taken:
            if real == other_real or (ident is not None and ident == other_ident):
                raise input_error("E120", path=path, other=role)
        if kind != "file":
            _check_writable_device(path, kind)
            continue  # /dev/null for two outputs is fine
        taken.append((real, ident, f"the output {path}"))
        if os.path.isdir(path):
            raise input_error("E121", path=path, detail="it is a directory")
        _check_writable_dir(path, real.parent)


def _check_writable_device(path: Path, kind: str) -> None:
    if kind == "descriptor":
        number = named_descriptor(path)
        assert number is not None
        try:
            flags = fcntl.fcntl(number, fcntl.F_GETFL) if fcntl is not None else os.O_WRONLY
        except OSError:
            raise input_error("E121", path=path, detail=f"descriptor {number} is not open") from None
        if flags & os.O_ACCMODE == os.O_RDONLY:
            raise input_error("E121", path=path, detail=f"descriptor {number} is open for reading only")
    elif not os.access(path, os.W_OK):
        raise input_error("E121", path=path, detail="permission denied")


def _check_writable_dir(path: Path, parent: Path) -> None:
    existing = parent
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise input_error("E121", path=path, detail=f"{existing} is not a directory")
    _check_name_lengths(path, existing)
    try:  # the only honest test (os.access says yes to root, no to some network file systems)
        fd, probe = tempfile.mkstemp(prefix=".probe.", dir=existing)
    except OSError as exc:
        raise input_error("E121", path=path, detail=f"{existing}: {exc.strerror or exc}") from None
    os.close(fd)
    os.unlink(probe)


def _name_max(directory: Path) -> int:
    try:
        return os.pathconf(directory, "PC_NAME_MAX")
    except (OSError, ValueError, AttributeError):
        return DEFAULT_NAME_MAX


def _check_name_lengths(path: Path, existing: Path) -> None:
    """E121 when a name still to be created under ``existing`` is longer than the file system allows."""
    limit = _name_max(existing)
    real = Path(os.path.realpath(path))
    try:
        new_parts = real.relative_to(os.path.realpath(existing)).parts
    except ValueError:
        new_parts = (real.name,)
    for name in new_parts:
        size = len(os.fsencode(name))
        if size > limit:
            shown = str(path) if len(str(path)) <= 120 else f"{str(path)[:60]}...{str(path)[-40:]}"
            raise input_error("E121", path=shown,
                              detail=f"a file name is too long ({size} bytes; the file system allows {limit})")


# -- temporary files -------------------------------------------------------------------------------------
def _temp_prefix(target: Path) -> str:
    """``.NAME.``, the name cut (at a character) so that a temporary file's whole name still fits."""
    room = _name_max(target.parent if target.parent.is_dir() else Path(".")) - _TEMP_EXTRA
    name = target.name
    while len(os.fsencode(name)) > room and name:
        name = name[:-1]
    return f".{name}."


def _create_temp(target: Path) -> tuple[int, str]:
    """A new, exclusively created file beside ``target`` (``.NAME.PID.HEX.tmp``), opened for writing and
    locked while this process lives, so that a later run can tell it from one a killed run left.

    Like :func:`tempfile.mkstemp`, but created with mode 0o666 so that the kernel applies the
    umask (and a directory's default ACL) as for any file the user writes: mkstemp makes 0600,
    and setting the mode afterwards needs the umask, which can only be read by changing it.
    """
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_BINARY", 0)
    prefix = _temp_prefix(target)
    for _ in range(100):
        tmp = str(target.parent / f"{prefix}{os.getpid()}.{secrets.token_hex(4)}.tmp")
        try:
            fd = os.open(tmp, flags, 0o666)
        except FileExistsError:
            continue
        if fcntl is not None:
            with contextlib.suppress(OSError):  # a file system without locks: the file is never taken for stale
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return fd, tmp
    raise FileExistsError(errno.EEXIST, "no unused temporary file name", str(target.parent))


def _process_gone(pid: int) -> bool:
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except (OSError, OverflowError):  # alive under another user, or not a process id at all
        return pid <= 0 or pid > 2**22
    return False


def remove_stale_temps(path: str | os.PathLike) -> list[Path]:
    """Remove the temporary files that runs killed with SIGKILL left beside ``path``; return them.

    Only files named as this module names them (``.NAME.PID.HEX.tmp``), regular, owned by this user,
    whose process is gone and which no process holds locked: a live writer's file (in this or in
    another container sharing the folder) stays locked until it ends. Nothing else is touched.
    """
    target = Path(path)
    if fcntl is None:
        return []
    prefix = _temp_prefix(target)
    try:
        names = [n for n in os.listdir(target.parent) if n.startswith(prefix)]
    except OSError:
        return []
    removed = []
    for name in names:
        match = _TEMP_TAIL_RE.fullmatch(name[len(prefix):])
        if match and _process_gone(int(match[1])) and _remove_if_unlocked(target.parent / name):
            removed.append(target.parent / name)
    return removed


def _remove_if_unlocked(tmp: Path) -> bool:
    try:
        fd = os.open(tmp, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | os.O_NONBLOCK)
    except OSError:
        return False
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_uid != os.geteuid():
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:  # locked: its writer still runs
            return False
        now = os.lstat(tmp)
        if (now.st_dev, now.st_ino) != (st.st_dev, st.st_ino):
            return False
        os.unlink(tmp)
        return True
    except OSError:
        return False
    finally:
        os.close(fd)


# -- writing ---------------------------------------------------------------------------------------------
class _Pending:
    """A finished write waiting to appear: ``commit()`` puts it in place, ``discard()`` drops it."""

    def __init__(self, target: Path, *, tmp: str | None = None, fd: int | None = None,
                 spool: IO[bytes] | None = None) -> None:
        self.target, self.tmp, self.fd, self.spool = target, tmp, fd, spool

    def commit(self) -> None:
        try:
            if self.tmp is not None:
                if self.spool is not None:
                    self.spool.close()  # flushes; the descriptor stays open (closefd=False)
                os.replace(self.tmp, self.target)
            else:
                _write_through(self.target, self.spool)
        except BaseException as exc:
            self.discard()
            if isinstance(exc, OSError):
                raise write_error(exc, self.target) from None
            raise
        self.close()

    def discard(self) -> None:
        if self.tmp is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.tmp)
        self.close()

    def close(self) -> None:
        fd, spool, self.fd, self.spool = self.fd, self.spool, None, None
        if spool is not None:
            with contextlib.suppress(OSError):  # a failed flush: the file is dropped or already reported
                spool.close()
        if fd is not None:
            os.close(fd)  # releases the lock


def _write_through(target: Path, spool: IO[bytes] | None) -> None:
    """Copy the spooled bytes to the descriptor or device ``target`` names (nothing is created or renamed)."""
    assert spool is not None
    number = named_descriptor(target)
    if number in (1, 2):
        for stream in (sys.stdout, sys.stderr):  # what was printed before comes first
            with contextlib.suppress(Exception):
                stream.flush()
    fd = number if number is not None else os.open(target, os.O_WRONLY | getattr(os, "O_NOCTTY", 0)
                                                    | getattr(os, "O_CLOEXEC", 0))
    try:
        spool.seek(0)
        while chunk := spool.read(1 << 20):
            view = memoryview(chunk)
            while view:
                view = view[os.write(fd, view):]
    finally:
        if number is None:
            os.close(fd)


def write_error(exc: OSError, path: str | os.PathLike) -> InputError:
    """The coded error for an output that could not be written: E125 when the disk is full, else E121."""
    detail = exc.strerror or str(exc)
    if exc.errno in NO_SPACE_ERRNOS:
        return input_error("E125", path=path, detail=detail)
    return input_error("E121", path=path, detail=detail)


#: Writes finished inside :func:`write_together`, put in place when it ends.
_PENDING: contextvars.ContextVar[list[_Pending] | None] = contextvars.ContextVar("_PENDING", default=None)


@contextlib.contextmanager
def write_together() -> Iterator[None]:
    """Files written with :func:`atomic_write` inside this block appear together when it ends
    without error; on any error or interruption none of them appears (and no temporary file stays)."""
    if _PENDING.get() is not None:  # inside another such block: its end is this one's end
        yield
        return
    pending: list[_Pending] = []
    token = _PENDING.set(pending)
    try:
        yield
    except BaseException:
        for write in pending:
            write.discard()
        raise
    finally:
        _PENDING.reset(token)
    _commit_all(pending)


def _commit_all(pending: list[_Pending]) -> None:
    """Devices first: writing to one can fail (``/dev/full``, a closed pipe) and then no file appears;
    a rename hardly fails."""
    pending = sorted(pending, key=lambda write: write.tmp is not None)
    for done, write in enumerate(pending):
        try:
            write.commit()
        except BaseException:
            for rest in pending[done + 1:]:
                rest.discard()
            raise


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "w", encoding: str | None = "utf-8") -> Iterator[IO]:
    """Open a temporary file beside ``path`` and rename it into place only on success.

    An exception inside the block leaves no file (and no half-written one) behind. Inside
    :func:`write_together` the rename waits until the end of that block. A device, FIFO or open
    descriptor (``/dev/null``, ``/dev/stdout``) is written through on success, never replaced.

    Raises
    ------
    InputError
        ``E121`` when the output cannot be created or written, ``E125`` when the disk is full.
    """
    target = Path(path)
    if output_kind(target) != "file":
        pending = _Pending(target, spool=tempfile.TemporaryFile())  # no name: nothing stays, even after SIGKILL
    else:
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            remove_stale_temps(target)
            fd, tmp = _create_temp(target)
        except OSError as exc:
            raise write_error(exc, target) from None
        # closefd=False: closing the file leaves the descriptor, and so the lock, held until the rename
        pending = _Pending(target, tmp=tmp, fd=fd, spool=os.fdopen(fd, "wb", closefd=False))
    try:
        binary = pending.spool
        assert binary is not None
        try:
            handle = binary if "b" in mode else _KeepOpen(binary, encoding=encoding)
            yield handle
            if handle is not binary:
                handle.close()  # the text wrapper flushes into the binary file, which stays open
            binary.flush()
        except OSError as exc:
            if exc.errno not in NO_SPACE_ERRNOS:
                raise
            raise write_error(exc, target) from None
        waiting = _PENDING.get()
        if waiting is None:
            pending.commit()
        else:
            waiting.append(pending)
    except BaseException:
        pending.discard()
        raise


class _KeepOpen(io.TextIOWrapper):
    """A text wrapper whose ``close`` flushes but leaves the binary file open (it is committed later)."""

    def close(self) -> None:
        with contextlib.suppress(ValueError):  # already detached
            self.detach()


def write_jsonl(path: str | os.PathLike, rows: Iterable[dict[str, Any]]) -> int:
    """Write dictionaries as JSON Lines atomically; return how many were written."""
    count = 0
    with atomic_write(path) as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False, sort_keys=True) + "\n")
            count += 1
    return count


# -- the JSON documents the commands write ---------------------------------------------------------------
def round_floats(value: Any, digits: int = 6) -> Any:
    """Round every float in a nested structure, so JSON output is stable across platforms."""
    if isinstance(value, float):
        if math.isnan(value) or math.isinf(value):
            return None
        return round(value, digits) + 0.0  # + 0.0 turns -0.0 into 0.0
    if isinstance(value, dict):
        return {str(k): round_floats(v, digits) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [round_floats(v, digits) for v in value]
    if hasattr(value, "item") and callable(value.item):  # numpy scalars
        return round_floats(value.item(), digits)
    return value


def to_json(result: dict[str, Any]) -> str:
    """The one stable JSON rendering: sorted keys, 6-digit floats, no timestamps; characters a
    terminal would act on are escaped (the JSON decodes to the same strings)."""
    from .sanitize import json_for_terminal

    # written piece by piece: json.dumps with indent first lists every piece (for a --group-by document of
    # thousands of students, ten times the text's size)
    encoder = json.JSONEncoder(sort_keys=True, indent=2, ensure_ascii=False)
    parts: list[str] = []
    pieces: list[str] = []
    for piece in encoder.iterencode(round_floats(result)):
        pieces.append(piece)
        if len(pieces) >= 4096:
            parts.append("".join(pieces))
            pieces.clear()
    parts.append("".join(pieces))
    text = "".join(parts)
    parts.clear()
    return json_for_terminal(text)


__all__ = ["NO_SPACE_ERRNOS", "atomic_write", "check_outputs", "named_descriptor", "output_kind",
           "remove_stale_temps", "round_floats", "to_json", "write_error", "write_jsonl", "write_together"]
