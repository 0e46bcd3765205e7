"""The pages a person uses: progress in words, the blocks list, errors that say what to do."""

import re
from datetime import timedelta

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from django.utils.html import escape

from blocking import blocklist, estimate
from blocking.models import ActionRecord, Campaign

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize(
    ("points", "seconds"),
    [
        (0, 0),
        (5_000, 0),  # one hour's budget goes at once
        (9_000, 3_600),  # 3,000 blocks: the rest an hour later
        (35_000, 6 * 3_600),  # a day's budget: seven hourly windows
        (35_003, 86_400),  # a day's budget, then the next day's first window
        (70_000, 86_400 + 6 * 3_600),
    ],
)
def test_time_to_spend_write_points_follows_the_hourly_and_daily_budgets(points, seconds):
    assert estimate.seconds_to_spend(points, 5_000, 35_000) == seconds


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "under a minute"),
        (59, "1 min"),
        (6_480, "1 h 48 min"),
        (7_200, "2 h"),
        (27_000, "7 h 30 min"),
        (86_400 + 4 * 3_600, "1 day 4 h"),
        (3 * 86_400, "3 days"),
    ],
)
def test_durations_read_as_a_person_says_them(seconds, text):
    assert estimate.duration_text(seconds) == text


def campaign_for(user, **fields):
    values = {
        "target_handle": "crowd-3000.fake.test",
        "target_did": "did:plc:crowd3000",
        "action": "block",
        "scope": "followers",
        "expected": 3000,
        "tokens_debited": 3000,
    }
    values.update(fields)
    return Campaign.objects.create(user=user, **values)


def test_the_estimate_is_the_write_budget_of_every_running_block_campaign(django_user_model):
    user = django_user_model.objects.create_user("erin", password="x")
    first = campaign_for(user, pages_done=True, found=3000)
    assert estimate.for_campaign(first).text == (
        "About 1 h at Bluesky's limit of ~1,666 blocks an hour"
    )
    campaign_for(user, expected=9000)  # shares the same account's budget
    assert estimate.for_campaign(first).text == (
        "About 1 day at Bluesky's limit of ~11,666 blocks a day"
    )
    first.status = Campaign.Status.DONE
    assert estimate.for_campaign(first) is None


def test_the_estimate_waits_for_pages_still_to_come(django_user_model, settings):
    settings.FOLLOWER_PAGE_SIZE, settings.FOLLOWER_PAGE_DELAY_S = 5000, 600
    user = django_user_model.objects.create_user("finn", password="x")
    now = timezone.now()
    campaign = campaign_for(
        user, action="mute", expected=60_000, found=5000, next_page_at=now + timedelta(minutes=8)
    )
    # 11 pages to go: the next in 8 minutes, then ten more 10 minutes apart.
    assert estimate.for_campaign(campaign, now=now).seconds == 8 * 60 + 10 * 600


def test_progress_says_in_words_how_long_and_when_the_next_page_comes(client, person):
    user = person()
    campaign = campaign_for(user, next_page_at=timezone.now() + timedelta(minutes=9), acted=1500)
    progress = client.get(f"/campaigns/{campaign.pk}/progress.json").json()
    assert progress["summary"] == "Blocked 1,500 of about 3,000 so far."
    # 1,500 blocks fit this hour's budget; the one page still to come is 9 minutes off.
    assert re.fullmatch(
        r"About (9|10) min at Bluesky's limit of ~1,666 blocks an hour", progress["estimate"]
    )
    assert re.fullmatch(r"\d\d:\d\d UTC \(in (9|10) min\)", progress["next_page_text"])
    page = client.get(f"/campaigns/{campaign.pk}/").content.decode()
    assert escape(progress["estimate"]) in page
    assert "1,500" in page


def test_a_failed_campaign_shows_its_error_in_words(client, person):
    user = person()
    campaign = campaign_for(user, status="failed", error="The target account no longer exists.")
    progress = client.get(f"/campaigns/{campaign.pk}/progress.json").json()
    assert progress["estimate"] == ""
    assert progress["error"] == "The target account no longer exists."
    assert (
        "The target account no longer exists."
        in client.get(f"/campaigns/{campaign.pk}/").content.decode()
    )


def hold_blocks(user, count):
    ActionRecord.objects.bulk_create(
        ActionRecord(
            owner=user,
            kind="block",
            subject_did=f"did:plc:crowd{count}x{i}",
            subject_handle=f"f{i:05d}.crowd-{count}.fake.test",
            rkey=f"rk{i}",
        )
        for i in range(count)
    )


def handles(response):
    return re.findall(r'<td class="handle">@([^<]+)</td>', response.content.decode())


def test_the_blocks_list_pages_forward_and_back_by_handle(client, person):
    user = person()
    hold_blocks(user, 250)
    first = client.get("/blocks/")
    assert handles(first)[0] == "f00000.crowd-250.fake.test"
    assert len(handles(first)) == blocklist.PAGE_SIZE
    assert "250 in all" in first.content.decode()
    second = client.get("/blocks/", {"after": first.context["page"].next_cursor})
    assert handles(second)[0] == "f00100.crowd-250.fake.test"
    third = client.get("/blocks/", {"after": second.context["page"].next_cursor})
    assert handles(third) == [f"f{i:05d}.crowd-250.fake.test" for i in range(200, 250)]
    assert not third.context["page"].next_cursor
    back = client.get("/blocks/", {"before": third.context["page"].previous_cursor})
    assert handles(back) == handles(second)


def test_the_blocks_list_searches_by_handle_prefix_and_by_did(client, person):
    user = person()
    hold_blocks(user, 250)
    found = client.get("/blocks/", {"q": "@F0012"})
    assert handles(found) == [f"f{i:05d}.crowd-250.fake.test" for i in range(120, 130)]
    assert "10 matches “f0012”" in found.content.decode()
    by_did = client.get("/blocks/", {"q": "did:plc:crowd250x7"})
    assert handles(by_did) == ["f00007.crowd-250.fake.test"]
    nothing = client.get("/blocks/", {"q": "nobody"})
    assert "Type the start of the handle" in nothing.content.decode()


def test_another_persons_blocks_are_not_listed(client, person, django_user_model):
    hold_blocks(django_user_model.objects.create_user("other", password="x"), 20)
    person()
    assert handles(client.get("/blocks/")) == []


def test_searching_and_paging_a_big_list_walks_the_index_not_the_table(person):
    user = person()
    hold_blocks(user, 20_000)
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE blocking_actionrecord")
    with CaptureQueriesContext(connection) as captured:  # the queries the page runs
        page = blocklist.page_for(user, query="f1234")
        blocklist.page_for(user, after=blocklist.cursor_of(page.rows[-1]))
        blocklist.page_for(user, before=blocklist.cursor_of(page.rows[0]))
    queries = [q["sql"] for q in captured.captured_queries if "blocking_actionrecord" in q["sql"]]
    assert queries
    with connection.cursor() as cursor:
        for sql in queries:
            cursor.execute("EXPLAIN " + sql)
            plan = "\n".join(line for (line,) in cursor.fetchall())
            if "COUNT(" in sql:
                # One person owns the whole table here, so the planner may read it in
                # order; the count still stops at the cap.
                assert "Limit" in plan, plan
                assert f"LIMIT {blocklist.COUNT_CAP}" in sql, sql
                continue
            assert "Seq Scan" not in plan, plan
            assert "action_by_handle" in plan, plan


def test_the_count_stops_at_its_cap(person, settings, monkeypatch):
    monkeypatch.setattr(blocklist, "COUNT_CAP", 50)
    user = person()
    hold_blocks(user, 60)
    assert blocklist.page_for(user).count_text == "more than 50"


PAGES = [
    "/",
    "/accounts/login/",
    "/signup/",
    "/link/",
    "/campaigns/",
    "/campaigns/new/",
    "/blocks/",
]


@pytest.mark.parametrize("path", PAGES)
def test_pages_carry_no_inline_script_style_or_handler_that_the_csp_would_block(
    client, person, path
):
    user = person()
    campaign_for(user)
    body = client.get(path, follow=True).content.decode()
    assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", body), "inline <script>"
    assert not re.search(r"<style\b", body), "inline <style>"
    assert not re.search(r"\sstyle=", body), "style attribute"
    assert not re.search(r"\son[a-z]+=", body), "inline event handler"


def test_the_demo_banner_is_on_every_page_only_on_the_demo_network(client, settings):
    assert "Demo network" not in client.get("/").content.decode()
    settings.DEMO_NETWORK = True
    settings.DEMO_ACCOUNT_HANDLE, settings.DEMO_ACCOUNT_APP_PASSWORD = "demo.fake.test", "pw-1"
    settings.DEMO_TARGETS = ["crowd-3000.fake.test", "crowd-60000.fake.test"]
    for path in ["/", "/accounts/login/", "/signup/"]:
        body = client.get(path).content.decode()
        assert "Demo network." in body
        assert "@demo.fake.test" in body
        assert "<code>pw-1</code>" in body
        assert "@crowd-3000.fake.test</strong> or <strong>@crowd-60000.fake.test" in body
        assert "about 1,666 blocks an hour per account" in body


def test_sign_up_errors_say_what_to_do(client, django_user_model):
    django_user_model.objects.create_user("taken", password="x")
    response = client.post(
        "/signup/", {"username": "taken", "password1": "a-long-pass-1", "password2": "other-pass-2"}
    )
    body = response.content.decode()
    assert "That username is taken. Choose another, or sign in if it is yours." in body
    assert "Type the same password in both boxes." in body
    assert 'aria-invalid="true"' in body


def test_a_post_from_a_foreign_origin_is_refused_and_from_the_pages_own_origin_accepted(
    django_user_model, settings
):
    settings.ALLOWED_HOSTS = ["127.0.0.1"]
    django_user_model.objects.create_user("gail", password="pw-gail-123")
    browser = Client(enforce_csrf_checks=True)
    page = browser.get("/accounts/login/", HTTP_HOST="127.0.0.1:8443", secure=True)
    token = page.cookies["csrftoken"].value
    form = {"username": "gail", "password": "pw-gail-123", "csrfmiddlewaretoken": token}
    foreign = browser.post(
        "/accounts/login/",
        form,
        HTTP_HOST="127.0.0.1:8443",
        HTTP_ORIGIN="https://evil.example",
        secure=True,
    )
    assert foreign.status_code == 403
    own = browser.post(
        "/accounts/login/",
        form,
        HTTP_HOST="127.0.0.1:8443",
        HTTP_ORIGIN="https://127.0.0.1:8443",
        secure=True,
    )
    assert own.status_code == 302
    assert browser.get("/", HTTP_HOST="evil.example", secure=True).status_code == 400


def test_another_persons_campaign_and_its_progress_answer_404_in_words(
    client, person, django_user_model
):
    campaign = campaign_for(django_user_model.objects.create_user("owner", password="x"))
    person()
    page = client.get(f"/campaigns/{campaign.pk}/")
    assert page.status_code == 404
    assert "belongs to someone else" in page.content.decode()
    assert client.get(f"/campaigns/{campaign.pk}/progress.json").status_code == 404
