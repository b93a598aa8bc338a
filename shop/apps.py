from django.apps import AppConfig


class ShopConfig(AppConfig):
    name = "shop"
    verbose_name = "Shop"

    def ready(self) -> None:
        from core import runs
        from notifications import audiences
        from shop.services import CUSTOMERS_AUDIENCE
        from shop.workflows import RUN_KIND

        runs.register(RUN_KIND)
        audiences.register(CUSTOMERS_AUDIENCE)
