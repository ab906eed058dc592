"""The converter's user-facing errors: one line each, shown without a traceback by the CLI."""


class ConvertError(Exception):
    """A conversion that cannot proceed; the message says what to fix."""


class UnsafePickleError(ConvertError):
    """A pickle asked for something beyond plain data (a class, a function, ...)."""
