"""Errors that reach the user as one line, caught once at the CLI's edge."""


class SmolcliError(Exception):
    """A problem with the user's input or environment; the message names it and the fix."""

    exit_code = 1
