from django.apps import AppConfig


class CoreConfig(AppConfig):
    name = "core"
    verbose_name = "Shoestring"

    def ready(self):
        from core import signals  # noqa: F401 - connects the task publish signal
