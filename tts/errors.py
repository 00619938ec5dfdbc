"""Errors a user can fix: the CLI prints them as one line and exits with code 2."""


class UserError(Exception):
    """Bad input (unknown name, missing file, malformed data, unreachable server)."""


class BackendError(Exception):
    """The generation backend failed in a way retries did not cure."""
