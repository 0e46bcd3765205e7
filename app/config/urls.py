from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path
from django_otp.admin import OTPAdminSite

from core import views

# Staff sign in to the admin with their password and a code from their authenticator app
# (a TOTP device: `shoestring-manage staff_totp USERNAME`); signed in on the site without
# one, the admin asks for it. Wrong codes slow further tries down (django-otp's throttle).
admin.site.__class__ = OTPAdminSite

urlpatterns = [
    path("", views.home, name="home"),
    path("healthz", views.healthz, name="healthz"),
    path("accounts/login/", auth_views.LoginView.as_view(), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("admin/", admin.site.urls),
    path("", include("blocking.urls")),
]
