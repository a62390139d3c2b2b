"""The one exception type for mistakes a user can fix; the CLI prints it as one line."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pydantic import ValidationError


class MsafError(Exception):
    """An expected, user-fixable problem: bad input, bad config, missing file.

    The message must say what is wrong and what to do about it.
    """


def first_problem(error: ValidationError) -> str:
    """``where: what`` of a validation error's first problem, for a one-line message about a file."""
    first = error.errors()[0]
    where = ".".join(str(part) for part in first["loc"]) or "top level"
    return f"{where}: {first['msg']}"
