"""The Celery app. Settings come from Django settings under the CELERY_ namespace."""

import os

from celery import Celery

from core.pause import PauseWhenFlagged

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.production")

app = Celery("shoestring")
app.config_from_object("django.conf:settings", namespace="CELERY")
# Each pool stops consuming its pausable queues while the guard's flag exists (core.pause).
app.steps["consumer"].add(PauseWhenFlagged)
app.autodiscover_tasks()
