"""Clients for the warehouse API (pick) and the carrier API (ship): one call per batch.

Same rules as the supplier client (shop/supplier.py): explicit connect/read timeouts, a
response size cap, no redirects followed, one kept-alive connection pool per process, and
errors in two kinds: `TransientError` (timeouts, 5xx, 429, 409: retry the stage later) and
`PermanentError` (retrying cannot help). An order the API refuses is not an error of the
call: it comes back in the answer's `failed` map and is split out of its batch.

Both APIs take an `Idempotency-Key` (the batch and the orders asked for): a stage
delivered twice, or retried after a timeout whose request did reach the API, is answered
with the first answer instead of picking or shipping again.
"""

from __future__ import annotations

import hashlib
import json
import threading
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import urllib3
from django.conf import settings

MAX_RESPONSE_BYTES = 4_000_000


class ApiError(Exception):
    """An error a person can read; `str()` is what the admin shows."""


class TransientError(ApiError):
    pass


class PermanentError(ApiError):
    pass


@dataclass(frozen=True)
class Answer:
    """What the API did per order: `done` maps reference -> detail (tracking number)."""

    done: dict[str, str]
    failed: dict[str, str]


_lock = threading.Lock()
_pools: dict[str, urllib3.HTTPConnectionPool] = {}


def _pool(base_url: str) -> urllib3.HTTPConnectionPool:
    pool = _pools.get(base_url)
    if pool is None:
        with _lock:
            pool = _pools.get(base_url)
            if pool is None:
                parts = urlsplit(base_url)
                cls = (
                    urllib3.HTTPSConnectionPool
                    if parts.scheme == "https"
                    else urllib3.HTTPConnectionPool
                )
                pool = _pools[base_url] = cls(
                    parts.hostname,
                    parts.port,
                    maxsize=20,
                    block=False,
                    retries=False,  # the stage task retries, with backoff and jitter
                    timeout=urllib3.Timeout(
                        connect=settings.FULFILMENT_CONNECT_TIMEOUT,
                        read=settings.FULFILMENT_READ_TIMEOUT,
                    ),
                )
    return pool


def idempotency_key(stage: str, batch_id: int, references: list[str], round: int = 0) -> str:
    """The same batch asking for the same orders sends the same key (a transient error's
    retry may have reached the API). `round` counts how often a split-out order was refused:
    asking again after a refusal is a new question, with a new key."""
    digest = hashlib.sha256(",".join(sorted(references)).encode()).hexdigest()[:16]
    return f"batch-{batch_id}-{stage}-{digest}" + (f"-r{round}" if round else "")


def _post(base_url: str, path: str, payload: dict[str, Any], key: str, who: str) -> Any:
    parts = urlsplit(base_url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise PermanentError(f"the {who} URL {base_url!r} is not an http(s) URL")
    body = json.dumps(payload).encode()
    headers = {"Content-Type": "application/json", "Idempotency-Key": key}
    try:
        response = _pool(base_url).urlopen(
            "POST", f"{parts.path.rstrip('/')}{path}", body=body, headers=headers,
            redirect=False, preload_content=False, assert_same_host=False,
        )  # fmt: skip
    except urllib3.exceptions.TimeoutError as exc:
        raise TransientError(f"the {who} timed out") from exc
    except (urllib3.exceptions.HTTPError, OSError) as exc:
        raise TransientError(f"could not connect to the {who}") from exc
    complete = False
    try:
        status = response.status
        # 409: the API is still working on a request with this idempotency key (a second
        # delivery of the stage while the first waits for its answer): ask again later.
        if status in (409, 429) or status >= 500:
            raise TransientError(f"the {who} answered HTTP {status}")
        if status >= 300:
            raise PermanentError(f"the {who} answered HTTP {status}")
        data = response.read(MAX_RESPONSE_BYTES + 1)
        if len(data) > MAX_RESPONSE_BYTES:
            raise PermanentError(f"the {who}'s answer is over {MAX_RESPONSE_BYTES} bytes")
        complete = True
    except urllib3.exceptions.TimeoutError as exc:
        raise TransientError(f"the {who} timed out") from exc
    except urllib3.exceptions.HTTPError as exc:
        raise TransientError(f"reading the {who}'s answer failed") from exc
    finally:
        if not complete:
            response.close()  # never leave half an answer on a kept-alive connection
        response.release_conn()
    try:
        return json.loads(data)
    except ValueError as exc:
        raise PermanentError(f"the {who}'s answer is not JSON") from exc


def _answer(data: Any, done_key: str, references: list[str], who: str) -> Answer:
    """Validate an answer: every order asked for is either done or failed, with text."""
    if not isinstance(data, dict):
        raise PermanentError(f"the {who}'s answer is not a JSON object")
    done, failed = data.get(done_key) or {}, data.get("failed") or {}
    if isinstance(done, list):
        done = {ref: "" for ref in done}
    if not isinstance(done, dict) or not isinstance(failed, dict):
        raise PermanentError(f"the {who}'s answer has no valid {done_key!r}/'failed' maps")
    asked = set(references)
    answer = Answer(
        done={str(k): str(v)[:64] for k, v in done.items() if k in asked},
        failed={str(k): str(v)[:500] for k, v in failed.items() if k in asked and k not in done},
    )
    for ref in asked - answer.done.keys() - answer.failed.keys():
        answer.failed[ref] = f"the {who} did not mention this order"
    return answer


def warehouse_pick(
    *, batch_id: int, warehouse: str, references: list[str], round: int = 0
) -> Answer:
    """Ask the warehouse to pick these orders; which were picked, which could not be."""
    payload = {"batch": batch_id, "warehouse": warehouse, "orders": references}
    key = idempotency_key("pick", batch_id, references, round)
    data = _post(settings.FULFILMENT_WAREHOUSE_API_URL, "/pick", payload, key, "warehouse API")
    return _answer(data, "picked", references, "warehouse API")


def carrier_ship(
    *, batch_id: int, warehouse: str, parcels: list[dict[str, str]], round: int = 0
) -> Answer:
    """Hand the parcels to the carrier; tracking numbers by reference, or why not."""
    references = [p["reference"] for p in parcels]
    payload = {"batch": batch_id, "warehouse": warehouse, "parcels": parcels}
    key = idempotency_key("ship", batch_id, references, round)
    data = _post(settings.FULFILMENT_CARRIER_API_URL, "/shipments", payload, key, "carrier API")
    return _answer(data, "shipments", references, "carrier API")
