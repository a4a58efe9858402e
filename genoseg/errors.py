"""Errors that the CLI reports as one line (no traceback) with a non-zero exit code."""


class GenosegError(Exception):
    """A user-facing error: bad input file, option or configuration.

    The message should name the file (and line or contig) or the option at fault.
    """
