"""The columns added to blocking_campaign after its first release get their defaults in the
database too, so the release before a migration (during a deploy, or after a rollback,
which runs no migrations) can still insert campaigns: its INSERTs do not name them, and
Django keeps a field's default in Python only. blocking/tests/test_migrations.py keeps it so."""

from django.db import migrations

DEFAULTS = {
    "post_uri": "''",
    "post_groups": "'{}'",
    "found_by": "'{}'::jsonb",
    "skipped_by": "'{}'::jsonb",
    "skipped_dids": "'{}'",
    "also_mute": "false",
    "muted": "0",
    "tokens_refunded": "0",
    "page_failures": "0",
    "watch": "false",
    "rescanning": "false",
    "watched": "0",
}


def _alter(action):
    return "; ".join(
        f"ALTER TABLE blocking_campaign ALTER COLUMN {column} {action(value)}"
        for column, value in DEFAULTS.items()
    )


class Migration(migrations.Migration):
    dependencies = [
        ("blocking", "0009_skipped_once"),
    ]

    operations = [
        migrations.RunSQL(
            _alter(lambda value: f"SET DEFAULT {value}"),
            reverse_sql=_alter(lambda value: "DROP DEFAULT"),
        ),
    ]
