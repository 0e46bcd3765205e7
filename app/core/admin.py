from django.contrib import admin

from .models import BulkPause


@admin.register(BulkPause)
class BulkPauseAdmin(admin.ModelAdmin):
    """Each guard's pause of bulk work, as it last wrote it. Clearing `paused` resumes the bulk
    pools only until that guard writes its row again; a row added by hand pauses them until it
    is cleared here."""

    list_display = ["source", "paused", "reason", "changed_at"]
    list_editable = ["paused"]
