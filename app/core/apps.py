from django.apps import AppConfig


class CoreConfig(AppConfig):
    name = "core"
    verbose_name = "Shoestring"

    def ready(self):
        from core import signals, signin, task_metrics  # noqa: F401 - connect the signals
