"""Errors that are the user's to fix: the CLI prints them as one line and exits with code 2."""


class UserError(Exception):
    """Bad input (a path, a prompt, a config value). The message names the problem and the fix."""
