"""What a user can cause, and the one place that decides how a command line reports it. No torch: `--help` and
the analysis stay fast.

A failure the user can fix (a path, a setting, a file, a run folder, a disk) is one of `USER_ERRORS`: a
`ValueError` (every config, layout, study, record and import error of this project is one, and names its key or
file), an `OSError` (a file missing or unreadable, a full disk) or a `UserError` (the named runtime failures:
an unreadable checkpoint, a checkpoint that does not match its config, a non-finite loss, a run folder in use).
`report_errors` runs a command's `main` and prints such a failure as one `error:` line with exit status 2;
anything else is a bug and keeps its traceback. `--debug` anywhere on the command line, or `SALT_DEBUG=1`, shows
the traceback of a user error too. `python -m salt` (and the `salt` script), `python studies/*.py` and
`python -m analysis` all go through it.
"""
from __future__ import annotations

import os
import sys
import warnings
from typing import Callable, Sequence

DEBUG_FLAG = "--debug"
DEBUG_HELP = "show the Python traceback of an error instead of one 'error:' line (also: SALT_DEBUG=1)"


class UserError(Exception):
    """A runtime failure the user can fix, raised after the command has started (e.g. during training). Its
    message names the file, key or tensor."""


USER_ERRORS: tuple[type[BaseException], ...] = (ValueError, OSError, UserError)


def debug_requested(argv: Sequence[str]) -> bool:
    return DEBUG_FLAG in argv or os.environ.get("SALT_DEBUG", "") not in ("", "0")


def one_line(error: BaseException) -> str:
    """The error's message on one line. A DataLoader worker's error arrives with the worker's traceback inside its
    message ("Caught ... in DataLoader worker process 0. Original Traceback ..."): its last line is the message.
    An OSError without a message of its own (e.g. a full disk) is named by its strerror and file."""
    text = str(error)
    if "Original Traceback" in text:
        text = [line for line in text.splitlines() if line.strip()][-1]
    elif isinstance(error, OSError) and error.strerror and not error.filename and text.startswith("[Errno"):
        text = error.strerror
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return " ".join(lines) or type(error).__name__


def warning_line(message, category, filename, lineno, line=None) -> str:
    """A warning as one `warning: Category: message` line (Python's default adds the source line that raised it)."""
    return f"warning: {category.__name__}: {message}\n"


def report_errors(main: Callable[[list[str]], int], argv: Sequence[str] | None = None) -> int:
    """main(argv) -> its exit code; a user error -> one `error: ...` line on stderr and 2 (the traceback when
    debugging); Ctrl-C -> 130. Warnings print as one line each, except when debugging. `--debug` stays in argv:
    each parser declares it (DEBUG_HELP) so --help lists it."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = debug_requested(argv)
    if not debug:
        warnings.formatwarning = warning_line
    try:
        return main(argv)
    except USER_ERRORS as error:
        if debug:
            raise
        print(f"error: {one_line(error)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        if debug:
            raise
        print("interrupted", file=sys.stderr)
        return 130
