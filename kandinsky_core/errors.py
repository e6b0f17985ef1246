"""The package's own error type: every message names what is wrong and how to fix it."""


class KandinskyError(ValueError):
    """A bad input or model folder, with a message meant for the person who wired the graph."""
