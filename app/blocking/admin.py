from django import forms
from django.contrib import admin

from .models import AddressBudget, Batch, Campaign, KillSwitch, LinkedAccount, TokenBucket


@admin.register(TokenBucket)
class TokenBucketAdmin(admin.ModelAdmin):
    list_display = ["user", "tokens", "capacity", "refill_per_hour", "refilled_at"]
    search_fields = ["user__username"]
    fields = ["user", "tokens", "capacity", "refill_per_hour", "refilled_at"]
    readonly_fields = ["user"]


@admin.register(LinkedAccount)
class LinkedAccountAdmin(admin.ModelAdmin):
    list_display = ["user", "handle", "api_enabled", "disabled_reason", "rate_limited_until"]
    list_filter = ["api_enabled"]
    search_fields = ["user__username", "handle"]
    # Never show or edit the encrypted credentials.
    fields = [
        "user",
        "handle",
        "did",
        "service_url",
        "api_enabled",
        "disabled_reason",
        "rate_limited_until",
    ]
    readonly_fields = ["user", "handle", "did", "service_url"]


class KillSwitchForm(forms.ModelForm):
    task_name = forms.ChoiceField(choices=[])

    class Meta:
        model = KillSwitch
        fields = ["task_name", "engaged", "reason"]

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        from config.celery_app import app

        names = sorted(name for name in app.tasks if name.startswith("blocking."))
        self.fields["task_name"].choices = [(name, name) for name in names]


@admin.register(KillSwitch)
class KillSwitchAdmin(admin.ModelAdmin):
    form = KillSwitchForm
    list_display = ["task_name", "engaged", "reason", "changed_at"]
    list_editable = ["engaged"]


@admin.register(Campaign)
class CampaignAdmin(admin.ModelAdmin):
    list_display = [
        "user",
        "action",
        "target_handle",
        "scope",
        "status",
        "found",
        "acted",
        "skipped",
        "failed",
    ]
    list_filter = ["status", "action"]
    search_fields = ["user__username", "target_handle"]
    readonly_fields = [f.name for f in Campaign._meta.fields]


@admin.register(AddressBudget)
class AddressBudgetAdmin(admin.ModelAdmin):
    """The shared per-address budget: raise capacity or refill_per_s only if Bluesky gave
    this appliance's address a larger limit."""

    list_display = ("name", "tokens", "capacity", "refill_per_s", "refilled_at")


@admin.register(Batch)
class BatchAdmin(admin.ModelAdmin):
    """Work waiting for the network; beat releases it. Read only: change work through its
    campaign (cancel) or the kill switches."""

    list_display = ("id", "owner", "op", "state", "not_before", "failures", "requeued")
    list_filter = ("op", "state")

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False
