"""Client for the supplier's product API and the status callback, validating what it gets.

Every call has explicit connect/read timeouts and a response size cap, follows no
redirects, and goes only to the configured hosts (never to another loopback, private or
link-local address: a supplier answering `302 Location: http://127.0.0.1:6379/` or the
cloud metadata address gets a permanent error, not a request). Errors come in two kinds,
because they are handled differently: `TransientError` (worth retrying later) and
`PermanentError` (retrying cannot help; record it with a message a person understands).

One urllib3 connection pool per origin and process is reused by every chunk: connections
are kept alive (checked with a plain zero-timeout poll before reuse), nothing is looked up
in the environment per request (no proxy or netrc lookups), and none of the per-call
preparation `requests` does (hooks, cookies, settings merges), which cost more CPU than
the rest of a product's refresh. Outbound proxies, if ever needed, are configured here
explicitly.
"""

from __future__ import annotations

import functools
import ipaddress
import json
import re
import socket
import threading
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any
from urllib.parse import quote, urlsplit

import urllib3
import urllib3.connection
from django.conf import settings

from core.concurrency import readable_now


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


# What the columns of shop.Product can hold (see its fields): values beyond them are the
# supplier's error, recorded on that product, never a crash of its neighbours' write.
PRICE_MAX_DIGITS, PRICE_DECIMALS = 12, 2
STOCK_MAX = 2**31 - 1
NAME_MAX = 255
CURRENCY = re.compile(r"^[A-Z]{3}$")


class _CheapLiveness:
    """urllib3 asks `is_connected` before reusing every pooled connection."""

    sock: socket.socket | None

    @property
    def is_connected(self) -> bool:
        return self.sock is not None and not readable_now(self.sock)


class _HTTPConnection(_CheapLiveness, urllib3.connection.HTTPConnection):
    pass


class _HTTPSConnection(_CheapLiveness, urllib3.connection.HTTPSConnection):
    pass


class _HTTPPool(urllib3.HTTPConnectionPool):
    ConnectionCls = _HTTPConnection


class _HTTPSPool(urllib3.HTTPSConnectionPool):
    ConnectionCls = _HTTPSConnection


_pools_lock = threading.Lock()
_pools: dict[tuple[str, str, int | None], urllib3.HTTPConnectionPool] = {}


def connection_pool(scheme: str, host: str, port: int | None) -> urllib3.HTTPConnectionPool:
    """The process-wide pool of one origin, sized for every concurrent request of the process.

    Kept here rather than asked of a PoolManager per request: its URL parsing and pool-key
    building cost a tenth of a product's refresh.
    """
    key = (scheme, host, port)
    pool = _pools.get(key)
    if pool is None:
        with _pools_lock:
            pool = _pools.get(key)
            if pool is None:
                cls = _HTTPSPool if scheme == "https" else _HTTPPool
                pool = _pools[key] = cls(
                    host,
                    port,
                    maxsize=settings.SUPPLIER_POOL_SIZE,
                    block=False,
                    retries=False,  # we decide what is retried, with backoff, in the task
                    timeout=urllib3.Timeout(
                        connect=settings.SUPPLIER_CONNECT_TIMEOUT,
                        read=settings.SUPPLIER_READ_TIMEOUT,
                    ),
                )
    return pool


def _configured_hosts() -> frozenset[str]:
    return _hosts_of(settings.SUPPLIER_API_URL, settings.STATUS_CALLBACK_URL)


@functools.lru_cache(maxsize=8)
def _hosts_of(*urls: str) -> frozenset[str]:
    """Cached by the URLs themselves: parsing them per request was 2.5% of a refresh's CPU."""
    return frozenset((urlsplit(url).hostname or "").lower() for url in urls if url)


def check_destination(url: str) -> None:
    """Refuse a URL whose host is not configured and resolves to an internal address."""
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    if parts.scheme not in ("http", "https") or not host:
        raise PermanentError(f"refusing to call {url!r}: not an http(s) URL")
    if host in _configured_hosts():
        return
    try:
        infos = socket.getaddrinfo(host, parts.port or 80, proto=socket.IPPROTO_TCP)
    except OSError as exc:
        raise TransientError(f"could not resolve {host}") from exc
    for info in infos:
        address = ipaddress.ip_address(info[4][0])
        if not address.is_global:
            raise PermanentError(
                f"refusing to call {host}: it resolves to the internal address {address} "
                "and is not the configured supplier or callback host"
            )


def _read_capped(response: urllib3.BaseHTTPResponse) -> bytes:
    cap = settings.SUPPLIER_MAX_RESPONSE_BYTES
    declared = response.headers.get("Content-Length")
    if declared and declared.isdigit() and int(declared) > cap:
        raise PermanentError(f"response too large ({declared} bytes, limit {cap})")
    body = response.read(cap + 1)
    if len(body) > cap:
        raise PermanentError(f"response too large (over {cap} bytes)")
    return body


def _retry_after(response: urllib3.BaseHTTPResponse) -> float | None:
    value = response.headers.get("Retry-After", "")
    try:
        return max(0.0, float(value))
    except ValueError:
        return None


def _send(
    method: str,
    url: str,
    *,
    who: str = "supplier",
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, bytes]:
    """One HTTP call; transport failures and retryable statuses become TransientError."""
    check_destination(url)
    parts = urlsplit(url)
    path = f"{parts.path or '/'}?{parts.query}" if parts.query else (parts.path or "/")
    pool = connection_pool(parts.scheme, parts.hostname or "", parts.port)
    try:
        response = pool.urlopen(
            method, path, body=body, headers=headers, redirect=False, preload_content=False,
            assert_same_host=False,
        )  # fmt: skip
    except urllib3.exceptions.TimeoutError as exc:
        raise TransientError(f"{who} timed out ({exc.__class__.__name__})") from exc
    except (urllib3.exceptions.HTTPError, OSError) as exc:
        raise TransientError(f"could not connect to the {who}") from exc
    complete = False
    try:
        status = response.status
        if 300 <= status < 400:
            where = response.headers.get("Location", "nowhere")[:200]
            raise PermanentError(
                f"answered with a redirect (HTTP {status} to {where}); redirects are not followed"
            )
        if status == 429:
            raise TransientError(f"{who} is rate limiting (HTTP 429)", _retry_after(response))
        if status >= 500:
            raise TransientError(f"{who} error (HTTP {status})")
        body = _read_capped(response)
        complete = True
        return status, body
    except urllib3.exceptions.TimeoutError as exc:
        raise TransientError(f"{who} timed out ({exc.__class__.__name__})") from exc
    except urllib3.exceptions.HTTPError as exc:
        raise TransientError(
            f"reading the {who}'s answer failed: {exc.__class__.__name__}"
        ) from exc
    finally:
        if not complete:
            # An answer we did not read to its end must not stay on a kept-alive connection:
            # the next request would read its leftover bytes as its own answer.
            response.close()
        response.release_conn()


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
    elif price >= Decimal(10) ** (PRICE_MAX_DIGITS - PRICE_DECIMALS):
        problems.append(
            f"price {data['price']} is out of range "
            f"(at most {PRICE_MAX_DIGITS - PRICE_DECIMALS} digits before the point)"
        )
    stock = data.get("stock")
    if not isinstance(stock, int) or isinstance(stock, bool) or stock < 0:
        problems.append(f"stock {stock!r} is not a non-negative integer")
    elif stock > STOCK_MAX:
        problems.append(f"stock {stock} is out of range (at most {STOCK_MAX})")
    if isinstance(data.get("currency"), str) and not CURRENCY.match(data["currency"].upper()):
        problems.append(f"currency {data['currency']!r} is not a 3-letter code")
    if isinstance(data.get("name"), str) and len(data["name"].strip()) > NAME_MAX:
        problems.append(f"name is {len(data['name'].strip())} characters long (at most {NAME_MAX})")
    if problems:
        raise PermanentError("supplier sent an invalid product: " + "; ".join(problems))
    assert price is not None and isinstance(stock, int)
    return SupplierProduct(
        sku=sku,
        name=data["name"].strip(),
        description=data["description"],
        price=price,
        currency=data["currency"].upper(),
        stock=stock,
        details=data,
    )


def fetch_product(sku: str) -> SupplierProduct:
    if not settings.SUPPLIER_API_URL:
        raise PermanentError("SUPPLIER_API_URL is not configured")
    url = f"{settings.SUPPLIER_API_URL}/products/{quote(sku, safe='')}"
    status, body = _send("GET", url, headers={"Accept": "application/json"})
    if status == 404:
        raise PermanentError("not found at the supplier (HTTP 404)")
    if status != 200:
        raise PermanentError(f"supplier refused the request (HTTP {status})")
    return parse_product(sku, body)


def post_status(payload: dict[str, Any], idempotency_key: str) -> int:
    """POST the run summary; the Idempotency-Key lets the receiver drop a repeat."""
    if not settings.STATUS_CALLBACK_URL:
        raise PermanentError("STATUS_CALLBACK_URL is not configured")
    status, _ = _send(
        "POST",
        settings.STATUS_CALLBACK_URL,
        who="status receiver",
        body=json.dumps(payload).encode(),
        headers={"Content-Type": "application/json", "Idempotency-Key": idempotency_key},
    )
    if not 200 <= status < 300:
        raise PermanentError(f"status callback refused (HTTP {status})")
    return status
