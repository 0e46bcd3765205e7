from django.urls import path

from . import signin, views

urlpatterns = [
    path("oauth/client-metadata.json", signin.client_metadata, name="oauth_client_metadata"),
    path("oauth/jwks.json", signin.jwks, name="oauth_jwks"),
    path("oauth/signin", signin.start, name="oauth_start"),
    path("oauth/callback", signin.callback, name="oauth_callback"),
    path("signup/", views.signup, name="signup"),
    path("link/", views.link, name="link"),
    path("link/remove/", views.unlink, name="unlink"),
    path("campaigns/", views.campaigns, name="campaigns"),
    path("campaigns/new/", views.campaign_new, name="campaign_new"),
    path("campaigns/<int:pk>/", views.campaign, name="campaign"),
    path("campaigns/<int:pk>/cancel/", views.campaign_cancel, name="campaign_cancel"),
    path("campaigns/<int:pk>/lift/", views.campaign_lift, name="campaign_lift"),
    path("campaigns/<int:pk>/progress.json", views.campaign_progress, name="campaign_progress"),
    path("blocks/", views.blocks, name="blocks"),
    path("blocks/<int:pk>/undo/", views.undo_one, name="undo_one"),
    path("blocks/undo-all/", views.undo_all, name="undo_all"),
    path("never-block/", views.never_block, name="never_block"),
    path("never-block/<int:pk>/remove/", views.never_block_remove, name="never_block_remove"),
]
