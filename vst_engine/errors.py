"""User-facing errors: one line, no traceback, non-zero exit from the CLI."""


class VstError(Exception):
    """A problem with the user's input or environment, reported as one line."""
