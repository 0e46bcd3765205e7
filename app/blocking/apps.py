from django.apps import AppConfig


class BlockingConfig(AppConfig):
    name = "blocking"
    verbose_name = "Blocking"
    default_auto_field = "django.db.models.BigAutoField"
