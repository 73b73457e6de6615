"""User-facing errors: one clear line and exit code 2 (the traceback only with ``--debug``)."""

from __future__ import annotations


class UserError(Exception):
    """A mistake the user can fix (missing file, bad value, ...); the message says what and how."""


#: exit code of every user mistake
USER_ERROR_EXIT = 2
