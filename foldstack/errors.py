"""The errors a user can cause, and how every stage's command line reports them: one line, no traceback.

Light on purpose (no numpy, no pandas): the Makefile's config readers import it at every `make`.
"""
from __future__ import annotations

import errno
import functools
import os
import signal
import sys


class InputError(ValueError):
    """Bad user input; the message is one line naming the file, row and column."""


class ConfigError(InputError):
    """A config file is wrong; the message names the file and the key."""


class OutputError(InputError):
    """An artefact could not be written (disk full, read-only folder); the earlier artefact is left intact."""


# A write that fails for one of these is the machine's state, not a bug: reported in one line.
WRITE_ERRNOS = {errno.ENOSPC, errno.EROFS, errno.EACCES, errno.EPERM, errno.EDQUOT, errno.EFBIG}


def is_write_failure(err: OSError) -> bool:
    # pyarrow's OSErrors carry the reason in the message only
    return err.errno in WRITE_ERRNOS or any(s in str(err) for s in ("No space left", "Read-only file system"))


def one_line_errors(main):
    """Decorate a stage's main(argv): an InputError (bad file, bad config, failed write) exits with `error: ...`."""
    @functools.wraps(main)
    def wrapper(argv=None):
        try:
            return main(argv)
        except InputError as err:
            sys.exit(f"error: {err}")
    return wrapper


_reached: dict[str, int] = {}


def kill_point(name: str) -> None:
    """Fault injection for the kill campaign (tests/test_kill.py): with FOLDSTACK_KILL_AT=name (or name#n) the
    process SIGKILLs itself the first (n-th) time it reaches this point, after appending the name to the file
    FOLDSTACK_KILL_LOG. Points: write:<folder>/<file> (written to its temporary name, not yet renamed),
    wrote:<folder>/<file> (renamed), train-step (after an optimizer step). Without the variable: one lookup."""
    want = os.environ.get("FOLDSTACK_KILL_AT")
    if not want or want.partition("#")[0] != name:
        return
    _reached[name] = _reached.get(name, 0) + 1
    if _reached[name] == int(want.partition("#")[2] or 1):
        if os.environ.get("FOLDSTACK_KILL_LOG"):
            with open(os.environ["FOLDSTACK_KILL_LOG"], "a") as log:
                log.write(f"{want} pid {os.getpid()}\n")
        os.kill(os.getpid(), signal.SIGKILL)
