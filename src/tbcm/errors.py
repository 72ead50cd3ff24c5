"""Errors that are the user's to fix: the CLI prints them as one line and exits with code 2."""


class UserError(Exception):
    """Bad input (a path, a prompt, a config value). The message names the problem and the fix."""


class TrainingStopped(Exception):
    """A run stopped itself (e.g. too many non-finite steps in a row); its last good checkpoint
    is intact. The CLI prints the message as one line and exits with code 1."""


def brief(exc: BaseException) -> str:
    """A library exception's message squeezed onto one line (YAML and torch errors span many)."""
    text = " ".join(str(exc).split())
    return (text[:200] + "...") if len(text) > 200 else (text or type(exc).__name__)
