"""Migrations keep the schema usable by the release before them (docs/runbook.md, "A
rollback runs no migrations"): a column added to a table that already existed must be
nullable or have a default in the database itself, or the older release's INSERTs, which
do not name it, fail. Django keeps a field's `default` in Python only (0010 gives the
ones added so far theirs)."""

import pytest
from django.db import connection
from django.db.migrations.loader import MigrationLoader

pytestmark = pytest.mark.django_db
APP = "blocking"


def columns_by_table(state):
    """{table: {column}} of the app's models in a migration state."""
    tables = {}
    for (app, _), model in state.models.items():
        if app != APP:
            continue
        rendered = state.apps.get_model(app, model.name)
        tables[rendered._meta.db_table] = {f.column for f in rendered._meta.local_concrete_fields}
    return tables


def test_every_column_added_to_an_existing_table_is_nullable_or_has_a_database_default():
    loader = MigrationLoader(connection)
    names = sorted(name for app, name in loader.disk_migrations if app == APP)
    first = columns_by_table(loader.project_state((APP, names[0])))
    added = set()
    before = first
    for name in names[1:]:
        after = columns_by_table(loader.project_state((APP, name)))
        for table, columns in after.items():
            if table in before:
                added |= {(table, column) for column in columns - before[table]}
        before = after
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT table_name, column_name FROM information_schema.columns"
            " WHERE table_schema = current_schema() AND is_nullable = 'NO'"
            " AND column_default IS NULL"
        )
        strict = set(cursor.fetchall())
    assert added, "no migration added a column: the check would prove nothing"
    assert sorted(added & strict) == [], "give them a database default (see 0010)"
