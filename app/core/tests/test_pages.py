import pytest
from django.contrib.auth import get_user_model
from django.db import connection
from django.urls import reverse


@pytest.mark.django_db
def test_healthz_answers_200_when_the_database_answers(client):
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.content == b"ok\n"
    assert "no-cache" in response["Cache-Control"]


@pytest.mark.django_db
def test_healthz_names_the_release_that_answers(client, settings):
    settings.SHOESTRING_RELEASE = "20260101T000000Z-0123456789ab"
    response = client.get("/healthz")
    assert response["X-Shoestring-Release"] == "20260101T000000Z-0123456789ab"


@pytest.mark.django_db(transaction=True)
def test_healthz_answers_503_when_the_database_is_unreachable(client):
    settings = connection.settings_dict
    real_port = settings["PORT"]
    connection.close()
    settings["PORT"] = 1  # nothing listens on port 1 of loopback
    try:
        response = client.get("/healthz")
    finally:
        connection.close()
        settings["PORT"] = real_port
    assert response.status_code == 503
    assert b"database unavailable" in response.content


@pytest.mark.django_db
def test_healthz_refuses_post(client):
    assert client.post("/healthz").status_code == 405


@pytest.mark.django_db
def test_home_page_invites_a_visitor_to_sign_in(client):
    response = client.get("/")
    assert response.status_code == 200
    assert reverse("login").encode() in response.content


@pytest.mark.django_db
def test_sign_in_with_the_right_password_reaches_home(client):
    get_user_model().objects.create_user("alice", password="correct horse battery")
    response = client.post(
        reverse("login"), {"username": "alice", "password": "correct horse battery"}, follow=True
    )
    assert response.status_code == 200
    assert response.context["user"].is_authenticated
    assert b"alice" in response.content


@pytest.mark.django_db
def test_sign_in_with_a_wrong_password_shows_the_error(client):
    get_user_model().objects.create_user("alice", password="correct horse battery")
    response = client.post(reverse("login"), {"username": "alice", "password": "wrong"})
    assert response.status_code == 200
    assert not response.context["user"].is_authenticated
    assert b"didn't match" in response.content


@pytest.mark.django_db
def test_admin_requires_staff_sign_in(client):
    response = client.get("/admin/")
    assert response.status_code == 302
    assert "/admin/login/" in response["Location"]
