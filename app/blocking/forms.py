import re

from bluesky.client import normalize_handle
from bluesky.errors import BadRequest, CredentialsRevoked, NotFound, ProviderError, RateLimited
from django import forms
from django.conf import settings
from django.contrib.auth.forms import UserCreationForm

from .models import Action, PostGroup, Scope, Trusted

# "both": a block campaign that mutes each account too (Campaign.also_mute).
ACTION_CHOICES = [*Action.choices, ("both", "Block and mute")]
SOURCE_CHOICES = [("account", "An account"), ("post", "A post")]
ACCOUNT_SCOPES = [(s.value, s.label) for s in (Scope.ACCOUNT, Scope.FOLLOWERS, Scope.BOTH)]
# https://bsky.app/profile/<handle or DID>/post/<record key>, as the app's "Copy link" gives.
POST_URL = re.compile(
    r"^https?://(?:www\.)?bsky\.app/profile/(?P<actor>[^/?#\s]+)"
    r"/post/(?P<rkey>[A-Za-z0-9._:~-]{1,512})/?(?:[?#].*)?$"
)
AT_POST_URI = re.compile(
    r"^at://(?P<actor>[^/\s]+)/app\.bsky\.feed\.post/(?P<rkey>[A-Za-z0-9._:~-]{1,512})$"
)
POST_HELP = (
    "Paste the post's link (Share → Copy link in the Bluesky app): it looks like"
    " https://bsky.app/profile/name.bsky.social/post/3l..., or an at:// address."
)

DURATION_CHOICES = [
    ("1", "1 week"),
    ("4", "4 weeks"),
    ("12", "12 weeks"),
    ("26", "26 weeks"),
    ("52", "52 weeks"),
    ("forever", "For ever"),
]


class SignupForm(UserCreationForm):
    """Django's sign-up form, with errors that say what to do next."""

    error_messages = {
        **UserCreationForm.error_messages,
        "password_mismatch": "The two passwords differ. Type the same password in both boxes.",
    }

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["username"].help_text = (
            "Up to 150 letters, digits and @ . + - _ ; you sign in with it. It need not be"
            " your Bluesky handle."
        )
        self.fields["username"].error_messages["unique"] = (
            "That username is taken. Choose another, or sign in if it is yours."
        )
        self.fields["password1"].help_text = (
            "At least 8 characters, not only digits, not a common password and not like"
            " your username."
        )
        # Browsers fill the right password here instead of offering to generate one.
        self.fields["password1"].widget.attrs["autocomplete"] = "new-password"


class LinkAccountForm(forms.Form):
    handle = forms.CharField(
        max_length=253,
        label="Bluesky handle",
        help_text="Your Bluesky handle, e.g. alice.bsky.social",
        widget=forms.TextInput(attrs={"autocomplete": "username", "autocapitalize": "none"}),
    )
    app_password = forms.CharField(
        widget=forms.PasswordInput(attrs={"autocomplete": "off"}),
        max_length=100,
        label="App password",
        help_text="An app password from Bluesky's Settings → Privacy and security → App passwords. "
        "Never your main password.",
    )

    def clean_handle(self):
        return normalize_handle(self.cleaned_data["handle"])


RATE_LIMITED = "Bluesky is rate-limiting your account right now; try again in a few minutes."


def ask(
    call,
    missing,
    invalid=None,
    unanswered="Bluesky did not answer; nothing was started. Try again.",
    limited=RATE_LIMITED,
):
    """Ask the network; its refusals become errors that say what to do next."""
    try:
        return call()
    except NotFound:
        raise forms.ValidationError(missing) from None
    except BadRequest:
        raise forms.ValidationError(invalid or missing) from None
    except RateLimited:
        raise forms.ValidationError(limited) from None
    except CredentialsRevoked:
        raise forms.ValidationError(
            "Bluesky refused your app password. Link your account again with a new one."
        ) from None
    except ProviderError:
        raise forms.ValidationError(unanswered) from None


def parse_post(text):
    """(actor, record key) of a post's link or at:// address; ValidationError otherwise."""
    text = text.strip()
    match = POST_URL.match(text) or AT_POST_URI.match(text)
    if match is None:
        raise forms.ValidationError(f"That is not a link to a Bluesky post. {POST_HELP}")
    return normalize_handle(match["actor"]), match["rkey"]


class CampaignForm(forms.Form):
    source = forms.ChoiceField(
        choices=SOURCE_CHOICES,
        initial="account",
        required=False,
        label="Start from",
        widget=forms.RadioSelect,
    )
    target = forms.CharField(
        max_length=253,
        required=False,
        label="Account",
        help_text="Their handle, e.g. loud.bsky.social (with or without the @)",
        widget=forms.TextInput(attrs={"autocapitalize": "none", "spellcheck": "false"}),
    )
    scope = forms.ChoiceField(
        choices=ACCOUNT_SCOPES, initial=Scope.BOTH, required=False, label="Who"
    )
    post = forms.CharField(
        max_length=600,
        required=False,
        label="Post",
        help_text=POST_HELP,
        widget=forms.TextInput(attrs={"autocapitalize": "none", "spellcheck": "false"}),
    )
    post_groups = forms.MultipleChoiceField(
        choices=PostGroup.choices,
        required=False,
        initial=[g.value for g in PostGroup],
        label="Everyone who",
        widget=forms.CheckboxSelectMultiple,
    )
    with_author = forms.BooleanField(required=False, label="The post's author too")
    action = forms.ChoiceField(choices=ACTION_CHOICES, initial=Action.BLOCK, label="Do")
    duration = forms.ChoiceField(choices=DURATION_CHOICES, initial="4", label="For")
    watch = forms.BooleanField(
        required=False,
        label="Keep watching",
        help_text="Block newcomers too (new followers, new likes, reposts, quotes and replies)"
        " for the campaign's whole time, one token each.",
    )

    def __init__(self, *args, client=None, account=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.client = client
        self.account = account
        self.profile = None
        self.post = None
        self.replies = 0

    def clean_target(self):
        return normalize_handle(self.cleaned_data["target"])

    def clean(self):
        data = super().clean()
        if self.errors:
            return data
        data["also_mute"] = data["action"] == "both"
        if data["also_mute"]:
            data["action"] = Action.BLOCK
        if data.get("source") == "post":
            return self._clean_post(data)
        data["source"], data["scope"] = "account", data.get("scope") or Scope.BOTH
        target = data.get("target")
        if not target:
            raise forms.ValidationError("Type the handle of the account to block.")
        self.profile = ask(
            lambda: self.client.resolve(target),
            missing=f"There is no Bluesky account called @{target}. Check the spelling, or copy"
            " the handle from their profile page.",
            invalid=f"@{target} is not a valid Bluesky handle. A handle looks like"
            " name.bsky.social: letters, digits and hyphens between dots.",
        )
        if self.profile.did == self.account.did:
            raise forms.ValidationError(
                "That is your own account. Type the handle of the account you want to block."
            )
        if Trusted.objects.filter(owner=self.account.user_id, did=self.profile.did).exists():
            raise forms.ValidationError(
                f"@{self.profile.handle} is on your never-block list. Remove them from it first"
                " if you really mean to block them."
            )
        if data["scope"] != Scope.ACCOUNT and self.profile.followers_count > settings.FOLLOWER_CAP:
            raise forms.ValidationError(
                f"@{self.profile.handle} has {self.profile.followers_count:,} followers; "
                f"the limit is {settings.FOLLOWER_CAP:,}. "
                f"Choose “The account” to {data['action']} just them."
            )
        return data

    def _clean_post(self, data):
        if not data.get("post"):
            raise forms.ValidationError(f"Paste the link of the post. {POST_HELP}")
        actor, rkey = parse_post(data["post"])
        if not data.get("post_groups"):
            raise forms.ValidationError(
                "Choose who to take: people who liked, reposted, quoted or replied."
            )
        missing = "There is no such post, or it was deleted. Check the link."
        author = ask(lambda: self.client.resolve(actor), missing)
        uri = f"at://{author.did}/app.bsky.feed.post/{rkey}"
        if author.blocking_uri or author.blocked_by:
            # The AppView hides the posts of an account either side blocks, and with them
            # the post's likes and thread (packages/bsky getPosts: noBlocks).
            who = "you block them" if author.blocking_uri else "they block you"
            missing = (
                f"Bluesky hides the posts of @{author.handle} from you because {who}, and"
                " with them who liked, reposted, quoted or replied. Lift that block on Bluesky"
                " (or undo it on your Blocks page), start from the post, and tick “The"
                " post's author too” to block them again."
                if author.blocking_uri
                else f"Bluesky hides the posts of @{author.handle} from you because {who}:"
                " who engaged with them cannot be read. Start from their account instead."
            )
        self.post = ask(lambda: self.client.post(uri), missing)
        self.profile = self.post.author
        if PostGroup.REPLIES in data["post_groups"]:
            # The post counts its direct replies only; the thread has the answers to them.
            thread = ask(lambda: self.client.engagers_page("replies", uri), missing)
            self.replies = len(thread.followers)
        if self.profile.did == self.account.did:
            raise forms.ValidationError(
                "That is your own post. Paste the link of the post the pile-on started from."
            )
        if self.engagers > settings.FOLLOWER_CAP:
            raise forms.ValidationError(
                f"This post has about {self.engagers:,} likes, reposts, quotes and replies;"
                f" the limit is {settings.FOLLOWER_CAP:,}. Choose fewer of them."
            )
        # The groups in the order a campaign reads them, whatever order the form sent.
        data["post_groups"] = [g.value for g in PostGroup if g.value in data["post_groups"]]
        data["scope"] = Scope.POST_AUTHOR if data.get("with_author") else Scope.POST
        return data

    def counts(self):
        """What the AppView counts for each chosen group of the post."""
        post, groups = self.post, self.cleaned_data.get("post_groups") or []
        every = {
            PostGroup.LIKES: post.like_count,
            PostGroup.REPOSTS: post.repost_count,
            PostGroup.QUOTES: post.quote_count,
            PostGroup.REPLIES: self.replies,
        }
        return {group: every[group] for group in groups}

    @property
    def engagers(self):
        return sum(self.counts().values())

    @property
    def cost(self):
        scope = self.cleaned_data["scope"]
        if self.post is not None:
            return self.engagers + (1 if scope == Scope.POST_AUTHOR else 0)
        return (self.profile.followers_count if scope != Scope.ACCOUNT else 0) + (
            1 if scope != Scope.FOLLOWERS else 0
        )


class TrustedForm(forms.Form):
    handle = forms.CharField(
        max_length=253,
        label="Handle",
        help_text="e.g. friend.bsky.social (with or without the @): checked on Bluesky now.",
        widget=forms.TextInput(attrs={"autocapitalize": "none", "spellcheck": "false"}),
    )

    def __init__(self, *args, client=None, account=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.client = client
        self.account = account
        self.profile = None

    def clean_handle(self):
        handle = normalize_handle(self.cleaned_data["handle"])
        unanswered = "Bluesky did not answer; nothing was added. Try again in a minute."
        self.profile = ask(
            lambda: self.client.resolve(handle),
            missing=f"There is no Bluesky account called @{handle}. Check the spelling, or copy"
            " the handle from their profile page.",
            unanswered=unanswered,
            limited=unanswered,
        )
        if self.profile.did == self.account.did:
            raise forms.ValidationError("That is you: your own account is never blocked.")
        return handle
