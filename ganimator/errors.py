"""What a command reports as one line: the user's input, files or machine, not a bug in the code.

Every command of the project (`ganimator-*`, `ganimator-sweep`, `ganimator-compare`) runs its body
through `run_command`: a `UserError`, a file that is missing or in the way, or a full or
read-only disk ends in `error: <message>` and exit status 2; anything else is a bug and shows its
traceback.
"""
from __future__ import annotations

import errno
import sys
from typing import Callable


class UserError(Exception):
    """Bad input or a state the user can fix; the message names the file, key or value."""


# The file errors a user causes; other OSErrors are user errors only for the errnos below.
FILE_ERRORS = (FileExistsError, FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError)
MACHINE_ERRNOS = (errno.EROFS, errno.ENOSPC, errno.EDQUOT)  # a read-only mount, a full disk or quota


def is_user_error(e: BaseException) -> bool:
    return isinstance(e, (UserError, *FILE_ERRORS)) or (isinstance(e, OSError) and e.errno in MACHINE_ERRNOS)


def run_command(main: Callable[[], int | None],
                interrupted: str = "interrupted: the last checkpoint is kept; continue with resume=true") -> None:
    """Run a command's body and exit: 0 (or its return value), 2 with one line for a user error,
    130 on Ctrl-C with `interrupted`; a bug keeps its traceback."""
    try:
        code = main()
    except KeyboardInterrupt:
        print(interrupted, file=sys.stderr)
        sys.exit(130)
    except Exception as e:
        if not is_user_error(e):
            raise
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    sys.exit(code or 0)
