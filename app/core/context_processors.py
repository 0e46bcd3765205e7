from blocking import estimate
from django.conf import settings


def demo_network(request):
    """What the demo banner on every page needs; nothing when the app talks to Bluesky."""
    if not settings.DEMO_NETWORK:
        return {"demo_network": None}
    return {
        "demo_network": {
            "handle": settings.DEMO_ACCOUNT_HANDLE,
            "app_password": settings.DEMO_ACCOUNT_APP_PASSWORD,
            "targets": settings.DEMO_TARGETS,
            "posts": settings.DEMO_POSTS,
            "blocks_per_hour": estimate.blocks_per_hour(),
        }
    }


def bluesky_signin(request):
    """Whether "Sign in with Bluesky" is offered (the app has its OAuth key)."""
    from blocking.network import oauth_enabled

    return {"bluesky_signin": oauth_enabled()}
