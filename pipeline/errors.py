"""The one exception type for mistakes a user can fix; the CLI prints it as one line."""


class MsafError(Exception):
    """An expected, user-fixable problem: bad input, bad config, missing file.

    The message must say what is wrong and what to do about it.
    """
