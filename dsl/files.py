"""Which files a ruleset is made of, and reading them: regular files only, of a bounded size.

A ruleset is one file, or a directory searched recursively for ``*.rules`` files, read
in the order of their paths relative to the root (Unicode code points). A link to a file
is followed; a link to a directory is not walked into (so a loop of links ends). Only
regular files are read:
a ``.rules`` name that is a FIFO, a device (``/dev/zero``), a socket or a directory is a
load error at ``PATH:1:1``, never opened for reading in a way that could block or read
without end. A file larger than ``MAX_FILE_BYTES`` is a load error too; the size is read
from the open file and at most that many bytes (plus one) are read, so a file that grows
while it is read cannot exceed it either.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

RULE_SUFFIX = ".rules"
# 32 MiB: five times the largest ruleset seen in practice (5.9 MB, 52,000 rules), small
# enough that a load's memory stays bounded. NBA_MAX_RULE_FILE_BYTES changes it.
DEFAULT_MAX_FILE_BYTES = 32 * 1024 * 1024


def max_file_bytes() -> int:
    value = os.environ.get("NBA_MAX_RULE_FILE_BYTES", "").strip()
    try:
        return int(value) if value else DEFAULT_MAX_FILE_BYTES
    except ValueError:
        return DEFAULT_MAX_FILE_BYTES


class RuleFileError(Exception):
    """A rule file that cannot be read; its message is the load error's."""


def rule_files(root: str | os.PathLike) -> list[str]:
    """The rule files of a ruleset, in declaration order, as paths that start with ``root``.

    ``root`` itself, when it is not a directory (whatever its name and type: reading it
    reports what it is)."""
    root = os.fspath(root)
    if not os.path.isdir(root):
        return [root]
    return files_under(root, RULE_SUFFIX)


def files_under(root: str, suffix: str) -> list[str]:
    """Files below ``root`` whose names end in ``suffix``, in the order of their paths relative
    to ``root`` (Unicode code points), as paths that start with ``root``. Names that are not
    regular files (FIFOs, devices, sockets, broken links) are listed too, so that reading
    them reports what they are."""
    found = []
    for directory, _dirs, files in os.walk(root, followlinks=False):
        for name in files:
            if name.endswith(suffix):
                full = os.path.join(directory, name)
                found.append((Path(os.path.relpath(full, root)).as_posix(), full))
    return [full for _rel, full in sorted(found)]


def _kind(mode: int) -> str:
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe)"
    if stat.S_ISCHR(mode):
        return "a character device"
    if stat.S_ISBLK(mode):
        return "a block device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISDIR(mode):
        return "a directory"
    return "not a regular file"


def read_rule_file(path: str, limit: int | None = None) -> bytes:
    """The bytes of a regular file of at most ``limit`` bytes; RuleFileError otherwise.

    The file is opened without blocking (a FIFO with no writer would block an ordinary
    open) and checked on the open descriptor, so that it cannot be swapped between the
    check and the read.
    """
    limit = max_file_bytes() if limit is None else limit
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NOCTTY", 0))
    except OSError as exc:
        raise RuleFileError(f"cannot read the file: {exc.strerror}") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise RuleFileError(f"{_kind(info.st_mode)}, not a regular file: only regular files are read")
        if info.st_size > limit:
            raise RuleFileError(_too_large(info.st_size, limit))
        chunks = []
        size = 0
        while size <= limit:
            chunk = os.read(fd, min(limit + 1 - size, 1 << 20))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        if size > limit:
            raise RuleFileError(_too_large(size, limit))
        return b"".join(chunks)
    except OSError as exc:
        raise RuleFileError(f"cannot read the file: {exc.strerror}") from None
    finally:
        os.close(fd)


def _too_large(size: int, limit: int) -> str:
    return (
        f"the file is too large ({size:,} bytes or more; a rule file holds at most {limit:,} bytes): "
        "split it into several files, or raise NBA_MAX_RULE_FILE_BYTES"
    )


def decode_rule_text(data: bytes) -> str:
    """UTF-8 text, a leading BOM dropped; UnicodeDecodeError when it is not UTF-8."""
    return data.decode("utf-8-sig")
