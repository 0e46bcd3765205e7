from bluesky.client import normalize_handle
from bluesky.errors import BadRequest, CredentialsRevoked, NotFound, ProviderError, RateLimited
from django import forms
from django.conf import settings
from django.contrib.auth.forms import UserCreationForm

from .models import Action, Scope

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


class CampaignForm(forms.Form):
    target = forms.CharField(
        max_length=253,
        label="Account",
        help_text="Their handle, e.g. loud.bsky.social (with or without the @)",
        widget=forms.TextInput(attrs={"autocapitalize": "none", "spellcheck": "false"}),
    )
    action = forms.ChoiceField(choices=Action.choices, initial=Action.BLOCK, label="Do")
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
            raise forms.ValidationError(
                f"There is no Bluesky account called @{target}. Check the spelling, or copy the"
                " handle from their profile page."
            ) from None
        except BadRequest:
            raise forms.ValidationError(
                f"@{target} is not a valid Bluesky handle. A handle looks like"
                " name.bsky.social: letters, digits and hyphens between dots."
            ) from None
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
            raise forms.ValidationError(
                "That is your own account. Type the handle of the account you want to block."
            )
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
