"""Client for the supplier's product API and the status callback, validating what it gets.

Every call has explicit connect/read timeouts and a response size cap, follows no
redirects, and goes only to the configured hosts (never to another loopback, private or
link-local address: a supplier answering `302 Location: http://127.0.0.1:6379/` or the
cloud metadata address gets a permanent error, not a request). Errors come in two kinds,
because they are handled differently: `TransientError` (worth retrying later) and
`PermanentError` (retrying cannot help; record it with a message a person understands).

The transport is geventhttpclient (a C response parser, gevent sockets): against urllib3
with every per-request cost already cut, it halved the client's CPU per product and took a
third off the 10,000-product refresh (README, Performance). One client per origin and event
loop is reused by every chunk: connections are kept alive (checked with a plain
zero-timeout poll before reuse), nothing is looked up in the environment per request (no
proxy or netrc lookups). Its sockets are gevent's whether or not the process is patched,
so concurrent calls run on greenlets (`core.concurrency.map_in_batches`), never threads.
Outbound proxies, if ever needed, are configured here explicitly.
"""

from __future__ import annotations

import functools
import ipaddress
import json
import re
import socket
import weakref
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any
from urllib.parse import quote, urlsplit

from django.conf import settings
from gevent import monkey
from geventhttpclient import HTTPClient
from geventhttpclient.response import (
    HTTPConnectionClosed,
    HTTPParseError,
    HTTPSocketPoolResponse,
)

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


USER_AGENT = "shop-backoffice (+geventhttpclient)"
RETRIES_ON_A_CLOSED_CONNECTION = 2

# One client per (thread, origin): gevent's sockets and locks belong to the hub of the
# thread that made them. A gevent worker has one thread (one hub); elsewhere each calling
# thread has its own clients, in a store of the real thread (gevent's patched
# threading.local would be a greenlet's), freed with it: short-lived threads calling the
# supplier do not each leave a client with its kept-alive connections behind.
_thread_store = monkey.get_original("_thread", "_local")()


def _still_open(sock: socket.socket) -> bool:
    """Reuse check of a pooled connection: the library's own uses select(), which refuses
    descriptors above 1024 (a node with hundreds of connections reaches them) and on a
    patched worker goes through gevent's emulation."""
    return sock.fileno() >= 0 and not readable_now(sock)


def client_for(scheme: str, host: str, port: int | None) -> HTTPClient:
    """The calling event loop's client of one origin, sized for every concurrent request of
    the process (`SUPPLIER_POOL_SIZE`: a request beyond it waits for a connection)."""
    clients: dict[tuple[str, str, int | None], HTTPClient] | None
    clients = getattr(_thread_store, "clients", None)
    if clients is None:
        clients = _thread_store.clients = {}
    key = (scheme, host, port)
    client = clients.get(key)
    if client is None:
        client = clients[key] = HTTPClient(
            host,
            port,
            ssl=scheme == "https",  # verified against the system's CA bundle (or certifi)
            concurrency=settings.SUPPLIER_POOL_SIZE,
            connection_timeout=settings.SUPPLIER_CONNECT_TIMEOUT,
            network_timeout=settings.SUPPLIER_READ_TIMEOUT,  # each wait on the socket
            headers={"User-Agent": USER_AGENT},
        )
        pool = client._connection_pool
        pool._is_socket_alive = _still_open  # type: ignore[method-assign]
        # The library retries a request whose connection closed before an answer up to
        # `size + 1` times, meant for a pool full of stale connections; ours are checked
        # before reuse, so two retries: a server that drops every connection must not see
        # 800 connects per product. (Only read there; the semaphore keeps the real size.)
        pool.size = RETRIES_ON_A_CLOSED_CONNECTION - 1
        # The store dies with its thread: close the kept-alive sockets then, not whenever
        # the collector gets to them (an unclosed-socket ResourceWarning each).
        weakref.finalize(client, pool.close)
    return client


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


def _read_capped(response: HTTPSocketPoolResponse) -> bytes:
    cap = settings.SUPPLIER_MAX_RESPONSE_BYTES
    declared = response.get("Content-Length")
    if isinstance(declared, str) and declared.isdigit() and int(declared) > cap:
        raise PermanentError(f"response too large ({declared} bytes, limit {cap})")
    body = response.read(cap + 1)
    if len(body) > cap:
        raise PermanentError(f"response too large (over {cap} bytes)")
    if not response.message_complete:
        raise HTTPParseError("the connection closed before the end of the answer")
    return body


def _retry_after(response: HTTPSocketPoolResponse) -> float | None:
    value = response.get("Retry-After") or ""
    try:
        return max(0.0, float(value))  # type: ignore[arg-type]
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
    """One HTTP call; transport failures and retryable statuses become TransientError.

    A kept-alive connection the server closed before answering is retried on a new one by
    the library (idempotent methods only, as RFC 9110 allows); nothing else is retried here.
    """
    check_destination(url)
    parts = urlsplit(url)
    path = f"{parts.path or '/'}?{parts.query}" if parts.query else (parts.path or "/")
    client = client_for(parts.scheme, parts.hostname or "", parts.port)
    try:
        response = client.request(method, path, body=body, headers=headers)
    except TimeoutError as exc:
        raise TransientError(f"{who} timed out (connecting or waiting for the answer)") from exc
    except HTTPConnectionClosed as exc:
        raise TransientError(f"the {who} closed the connection without answering") from exc
    except HTTPParseError as exc:
        raise TransientError(f"the {who}'s answer is not HTTP ({exc})") from exc
    except OSError as exc:
        raise TransientError(f"could not connect to the {who}") from exc
    try:
        status = response.status_code
        if 300 <= status < 400:
            where = str(response.get("Location") or "nowhere")[:200]
            raise PermanentError(
                f"answered with a redirect (HTTP {status} to {where}); redirects are not followed"
            )
        if status == 429:
            raise TransientError(f"{who} is rate limiting (HTTP 429)", _retry_after(response))
        if status >= 500:
            raise TransientError(f"{who} error (HTTP {status})")
        return status, _read_capped(response)
    except TimeoutError as exc:
        raise TransientError(f"{who} timed out (reading the answer)") from exc
    except (HTTPParseError, OSError) as exc:
        raise TransientError(
            f"reading the {who}'s answer failed: {exc.__class__.__name__}"
        ) from exc
    finally:
        # Back to the pool only when the answer was read to its end (the library closes it
        # otherwise): the next request must not read this one's leftover bytes.
        response.release()


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
