"""The "everything you blocked" list: a page at a time, searched by handle, never a scan.

A person may hold 200,000 blocks. The list walks the index on (owner,
subject_handle, id) from a cursor (keyset paging) instead of OFFSET, searches by
handle prefix, which the same index answers because handles use the C collation,
and counts no further than COUNT_CAP rows.
"""

from dataclasses import dataclass

from .models import ActionRecord

PAGE_SIZE = 100
COUNT_CAP = 10_000


@dataclass
class Page:
    rows: list
    query: str
    count: int  # at most COUNT_CAP
    next_cursor: str = ""
    previous_cursor: str = ""
    first: bool = True

    @property
    def count_text(self):
        if self.count >= COUNT_CAP:
            return f"more than {COUNT_CAP:,}"
        return f"{self.count:,}"

    def __iter__(self):
        return iter(self.rows)


def cursor_of(row):
    return f"{row.subject_handle}~{row.pk}"


def parse_cursor(value):
    """'handle~id' -> (handle, id), or None for anything else."""
    handle, sep, pk = value.rpartition("~")
    if not sep or not pk.isdigit():
        return None
    return handle, int(pk)


def page_for(user, query="", after="", before=""):
    query = query.strip().lstrip("@").lower()
    rows = ActionRecord.objects.filter(owner=user)
    if query.startswith("did:"):
        rows = rows.filter(subject_did=query)
    elif query:
        rows = rows.filter(subject_handle__startswith=query)
    count = rows[:COUNT_CAP].count()

    forward = ("subject_handle", "pk")
    backward = ("-subject_handle", "-pk")
    after_key, before_key = parse_cursor(after), parse_cursor(before)
    if before_key:
        handle, pk = before_key
        # "handle <= h, except h's rows from pk on": an index range that starts at h.
        window = (
            rows.filter(subject_handle__lte=handle)
            .exclude(subject_handle=handle, pk__gte=pk)
            .order_by(*backward)
        )
        found = list(window[: PAGE_SIZE + 1])
        more_before = len(found) > PAGE_SIZE
        found = list(reversed(found[:PAGE_SIZE]))
        page = Page(found, query, count, first=not more_before)
        if found:
            page.next_cursor = cursor_of(found[-1])
            if more_before:
                page.previous_cursor = cursor_of(found[0])
        return page

    if after_key:
        handle, pk = after_key
        rows = rows.filter(subject_handle__gte=handle).exclude(subject_handle=handle, pk__lte=pk)
    found = list(rows.order_by(*forward)[: PAGE_SIZE + 1])
    more_after = len(found) > PAGE_SIZE
    found = found[:PAGE_SIZE]
    page = Page(found, query, count, first=not after_key)
    if more_after:
        page.next_cursor = cursor_of(found[-1])
    if after_key and found:
        page.previous_cursor = cursor_of(found[0])
    return page
