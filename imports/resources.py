"""Per-row validation and the dry-run preview: a django-import-export resource for Product.

`use_transactions = False` makes a dry run write nothing at all (import-export then skips
saving instead of saving and rolling back). An empty cell leaves that field as it is.
"""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Any

from django.core.exceptions import ValidationError
from import_export import fields, resources, widgets
from import_export.instance_loaders import CachedInstanceLoader

from shop.models import Product

CURRENCY = re.compile(r"[A-Z]{3}")


class PriceWidget(widgets.DecimalWidget):
    def clean(self, value: Any, row: Any = None, **kwargs: Any) -> Any:
        try:
            return super().clean(value, row, **kwargs)
        except (ArithmeticError, ValueError):
            raise ValueError(f"{value!r} is not a price: digits and a dot, e.g. 12.50.") from None


class StockWidget(widgets.IntegerWidget):
    def clean(self, value: Any, row: Any = None, **kwargs: Any) -> Any:
        try:
            number = super().clean(value, row, **kwargs)
        except (ArithmeticError, ValueError):
            number = None
        if number is None or (value not in (None, "") and Decimal(str(value)) != number):
            raise ValueError(f"{value!r} is not a whole number of items.")
        return number


class CatalogueResource(resources.ModelResource):
    price = fields.Field(attribute="price", column_name="price", widget=PriceWidget())
    stock = fields.Field(attribute="stock", column_name="stock", widget=StockWidget())

    class Meta:
        model = Product
        name = "Catalogue: sku, price, currency, stock, name, description"
        import_id_fields = ("sku",)
        fields = ("sku", "price", "currency", "stock", "name", "description")
        skip_unchanged = True
        report_skipped = True
        use_transactions = False
        clean_model_instances = True
        # One query for every SKU of the file instead of one per row.
        instance_loader_class = CachedInstanceLoader

    def import_field(self, field: Any, instance: Product, row: Any, is_m2m: bool = False,
                     **kwargs: Any) -> None:  # fmt: skip
        if field.column_name in row and str(row[field.column_name]).strip() == "":
            return  # an empty cell changes nothing
        super().import_field(field, instance, row, is_m2m, **kwargs)

    def validate_instance(self, instance: Product, import_validation_errors: Any = None,
                          validate_unique: bool = True) -> None:  # fmt: skip
        errors = dict(import_validation_errors or {})
        checks = {
            "sku": not instance.sku and "The SKU is empty.",
            "price": instance.price is not None
            and Decimal(instance.price) < 0
            and "A price cannot be negative.",
            "stock": instance.stock is not None
            and int(instance.stock) < 0
            and "Stock cannot be negative.",
            "currency": instance.currency
            and not CURRENCY.fullmatch(instance.currency)
            and "A currency is three capital letters (ISO 4217), e.g. EUR.",
            "name": instance.pk is None and not instance.name and "A new product needs a name.",
        }
        for field, message in checks.items():
            if message and field not in errors:
                errors[field] = [message]
        try:
            super().validate_instance(instance, errors, validate_unique=False)
        except ValidationError as exc:
            raise exc from None
