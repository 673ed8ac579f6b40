"""The one exception type the command line turns into a one-line error."""


class E2TError(Exception):
    """A user-facing error: bad input, missing data, a corrupt file.

    The CLI prints ``e2t: error: <message>`` and exits non-zero, with no traceback.
    The message must name the thing that is wrong and, where it can, what to do.
    """
