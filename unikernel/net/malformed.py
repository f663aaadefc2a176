"""How every parser in unikernel.net refuses bytes: one exception, with a reason to count."""


class Malformed(ValueError):
    """Raised by a parser on input it will not accept, and by nothing else.

    `reason` is a short slug ("truncated", "checksum", ...) under which the stack counts the
    drop; arbitrary input makes a parser either return or raise this, never anything else.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason
