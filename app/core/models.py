from django.db import models


class BulkPause(models.Model):
    """A pause of bulk work that travels through the database: shoestring-guard (roles/guard)
    on the database host writes its own row over psql, keyed by its host name, with plain SQL
    (INSERT ... ON CONFLICT (source) DO UPDATE SET paused, reason, changed_at), and every
    worker host's bulk pool stops consuming while any row is paused (core.pause). The guard
    names these columns itself: keep their names and types. A row added here (admin) by hand
    pauses the bulk pools too, until it is cleared."""

    source = models.CharField(
        max_length=255, primary_key=True, help_text="The host name of the guard that wrote it."
    )
    paused = models.BooleanField(default=True)
    reason = models.TextField(blank=True, default="", db_default="")
    changed_at = models.DateTimeField(auto_now=True)

    class Meta:
        db_table = "core_bulkpause"
        db_table_comment = (
            "Written by shoestring-guard over psql (roles/guard); read by every bulk pool"
            " (core.pause): any row paused stops bulk work on every worker host."
        )

    def __str__(self):
        return f"{self.source} ({'paused' if self.paused else 'running'})"
