"""The message being received: header section in memory, body streamed.

A session's memory stays bounded whatever the message size: the header section
is kept (up to ``limits.max_header_size``) so header policies can edit it, and
the body is held in memory only up to :data:`SPILL_THRESHOLD`, then written to
a staging file in the spool's ``tmp/`` directory.
"""

from __future__ import annotations

import ctypes
import errno
import io
import os
import tempfile
from typing import BinaryIO

from appliance.mail.headers import Headers
from appliance.protocol import Reply

#: Body bytes kept in memory before spilling to a staging file.
SPILL_THRESHOLD = 256 * 1024
#: A staged body moves into the queue this much at a time: the most it takes
#: twice on disk while it moves.
MOVE_CHUNK = 1024 * 1024

HEADER_TOO_LARGE = Reply(552, "5.3.4", "Message header section too large")
MESSAGE_TOO_LARGE = Reply(552, "5.3.4", "Message size exceeds fixed maximum message size")
DISK_FULL = Reply(452, "4.3.1", "Insufficient system storage, try again later")
STORAGE_FAILED = Reply(451, "4.3.0", "Could not store the message, try again later")


def storage_error(exc: OSError) -> Reply:
    """The reply for a failure to write message data: 452 when the disk is full."""
    return DISK_FULL if exc.errno in (errno.ENOSPC, errno.EDQUOT) else STORAGE_FAILED


class Body:
    """Body bytes: a memory buffer that spills to a file past the threshold."""

    def __init__(self, spill_dir: str) -> None:
        self.spill_dir = spill_dir
        self._chunks: list[bytes] = []
        self._mem = 0
        self._file: BinaryIO | None = None
        self._moved = False
        self.size = 0

    def write(self, data: bytes) -> None:
        self.size += len(data)
        if self._file is not None:
            self._file.write(data)
            return
        self._chunks.append(data)
        self._mem += len(data)
        if self._mem > SPILL_THRESHOLD:
            self._file = tempfile.TemporaryFile(dir=self.spill_dir, prefix="body-")
            self._file.write(b"".join(self._chunks))
            self._chunks = []

    def open(self) -> BinaryIO:
        """A fresh reader over the whole body."""
        self._check_not_moved()
        if self._file is None:
            return io.BytesIO(b"".join(self._chunks))
        self._file.flush()
        try:  # a file description of its own: its own offset, from the start
            return open(f"/proc/self/fd/{self._file.fileno()}", "rb")  # noqa: SIM115
        except OSError:
            reader = os.fdopen(os.dup(self._file.fileno()), "rb", closefd=True)
            reader.seek(0)
            return reader

    def copy_to(self, out: BinaryIO) -> None:
        """Append the body to ``out`` (kernel-side copy when spilled)."""
        self._transfer(out, release=False)

    def move_to(self, out: BinaryIO) -> None:
        """Append the body to ``out`` (a file on the staging file's filesystem) and
        give the staging file's blocks back as each chunk is copied, so a large
        message needs its size in free space once, not twice. The body cannot be
        read afterwards."""
        self._transfer(out, release=True)
        if self._file is not None:
            self._file.close()
            self._file = None
            self._moved = True

    def _transfer(self, out: BinaryIO, release: bool) -> None:
        self._check_not_moved()
        if self._file is None:
            out.write(b"".join(self._chunks))
            return
        self._file.flush()
        out.flush()
        src, dst = self._file.fileno(), out.fileno()
        offset, remaining = 0, self.size
        while remaining:
            n = os.copy_file_range(src, dst, min(remaining, MOVE_CHUNK), offset)
            if n == 0:
                raise OSError("short copy of the message body")
            if release:
                release = _punch_hole(src, offset, n)  # False: not on this filesystem
            offset += n
            remaining -= n

    def _check_not_moved(self) -> None:
        if self._moved:
            raise ValueError("the message body was moved into the queue")

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        self._chunks = []

    def take_over(self, other: Body) -> None:
        """Become ``other`` (a replacement body): whoever owns this Body (the
        message reader) still closes the right file."""
        self.close()
        self._chunks, self._mem, self._file, self.size = (
            other._chunks, other._mem, other._file, other.size)
        other._chunks, other._file = [], None


class Message:
    """What plugins see at end of data, and what the queue stores."""

    def __init__(self, headers: Headers, body: Body) -> None:
        self.headers = headers
        self.body = body

    @property
    def size(self) -> int:
        """Size in octets as it will be stored (headers as now edited, the blank
        line, the body)."""
        return len(self.headers.to_bytes()) + 2 + self.body.size

    def open_body(self) -> BinaryIO:
        return self.body.open()

    def replace_body(self, source: bytes | str | os.PathLike[str] | BinaryIO) -> None:
        """Replace the whole body (a milter's replace body): ``source`` is the new
        body as bytes, a file path, or a binary file read from its current
        position. Large bodies spill to the spool's staging area like received
        ones; the spool stores the new body."""
        body = Body(self.body.spill_dir)
        try:
            if isinstance(source, bytes | bytearray | memoryview):
                body.write(bytes(source))
            elif isinstance(source, str | os.PathLike):
                with open(source, "rb") as f:
                    _copy_into(f, body)
            else:
                _copy_into(source, body)
        except BaseException:
            body.close()
            raise
        self.body.take_over(body)

    def write_to(self, out: BinaryIO) -> None:
        out.write(self.headers.to_bytes() + b"\r\n")
        self.body.copy_to(out)

    def move_to(self, out: BinaryIO) -> None:
        """``write_to`` for the spool: a staged body is moved, not copied (see
        :meth:`Body.move_to`); the message cannot be read afterwards."""
        out.write(self.headers.to_bytes() + b"\r\n")
        self.body.move_to(out)

    def as_bytes(self) -> bytes:
        """The whole message in memory; for small messages and tests only."""
        buf = io.BytesIO()
        self.write_to(buf)
        return buf.getvalue()


_FALLOC_FL_KEEP_SIZE, _FALLOC_FL_PUNCH_HOLE = 0x01, 0x02
_libc = ctypes.CDLL(None, use_errno=True)
_fallocate = getattr(_libc, "fallocate", None)
if _fallocate is not None:
    _fallocate.argtypes = (ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64)


def _punch_hole(fd: int, offset: int, length: int) -> bool:
    """Free ``length`` bytes of the file at ``offset`` (Linux fallocate(2)
    FALLOC_FL_PUNCH_HOLE: tmpfs, ext4, XFS, Btrfs); False where that is not
    supported, so the caller stops trying."""
    if _fallocate is None:
        return False
    if _fallocate(fd, _FALLOC_FL_PUNCH_HOLE | _FALLOC_FL_KEEP_SIZE, offset, length) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EOPNOTSUPP, errno.ENOSYS):
        return False
    raise OSError(err, os.strerror(err))


def _copy_into(src: BinaryIO, body: Body, chunk: int = 65536) -> None:
    while data := src.read(chunk):
        body.write(data)


class MessageReader:
    """Receives DATA/BDAT content and splits it into header section and body.

    ``feed()`` returns the parsed :class:`Headers` once, when the header section
    is complete, so the session can run ``on_headers_received`` before the body.
    Size and header limits turn into ``error`` (the reply to give at the end);
    after an error the rest of the data is counted but not kept.
    """

    def __init__(self, spill_dir: str, max_size: int, max_header_size: int) -> None:
        self.body = Body(spill_dir)
        self.max_size = max_size
        self.max_header_size = max_header_size
        self.received = 0
        self.error: Reply | None = None
        self.storage_failure: OSError | None = None  # why the data could not be staged
        self.headers: Headers | None = None
        self._head = bytearray()

    def feed(self, data: bytes) -> Headers | None:
        try:
            return self._feed(data)
        except OSError as exc:  # the staging file could not be written
            self.storage_failure = exc
            self._fail(storage_error(exc))
            return None

    def _feed(self, data: bytes) -> Headers | None:
        self.received += len(data)
        if self.error is not None:
            return None
        if self.received > self.max_size:
            self._fail(MESSAGE_TOO_LARGE)
            return None
        if self.headers is not None:
            self.body.write(data)
            return None
        self._head += data
        if self._head.startswith(b"\r\n"):
            end = 0
        else:
            end = self._head.find(b"\r\n\r\n")
            if end >= 0:
                end += 2
        if end < 0:
            if len(self._head) > self.max_header_size:
                self._fail(HEADER_TOO_LARGE)
            return None
        if end > self.max_header_size:
            self._fail(HEADER_TOO_LARGE)
            return None
        return self._split(end, end + 2)

    def finish(self) -> Headers | None:
        """End of data: a message without a blank line is all header section."""
        if self.headers is None and self.error is None:
            try:
                return self._split(len(self._head), len(self._head))
            except OSError as exc:
                self.storage_failure = exc
                self._fail(storage_error(exc))
        return None

    def _split(self, end: int, body_start: int) -> Headers:
        """Header section is ``_head[:end]``; the body starts at ``body_start``
        (after the blank line). Lines that are not fields start the body."""
        headers, rest = Headers.parse(bytes(self._head[:end]))
        if rest:
            self.body.write(rest)
        if body_start < len(self._head):
            self.body.write(bytes(self._head[body_start:]))
        self._head = bytearray()
        self.headers = headers
        return headers

    def _fail(self, reply: Reply) -> None:
        self.error = reply
        self._head = bytearray()
        self.body.close()

    def close(self) -> None:
        self.body.close()
