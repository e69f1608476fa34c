"""The benchmark's one exception (a leaf module, so every part of the package can raise it)."""


class BenchmarkError(ValueError):
    """A bad input or a failed run, explained in one line."""
