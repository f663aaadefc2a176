"""The one exception type of the baselines package."""


class BaselineError(RuntimeError):
    """A baseline image could not be built; the message says what was wrong and what to do."""
