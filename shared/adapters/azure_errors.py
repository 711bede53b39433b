"""Turn azure-core errors into the domain's AzureCallFailed, keeping the service's words."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator

from azure.core.exceptions import AzureError, HttpResponseError

from shared.domain.errors import AzureCallFailed


def service_words(error: AzureError) -> tuple[int | None, str | None, str]:
    """(HTTP status, service error code, service message) of an SDK error."""
    status = error.status_code if isinstance(error, HttpResponseError) else None
    code: str | None = None
    message = str(error.message or error)
    inner = getattr(error, "error", None)
    if inner is not None:
        code = getattr(inner, "code", None) or code
        message = getattr(inner, "message", None) or message
    if code is None and isinstance(error, HttpResponseError) and error.response is not None:
        with contextlib.suppress(Exception):
            body = json.loads(error.response.text())
            detail = body.get("error", body) if isinstance(body, dict) else {}
            code = detail.get("code") or code
            message = detail.get("message") or message
    return status, code, message


@contextlib.contextmanager
def translated(service: str, kind: type[AzureCallFailed] = AzureCallFailed) -> Iterator[None]:
    """Raise `kind` (an AzureCallFailed) for any SDK error inside the block."""
    try:
        yield
    except AzureError as e:
        status, code, message = service_words(e)
        error_kind = kind if status is not None and 400 <= status < 500 else AzureCallFailed
        raise error_kind(service, status, code, message) from e
