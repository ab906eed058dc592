"""The converter's user-facing errors: one line each, shown without a traceback by the CLI."""


class ConvertError(Exception):
    """A conversion that cannot proceed; the message says what to fix."""


class UnsafePickleError(ConvertError):
    """A pickle asked for something beyond plain data (a class, a function, ...)."""


class UnknownCharsError(ConvertError, ValueError):
    """Text holds characters a char-level vocabulary cannot encode."""

    def __init__(self, chars: list[str]):
        self.chars = chars
        shown = ", ".join(repr(c) for c in chars)
        super().__init__(f"characters not in the model's vocabulary: {shown}")
