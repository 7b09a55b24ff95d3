"""What every file fastnn writes or reads shares (its own format in saving.py, Keras' in
keras_format.py, ONNX in export.py): paths of any kind, one atomic write, and the checks of
parsed JSON and of the values quoted in error messages."""
import contextlib
import os
import signal
import stat
import tempfile
import threading


def path_str(filepath):
    """filepath (str, bytes or os.PathLike) as a str."""
    return os.fsdecode(os.fspath(filepath))


class _Terminated(BaseException):
    """Raised by the temporary SIGTERM handler: unwinds a write so its cleanup runs."""


@contextlib.contextmanager
def _sigterm_unwinds():
    """While the body runs in the main thread, SIGTERM raises _Terminated instead of killing
    the process at once, so `except BaseException` cleanups run; then the previous (default)
    handler is restored and the signal delivered again, so the process still ends by SIGTERM.
    Only the default handler is replaced: a program's own Python handler already runs as an
    ordinary callback (whatever it raises unwinds the write), and an ignored SIGTERM stays
    ignored."""
    if (threading.current_thread() is not threading.main_thread()
            or signal.getsignal(signal.SIGTERM) != signal.SIG_DFL):
        yield
        return
    fired = []

    def on_sigterm(signum, frame):
        if not fired:  # a second SIGTERM must not interrupt the cleanup of the first
            fired.append(signum)
            raise _Terminated
    signal.signal(signal.SIGTERM, on_sigterm)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        if fired:
            signal.raise_signal(signal.SIGTERM)


def write_atomic(filepath, write):
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
    with _sigterm_unwinds():
        try:
            fd, tmp = tempfile.mkstemp(prefix=".fastnn-", suffix=".tmp",
                                       dir=os.path.dirname(target))
            with os.fdopen(fd, "wb") as f:
                write(f)
                f.flush()
                os.fsync(f.fileno())
            os.chmod(tmp, mode)
            os.replace(tmp, target)
        except BaseException:
            if tmp is not None and os.path.exists(tmp):
                os.unlink(tmp)
            raise


def short(value):
    """repr(value), cut to 80 characters (a file's values quoted in an error message)."""
    r = repr(value)
    return r if len(r) <= 80 else r[:77] + "..."


def json_depth(value, limit):
    """The nesting depth of parsed JSON, counted level by level (no recursion), up to limit + 1."""
    depth, level = 0, [value]
    while level and depth <= limit:
        depth += 1
        level = [v for c in level if isinstance(c, (dict, list))
                 for v in (c.values() if isinstance(c, dict) else c)]
    return depth
