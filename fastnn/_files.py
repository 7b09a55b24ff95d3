"""What every file fastnn writes or reads shares (its own format in saving.py, Keras' in
keras_format.py, ONNX in export.py): paths of any kind, one atomic write, and the checks of
parsed JSON and of the values quoted in error messages."""
from __future__ import annotations

import contextlib
import json
import math
import os
import signal
import stat
import tempfile
import threading
import zipfile
import zlib
from typing import IO, TYPE_CHECKING, Any, Callable, Iterator, NoReturn

if TYPE_CHECKING:
    from types import FrameType

    from _typeshed import StrOrBytesPath


def path_str(filepath: StrOrBytesPath) -> str:
    """filepath (str, bytes or os.PathLike) as a str."""
    return os.fsdecode(os.fspath(filepath))


class _Terminated(BaseException):
    """Raised by the temporary SIGTERM handler: unwinds a write so its cleanup runs."""


@contextlib.contextmanager
def _sigterm_unwinds() -> Iterator[Callable[[], None]]:
    """While the body runs in the main thread, SIGTERM raises _Terminated instead of killing
    the process at once, so `except BaseException` cleanups run; then the previous (default)
    handler is restored and the signal delivered again, so the process still ends by SIGTERM.
    The body gets `arm`: a SIGTERM before arm() is only recorded, and arm() raises it, so a
    signal can't unwind the body before it has recorded what its cleanup must undo.
    Only the default handler is replaced: a program's own Python handler already runs as an
    ordinary callback (whatever it raises unwinds the write), and an ignored SIGTERM stays
    ignored."""
    if (threading.current_thread() is not threading.main_thread()
            or signal.getsignal(signal.SIGTERM) != signal.SIG_DFL):
        yield lambda: None
        return
    fired: list[int] = []
    armed: list[bool] = []

    def on_sigterm(signum: int, frame: FrameType | None) -> None:
        if not fired:  # a second SIGTERM must not interrupt the cleanup of the first
            fired.append(signum)
            if armed:
                raise _Terminated

    def arm() -> None:
        armed.append(True)
        if fired:
            raise _Terminated
    signal.signal(signal.SIGTERM, on_sigterm)
    try:
        yield arm
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        if fired:
            signal.raise_signal(signal.SIGTERM)


def write_atomic(filepath: StrOrBytesPath, write: Callable[[IO[bytes]], object]) -> None:
    """Call write(f) on a new temporary file in the target's directory (through a symlink: its
    target's), then rename it over the target: a crash mid-write leaves any previous file
    whole.  Re-writing keeps the file's permission mode (a new file gets 0666 less the umask);
    the temporary file is removed on any exception, and on SIGTERM in the main thread."""
    target = os.path.realpath(path_str(filepath))
    try:
        mode = stat.S_IMODE(os.stat(target).st_mode)
    except FileNotFoundError:
        umask = os.umask(0)
        os.umask(umask)
        mode = 0o666 & ~umask  # mkstemp makes 0600
    tmp = None
    with _sigterm_unwinds() as arm:
        try:
            fd, tmp = tempfile.mkstemp(prefix=".fastnn-", suffix=".tmp",
                                       dir=os.path.dirname(target))
            with os.fdopen(fd, "wb") as f:
                arm()  # from here a SIGTERM unwinds: tmp is known to the cleanup
                write(f)
                f.flush()
                os.fsync(f.fileno())
            os.chmod(tmp, mode)
            os.replace(tmp, target)
        except BaseException:
            if tmp is not None and os.path.exists(tmp):
                os.unlink(tmp)
            raise


def short(value: object) -> str:
    """repr(value), cut to 80 characters (a file's values quoted in an error message)."""
    r = repr(value)
    return r if len(r) <= 80 else r[:77] + "..."


def json_depth(value: Any, limit: int) -> int:
    """The nesting depth of parsed JSON, counted level by level (no recursion), up to limit + 1."""
    depth, level = 0, [value]
    while level and depth <= limit:
        depth += 1
        level = [v for c in level if isinstance(c, (dict, list))
                 for v in (c.values() if isinstance(c, dict) else c)]
    return depth


# ---- reading -------------------------------------------------------------------------------

# The types a parsed JSON value is checked against (CheckedFile.check).
KINDS: dict[str, tuple[Callable[[Any], bool], str]] = {
    "int": (lambda v: type(v) is int, "an int"),
    "count": (lambda v: type(v) is int and v >= 0, "a non-negative int"),
    "number": (lambda v: type(v) in (int, float) and math.isfinite(v), "a finite number"),
    "str": (lambda v: type(v) is str, "a string"),
    "bool": (lambda v: type(v) is bool, "true or false"),
    "dict": (lambda v: type(v) is dict, "an object"),
    "list": (lambda v: type(v) is list, "a list"),
    "config": (lambda v: type(v) in (str, dict), "a name or an object"),
    "shape": (lambda v: type(v) is list and len(v) > 0
              and all(type(d) is int and d > 0 for d in v), "a list of positive ints"),
}


class CheckedFile:
    """A file being read: every error names it.  `error` is the exception a bad file raises
    (a subclass sets its format's, e.g. saving.FileFormatError)."""

    error: type[Exception] = ValueError

    def __init__(self, path: str) -> None:
        self.path = path

    def fail(self, message: str) -> NoReturn:
        raise self.error(f"{self.path!r}: {message}")

    def check(self, value: Any, kind: str, where: str, null: bool = False) -> Any:
        """value, if it is of kind (see KINDS; a trailing "?" or null=True also allows null),
        else the file's error naming where and what was received."""
        if kind.endswith("?"):
            kind, null = kind[:-1], True
        if value is None and null:
            return None
        ok, what = KINDS[kind]
        if not ok(value):
            self.fail(f"Expected {where} to be {what}{' or null' if null else ''}. Received: "
                      f"{short(value)}")
        return value


class BoundedZip(CheckedFile):
    """A ZIP archive read defensively: every entry's flags, method and sizes are checked when it
    opens, before anything is read; each read is bounded by what the caller expects.  A
    subclass names its format (`kind`, for messages) and the compression methods it accepts."""

    kind = "ZIP archive"
    methods: tuple[int, ...] = (zipfile.ZIP_STORED,)
    _OPEN_ERRORS = (zipfile.BadZipFile, OSError, ValueError, EOFError, NotImplementedError,
                    RuntimeError, OverflowError)

    def __init__(self, filepath: StrOrBytesPath) -> None:
        super().__init__(path_str(filepath))
        if not os.path.isfile(self.path):
            raise FileNotFoundError(f"No {self.kind} at {self.path!r}")
        self.size = os.path.getsize(self.path)
        try:
            self.zip = zipfile.ZipFile(self.path)
        except self._OPEN_ERRORS as e:
            self.unreadable(e)
        try:
            for info in self.zip.infolist():
                if info.flag_bits & 0x1:
                    self.fail(f"entry {info.filename!r} is encrypted; a {self.kind} never is.")
                if info.compress_type not in self.methods:
                    self.fail(f"entry {info.filename!r} uses ZIP method {info.compress_type} "
                              f"(compressed); a {self.kind} takes methods {list(self.methods)}.")
                if info.compress_type == zipfile.ZIP_STORED and info.compress_size != info.file_size:
                    self.fail(f"entry {info.filename!r} declares {info.file_size} bytes but "
                              f"stores {info.compress_size}.")
        except BaseException:
            self.zip.close()
            raise

    def unreadable(self, e: BaseException) -> NoReturn:
        """The error for a file that does not open as a ZIP archive."""
        raise self.error(f"{self.path!r} is not a readable {self.kind} (truncated, corrupted or "
                         f"another format): {e}") from None

    def entry(self, name: str, limit: int) -> zipfile.ZipInfo:
        """The ZipInfo of entry name, checked to hold at most limit bytes."""
        try:
            info = self.zip.getinfo(name)
        except KeyError:
            self.fail(f"{name} is missing (truncated, or not a {self.kind}).")
        if info.file_size > limit:
            self.fail(f"Expected {name} of at most {limit} bytes. Received: {info.file_size} "
                      "bytes")
        return info

    def read(self, name: str, limit: int) -> bytes:
        """The bytes of entry name (at most limit), read to the end (which checks its CRC)."""
        info = self.entry(name, limit)
        try:
            with self.zip.open(info) as f:
                data = f.read(limit + 1)
        except self._OPEN_ERRORS + (zlib.error,) as e:
            self.fail(f"cannot read {name} (truncated or corrupted): {e}")
        if len(data) != info.file_size:
            self.fail(f"{name} holds {len(data)} bytes; its header says {info.file_size}.")
        return data

    def read_json(self, name: str, limit: int, depth: int) -> Any:
        """Entry name parsed as JSON (at most limit bytes, nested at most depth deep)."""
        data = self.read(name, limit)
        try:
            value = json.loads(data.decode("utf-8"))
        except RecursionError:
            self.fail(f"{name} is nested too deeply.")
        except (UnicodeDecodeError, ValueError) as e:
            self.fail(f"{name} is not valid JSON: {e}")
        if json_depth(value, depth) > depth:
            self.fail(f"{name} is nested more than {depth} deep.")
        return value

    def close(self) -> None:
        self.zip.close()
