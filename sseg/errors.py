"""Errors that jobs turn into a one-line message and exit code 2."""


class SsegError(Exception):
    """A user-facing problem (bad config, missing file, bad input). Message is one line."""


class ConfigError(SsegError):
    pass


class CheckpointError(SsegError):
    pass


class DataError(SsegError):
    pass


def first_line(exc: BaseException) -> str:
    """An exception's message cut to its first line, or its type name when the message is empty."""
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]
