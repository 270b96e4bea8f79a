"""User-facing errors. Anything raised as UserError is printed as one message and exits with code 2."""

from __future__ import annotations


class UserError(Exception):
    """Bad input from the user: a file, key or value that must be fixed. Never shown as a traceback.

    Build the message as: where (file / key / line), what was wrong, how to fix it.
    """

    exit_code = 2

    def __init__(self, message: str, *, where: str | None = None, fix: str | None = None) -> None:
        self.where = where
        self.fix = fix
        parts = [f"{where}: {message}" if where else message]
        if fix:
            parts.append(f"Fix: {fix}")
        super().__init__(" ".join(parts))
