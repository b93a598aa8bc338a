"""Small factories shared by the test packages."""

from __future__ import annotations

from django.contrib.auth.models import Permission, User


def make_staff(username: str, *codenames: str) -> User:
    """A staff user holding exactly the named permissions."""
    user = User.objects.create_user(
        username, f"{username}@example.com", password="pw", is_staff=True
    )
    user.user_permissions.set(Permission.objects.filter(codename__in=codenames))
    return user
