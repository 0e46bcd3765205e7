from bluesky.client import normalize_handle
from bluesky.errors import BadRequest, CredentialsRevoked, NotFound, ProviderError, RateLimited
from django import forms
from django.conf import settings

from .models import Action, Scope

DURATION_CHOICES = [
    ("1", "1 week"),
    ("4", "4 weeks"),
    ("12", "12 weeks"),
    ("26", "26 weeks"),
    ("52", "52 weeks"),
    ("forever", "For ever"),
]


class LinkAccountForm(forms.Form):
    handle = forms.CharField(
        max_length=253, help_text="Your Bluesky handle, e.g. alice.bsky.social"
    )
    app_password = forms.CharField(
        widget=forms.PasswordInput,
        max_length=100,
        help_text="An app password from Bluesky's Settings → Privacy and security → App passwords. "
        "Never your main password.",
    )

    def clean_handle(self):
        return normalize_handle(self.cleaned_data["handle"])


class CampaignForm(forms.Form):
    target = forms.CharField(
        max_length=253, label="Account", help_text="Handle, e.g. loud.bsky.social"
    )
    action = forms.ChoiceField(choices=Action.choices, initial=Action.BLOCK)
    scope = forms.ChoiceField(choices=Scope.choices, initial=Scope.BOTH, label="Who")
    duration = forms.ChoiceField(choices=DURATION_CHOICES, initial="4", label="For")

    def __init__(self, *args, client=None, account=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.client = client
        self.account = account
        self.profile = None

    def clean_target(self):
        return normalize_handle(self.cleaned_data["target"])

    def clean(self):
        data = super().clean()
        target = data.get("target")
        if not target or self.errors:
            return data
        try:
            self.profile = self.client.resolve(target)
        except NotFound:
            raise forms.ValidationError(f"There is no Bluesky account called @{target}.") from None
        except BadRequest:
            raise forms.ValidationError(f"@{target} is not a valid Bluesky handle.") from None
        except RateLimited:
            raise forms.ValidationError(
                "Bluesky is rate-limiting your account right now; try again in a few minutes."
            ) from None
        except CredentialsRevoked:
            raise forms.ValidationError(
                "Bluesky refused your app password. Link your account again with a new one."
            ) from None
        except ProviderError:
            raise forms.ValidationError(
                "Bluesky did not answer; nothing was started. Try again."
            ) from None
        if self.profile.did == self.account.did:
            raise forms.ValidationError("That is your own account.")
        if data["scope"] != Scope.ACCOUNT and self.profile.followers_count > settings.FOLLOWER_CAP:
            raise forms.ValidationError(
                f"@{self.profile.handle} has {self.profile.followers_count:,} followers; "
                f"the limit is {settings.FOLLOWER_CAP:,}. "
                f"Choose “The account” to {data['action']} just them."
            )
        return data

    @property
    def cost(self):
        scope = self.cleaned_data["scope"]
        return (self.profile.followers_count if scope != Scope.ACCOUNT else 0) + (
            1 if scope != Scope.FOLLOWERS else 0
        )
