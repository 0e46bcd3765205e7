"""What can go wrong when talking to the network, as the tasks need to tell it apart."""


class ProviderError(Exception):
    """A failure worth retrying later (network trouble, 5xx)."""


class ServerError(ProviderError):
    """The network answered 5xx. status is the HTTP status."""

    def __init__(self, message, status):
        super().__init__(message)
        self.status = status


class RateLimited(ProviderError):
    """The network said "slow down". reset_at is when it allows more (epoch seconds) or None.

    scope says whose budget ran out: "account" (this person's write or sign-in budget) or
    "address" (the budget every account shares from this machine's address, or one the
    answer did not name): only an "account" limit says anything about this person. limit is
    the whole window's size (ratelimit-limit), if the answer said.
    """

    def __init__(self, message, reset_at=None, scope="address", limit=None):
        super().__init__(message)
        self.reset_at = reset_at
        self.scope = scope
        self.limit = limit


class RkeyTaken(ProviderError):
    """A record key made for a new block already holds another record (two TIDs alike):
    the batch gets new keys and is tried again."""


class CredentialsRevoked(Exception):
    """This account cannot be used until its person acts: terminal, never retried."""

    # What the person is told, where the work stopped and where they link their account.
    reason = "Bluesky refused the app password: link your account again with a new app password."
    link_message = (
        "Bluesky refused that handle and app password. Check the handle, or make a new"
        " app password in Bluesky's Settings → Privacy and security → App passwords"
        " and paste it here."
    )


class AccountSuspended(CredentialsRevoked):
    """The account is taken down or deactivated (AccountTakedown, AccountDeactivated)."""

    reason = (
        "Bluesky says your account is taken down or deactivated; nothing more can be done"
        " for it until it is active again and linked anew."
    )
    link_message = "Bluesky says that account is taken down or deactivated."


class UnsafePds(CredentialsRevoked):
    """The account's DID document names a PDS this app will not send tokens to."""

    reason = (
        "Your account's server (PDS) is not a public https address, so Shoestring will not"
        " send your credentials there."
    )
    link_message = reason


class NotFound(Exception):
    """The account does not exist (or is deactivated): terminal for that request."""


class BadRequest(Exception):
    """The network refused the request as malformed: terminal, retrying cannot help."""
