"""What can go wrong when talking to the network, as the tasks need to tell it apart."""


class ProviderError(Exception):
    """A failure worth retrying later (network trouble, 5xx)."""


class RateLimited(ProviderError):
    """The network said "slow down". reset_at is when it allows more (epoch seconds) or None."""

    def __init__(self, message, reset_at=None):
        super().__init__(message)
        self.reset_at = reset_at


class CredentialsRevoked(Exception):
    """The app password no longer works: terminal, never retried."""


class NotFound(Exception):
    """The account does not exist (or is deactivated): terminal for that request."""


class BadRequest(Exception):
    """The network refused the request as malformed: terminal, retrying cannot help."""
