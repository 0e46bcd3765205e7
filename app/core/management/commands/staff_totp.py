"""shoestring-manage staff_totp USERNAME [--reset]: give a staff member the second factor the
admin asks for, a TOTP authenticator (any app that reads otpauth:// links or QR codes), and
print its link and key once. --reset replaces a lost one; the old one stops working."""

from base64 import b32encode

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction
from django_otp.plugins.otp_totp.models import TOTPDevice

DEVICE_NAME = "authenticator"


class Command(BaseCommand):
    help = __doc__

    def add_arguments(self, parser):
        parser.add_argument("username")
        parser.add_argument(
            "--reset", action="store_true", help="replace the authenticator they have"
        )

    def handle(self, username, reset, **options):
        user = get_user_model().objects.filter(username=username).first()
        if user is None:
            raise CommandError(f"There is no user called {username!r}.")
        if not user.is_staff:
            raise CommandError(
                f"{username} is not staff: the admin would not let them in with a code either."
                " Make them staff in the admin or with createsuperuser first."
            )
        with transaction.atomic():
            # One run at a time per person: two at once must not leave two working secrets.
            get_user_model().objects.select_for_update().get(pk=user.pk)
            devices = TOTPDevice.objects.filter(user=user)
            if devices.exists() and not reset:
                raise CommandError(
                    f"{username} has an authenticator already. --reset replaces it (a lost"
                    " phone); the codes of the old one stop working."
                )
            devices.delete()
            device = TOTPDevice.objects.create(user=user, name=DEVICE_NAME, confirmed=True)
        key = b32encode(device.bin_key).decode()
        self.stdout.write(
            f"{username}'s authenticator: open this link on their phone, or make a QR code"
            f" of it, or type the key into the app.\n"
            f"  {device.config_url}\n"
            f"  key: {key}\n"
            f"The admin asks for its 6-digit code after the password. Shown once; keep it"
            f" nowhere else."
        )
