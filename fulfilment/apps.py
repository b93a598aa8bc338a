from django.apps import AppConfig


class FulfilmentConfig(AppConfig):
    name = "fulfilment"
    verbose_name = "Fulfilment"

    def ready(self) -> None:
        from core import reconciler, runs
        from fulfilment.workflows import RUN_KIND, fulfilment_upkeep

        runs.register(RUN_KIND)
        # Every reconciler pass closes batches whose oldest order waited too long: the
        # batching timer survives any restart, since its state is the released_at column.
        reconciler.register_hook(fulfilment_upkeep)
