"""What a command reports as one line: the user's input, files or machine, not a bug in the code.

Every command of the project (`ganimator-*`, `ganimator-sweep`, `ganimator-compare`) runs its body
through `run_command`: a `UserError`, a file that is missing or in the way, or a full or
read-only disk ends in `error: <message>` and exit status 2; anything else is a bug and shows its
traceback. It also decides how a command stops: SIGINT and SIGTERM both end it as Ctrl-C does,
and output cut short by a closed pipe (`| head`) ends it quietly.
"""
from __future__ import annotations

import errno
import os
import signal
import sys
from typing import Callable


class UserError(Exception):
    """Bad input or a state the user can fix; the message names the file, key or value."""


# The file errors a user causes; other OSErrors are user errors only for the errnos below.
FILE_ERRORS = (FileExistsError, FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError)
MACHINE_ERRNOS = (errno.EROFS, errno.ENOSPC, errno.EDQUOT)  # a read-only mount, a full disk or quota


def is_user_error(e: BaseException) -> bool:
    return isinstance(e, (UserError, *FILE_ERRORS)) or (isinstance(e, OSError) and e.errno in MACHINE_ERRNOS)


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def stop_on_signals() -> None:
    """SIGINT and SIGTERM raise KeyboardInterrupt in this process, whatever it inherited.

    A process started with SIGINT ignored (every `cmd &` of a non-interactive shell, some
    supervisors) keeps it ignored: Python installs its Ctrl-C handler only where SIGINT was at its
    default. Without this, `kill -INT PID` would never stop such a command. SIGTERM, a service
    manager's or Ray's job stop, ends it as Ctrl-C does, with the same cleanup.
    """
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _interrupt)


def _stdout_reader_left() -> bool:
    """Whether stdout is a pipe whose reading end is closed (poll reports an error on it)."""
    import select

    try:
        poller = select.poll()
        poller.register(sys.stdout.fileno(), select.POLLOUT)
        return any(events & select.POLLERR for _, events in poller.poll(0))
    except (OSError, ValueError):
        return False


def run_command(main: Callable[[], int | None],
                interrupted: str = "interrupted: the last checkpoint is kept; continue with resume=true") -> None:
    """Run a command's body and exit: 0 (or its return value), 2 with one line for a user error,
    130 on Ctrl-C or SIGTERM with `interrupted`; a bug keeps its traceback."""
    stop_on_signals()
    try:
        code = main()
        sys.stdout.flush()  # inside the try: a reader that left shows here, not as a message at exit
    except KeyboardInterrupt:
        print(interrupted, file=sys.stderr)
        sys.exit(130)
    except BrokenPipeError:
        if not _stdout_reader_left():  # another pipe (a socket, a child's): a bug to show
            raise
        # The reader (`| head`) left: nothing more can be shown. Python would report the failed
        # flush of stdout at exit, so stdout goes to /dev/null first.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(141)  # as a shell reports a process ended by SIGPIPE
    except Exception as e:
        if not is_user_error(e):
            raise
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    sys.exit(code or 0)
