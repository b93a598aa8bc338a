"""Client for the supplier's product API and the status callback, validating what it gets.

Every call has explicit connect/read timeouts and a response size cap. Errors come in two
kinds, because they are handled differently: `TransientError` (worth retrying later) and
`PermanentError` (retrying cannot help; record it with a message a person understands).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

import requests
from django.conf import settings


class SupplierError(Exception):
    """An error a person can read; `str()` is what the admin shows."""


class TransientError(SupplierError):
    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class PermanentError(SupplierError):
    pass


@dataclass(frozen=True)
class SupplierProduct:
    sku: str
    name: str
    description: str
    price: Decimal
    currency: str
    stock: int
    details: dict[str, Any] = field(default_factory=dict)  # everything they sent


def _timeouts() -> tuple[float, float]:
    return (settings.SUPPLIER_CONNECT_TIMEOUT, settings.SUPPLIER_READ_TIMEOUT)


def _read_capped(response: requests.Response) -> bytes:
    cap = settings.SUPPLIER_MAX_RESPONSE_BYTES
    declared = response.headers.get("Content-Length")
    if declared and declared.isdigit() and int(declared) > cap:
        raise PermanentError(f"response too large ({declared} bytes, limit {cap})")
    body = b""
    for chunk in response.iter_content(chunk_size=65536):
        body += chunk
        if len(body) > cap:
            raise PermanentError(f"response too large (over {cap} bytes)")
    return body


def _retry_after(response: requests.Response) -> float | None:
    value = response.headers.get("Retry-After", "")
    try:
        return max(0.0, float(value))
    except ValueError:
        return None


def _send(session: requests.Session, method: str, url: str, **kwargs: Any) -> tuple[int, bytes]:
    """One HTTP call; transport failures and retryable statuses become TransientError."""
    try:
        with session.request(method, url, timeout=_timeouts(), stream=True, **kwargs) as resp:
            if resp.status_code == 429:
                raise TransientError("supplier is rate limiting (HTTP 429)", _retry_after(resp))
            if resp.status_code >= 500:
                raise TransientError(f"supplier error (HTTP {resp.status_code})")
            return resp.status_code, _read_capped(resp)
    except requests.Timeout as exc:
        raise TransientError(f"supplier timed out ({exc.__class__.__name__})") from exc
    except requests.ConnectionError as exc:
        raise TransientError("could not connect to the supplier") from exc
    except requests.RequestException as exc:
        raise TransientError(f"request failed: {exc.__class__.__name__}") from exc


def parse_product(sku: str, body: bytes) -> SupplierProduct:
    """Validate the supplier's JSON for `sku` against the contract."""
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise PermanentError("supplier sent malformed JSON") from exc
    if not isinstance(data, dict):
        raise PermanentError("supplier sent JSON that is not an object")
    problems = []
    if data.get("sku") != sku:
        problems.append(f"sku is {data.get('sku')!r}, expected {sku!r}")
    for key in ("name", "description", "currency"):
        if not isinstance(data.get(key), str):
            problems.append(f"{key} missing or not a string")
    if isinstance(data.get("name"), str) and not data["name"].strip():
        problems.append("name is empty")
    price: Decimal | None = None
    try:
        if isinstance(data.get("price"), str):
            price = Decimal(data["price"])
    except InvalidOperation:
        pass
    if price is None or not price.is_finite() or price < 0 or price.as_tuple().exponent < -2:
        problems.append(f"price {data.get('price')!r} is not a decimal string like '12.50'")
    stock = data.get("stock")
    if not isinstance(stock, int) or isinstance(stock, bool) or stock < 0:
        problems.append(f"stock {stock!r} is not a non-negative integer")
    if isinstance(data.get("currency"), str) and len(data["currency"]) != 3:
        problems.append(f"currency {data['currency']!r} is not a 3-letter code")
    if problems:
        raise PermanentError("supplier sent an invalid product: " + "; ".join(problems))
    assert price is not None and isinstance(stock, int)
    return SupplierProduct(
        sku=sku,
        name=data["name"].strip()[:255],
        description=data["description"],
        price=price,
        currency=data["currency"].upper(),
        stock=stock,
        details=data,
    )


def fetch_product(session: requests.Session, sku: str) -> SupplierProduct:
    if not settings.SUPPLIER_API_URL:
        raise PermanentError("SUPPLIER_API_URL is not configured")
    url = f"{settings.SUPPLIER_API_URL}/products/{requests.utils.quote(sku, safe='')}"
    status, body = _send(session, "GET", url, headers={"Accept": "application/json"})
    if status == 404:
        raise PermanentError(f"the supplier does not know SKU {sku}")
    if status != 200:
        raise PermanentError(f"supplier refused the request (HTTP {status})")
    return parse_product(sku, body)


def post_status(session: requests.Session, payload: dict[str, Any], idempotency_key: str) -> int:
    """POST the run summary; the Idempotency-Key lets the receiver drop a repeat."""
    status, _ = _send(
        session,
        "POST",
        settings.STATUS_CALLBACK_URL,
        json=payload,
        headers={"Idempotency-Key": idempotency_key},
    )
    if not 200 <= status < 300:
        raise PermanentError(f"status callback refused (HTTP {status})")
    return status
