"""The ledger's hot requests (a row by its keys, a key range of one partition, a write, an
entity-group transaction), sent through the table SDK client's own pipeline (its identity,
retries, transport and hooks) in the service's wire format, without the SDK's models.

Reads: the SDK passes every row it reads through a generic model deserializer, then converts it
property by property, parsing each date with `strptime`. A verify round lists up to a run's
every machine row, and every start reads its run's row (a dozen dates). Here the request is the
one the SDK sends (same URL, headers and filter; the filter is built by `odata_filter` from
escaped values), and a row comes back as a `StoredEntity`: the same keys and values as the SDK's
`TableEntity` (dates as aware UTC datetimes, Int64 as int), its ETag in `metadata` the way the
SDK keeps it.

Transactions: azure-core builds a transaction's multipart body with the `email` package (a
regular expression compiled per boundary, each part run through policies on a thread pool made
for the call) and parses the answer the same way, so a transaction of one row cost three single
writes (BENCHMARKS.md). Here the body is the documented OData batch text, written directly, and
the answer's parts are read for their status lines and ETags. Failures raise what the SDK
raises: TableTransactionError with the failed operation's index, status and error code.

Both take values as the SDK does and store the same rows: `tests/adapters/test_table_wire.py`
writes and reads the same rows both ways and compares them.

It relies on the SDK client's `_client` (its generated client, whose `send_request` runs a
request through the pipeline): `requirements.txt` pins azure-data-tables, and the tests fail if
that changes shape."""

from __future__ import annotations

import base64
import json
import re
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote
from uuid import UUID

from azure.core import MatchConditions
from azure.core.exceptions import (
    DecodeError,
    HttpResponseError,
    ResourceExistsError,
    ResourceModifiedError,
    ResourceNotFoundError,
)
from azure.core.rest import HttpRequest
from azure.data.tables import TableClient, TableTransactionError, UpdateMode

# What the SDK itself sends with a read (its generated request builders).
READ_HEADERS = {
    "Accept": "application/json;odata=minimalmetadata",
    "DataServiceVersion": "3.0",
    "x-ms-version": "2019-02-02",
}
API_VERSION = "2019-02-02"
WRITE_HEADERS = {
    "Content-Type": "application/json",
    "Accept": "application/json;odata=minimalmetadata",
    "Prefer": "return-no-content",
    "DataServiceVersion": "3.0",
    "x-ms-version": API_VERSION,
}
TYPE_SUFFIX = "@odata.type"
INT32 = range(-(2**31), 2**31)
BOUNDARY = re.compile(r"boundary=([^\s;]+)", re.IGNORECASE)
STATUS_LINE = re.compile(r"HTTP/1\.1 (\d{3})")
# What an operation of a transaction becomes: its method, and whether the row must exist.
METHODS = {
    ("update", UpdateMode.REPLACE): "PUT",
    ("update", UpdateMode.MERGE): "MERGE",
    ("upsert", UpdateMode.REPLACE): "PUT",
    ("upsert", UpdateMode.MERGE): "MERGE",
}
NEXT_PARTITION = "x-ms-continuation-NextPartitionKey"
NEXT_ROW = "x-ms-continuation-NextRowKey"
PARAMETER = re.compile(r"@(\w+)")


class StoredEntity(dict[str, Any]):
    """A row as the service returned it; `metadata["etag"]` is its version, as in the SDK's
    TableEntity."""

    __slots__ = ("metadata",)

    def __init__(self, values: Mapping[str, Any], etag: str | None) -> None:
        super().__init__(values)
        self.metadata = {"etag": etag}


def odata_filter(template: str, **values: str) -> str:
    """`template` with each `@name` replaced by its value as an OData string literal (single
    quotes doubled), in one pass: a value is never read as a template."""

    def literal(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in values:
            raise ValueError(f"filter parameter @{name} has no value")
        value = values[name]
        if not isinstance(value, str):
            raise TypeError(f"filter parameter @{name} must be a string")
        return "'" + value.replace("'", "''") + "'"

    return PARAMETER.sub(literal, template)


def _datetime(text: str) -> datetime:
    # The service sends up to 7 decimal places; fromisoformat keeps 6, as the SDK does.
    return datetime.fromisoformat(text).astimezone(UTC)


CONVERSIONS: dict[str, Callable[[Any], Any]] = {
    "Edm.DateTime": _datetime,
    "Edm.Int64": int,
    "Edm.Double": float,
    "Edm.Guid": UUID,
    "Edm.Binary": base64.b64decode,
}


def entity_from(document: Mapping[str, Any]) -> StoredEntity:
    """One row of the service's JSON (minimal metadata): typed values converted as the SDK
    converts them; `Timestamp` and the `odata.*` annotations are metadata, not properties."""
    values: dict[str, Any] = {}
    types: dict[str, str] = {}
    for name, value in document.items():
        if name.endswith(TYPE_SUFFIX):
            types[name[: -len(TYPE_SUFFIX)]] = value
        elif not name.startswith("odata.") and name != "Timestamp":
            values[name] = value
    for name, edm in types.items():
        convert = CONVERSIONS.get(edm)
        if convert is not None and name in values:
            values[name] = convert(values[name])
    return StoredEntity(values, document.get("odata.etag"))


def entity_json(entity: Mapping[str, Any]) -> dict[str, Any]:
    """A row's properties as the service takes them: dates (UTC, microseconds) and 64-bit
    integers and doubles annotated with their types, as the SDK annotates them; None left out.
    Anything else the ledger never stores (bytes, GUIDs, enums) is refused, not guessed."""
    document: dict[str, Any] = {}
    for name, value in entity.items():
        if value is None:
            continue
        if type(value) in (str, bool):
            document[name] = value
        elif isinstance(value, datetime):
            document[name] = value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
            document[name + TYPE_SUFFIX] = "Edm.DateTime"
        elif type(value) is int:
            if value in INT32:
                document[name] = value
            else:
                document[name] = str(value)
                document[name + TYPE_SUFFIX] = "Edm.Int64"
        elif type(value) is float:
            document[name] = value
            document[name + TYPE_SUFFIX] = "Edm.Double"
        else:
            raise TypeError(f"property {name}: the ledger does not store {type(value).__name__}")
    return document


class TableWire:
    """Point reads, key-range queries, writes and transactions of one table."""

    def __init__(self, table: TableClient) -> None:
        self._client = table._client  # the SDK's generated client: its pipeline
        self._name = quote(table.table_name, safe="")
        # Operations inside a transaction name their table and rows by absolute URL.
        self._account_url = table.url.rstrip("/")

    def get(self, partition: str, row: str) -> StoredEntity | None:
        """The row, or None when there is none."""
        response = self._client.send_request(
            HttpRequest(
                "GET",
                f"/{self._name}(PartitionKey='{_key(partition)}',RowKey='{_key(row)}')",
                headers=READ_HEADERS,
            )
        )
        if response.status_code == 404:
            return None
        _raise_unless_ok(response)
        return entity_from(response.json())

    def query(self, filter_text: str) -> Iterator[StoredEntity]:
        """Rows matching an OData filter (from `odata_filter`), following the service's
        continuations (it answers at most 1,000 rows at a time)."""
        params = {"$filter": filter_text}
        while True:
            response = self._client.send_request(
                HttpRequest("GET", f"/{self._name}()?{_query_string(params)}", headers=READ_HEADERS)
            )
            _raise_unless_ok(response)
            for document in response.json().get("value", []):
                yield entity_from(document)
            next_partition = response.headers.get(NEXT_PARTITION)
            if not next_partition:
                return
            params = {"$filter": filter_text, "NextPartitionKey": next_partition}
            next_row = response.headers.get(NEXT_ROW)
            if next_row:
                params["NextRowKey"] = next_row

    def write(self, entity: Mapping[str, Any], etag: str | None) -> str:
        """Create the row (etag None) or replace it while it has that version; its new ETag.
        ResourceExistsError, ResourceModifiedError or ResourceNotFoundError as the SDK raises
        them."""
        body = json.dumps(entity_json(entity)).encode("utf-8")
        if etag is None:
            request = HttpRequest("POST", f"/{self._name}", headers=WRITE_HEADERS, content=body)
        else:
            request = HttpRequest(
                "PUT",
                f"/{self._row_path(entity)}",
                headers={**WRITE_HEADERS, "If-Match": etag},
                content=body,
            )
        response = self._client.send_request(request)
        if response.status_code not in (201, 204):
            raise _status_error(response.status_code, response.text(), response=response)
        return str(response.headers["ETag"])

    def transact(self, operations: Sequence[tuple[Any, ...]]) -> list[dict[str, str]]:
        """An entity-group transaction of the SDK's operation tuples ("create", entity),
        ("update" | "upsert", entity, {"mode", "etag", "match_condition"}) and ("delete",
        entity, {"etag", "match_condition"}): all applied or none. Returns each operation's
        {"etag": …} (none for a delete); TableTransactionError names the one that failed."""
        batch, changeset = f"batch_{uuid.uuid4()}", f"changeset_{uuid.uuid4()}"
        lines = [f"--{batch}", f"Content-Type: multipart/mixed; boundary={changeset}", ""]
        for index, operation in enumerate(operations):
            method, url, headers, body = self._operation(operation)
            lines += [
                f"--{changeset}",
                "Content-Type: application/http",
                "Content-Transfer-Encoding: binary",
                f"Content-ID: {index}",
                "",
                f"{method} {url} HTTP/1.1",
                *(f"{name}: {value}" for name, value in headers.items()),
                f"Content-Length: {len(body.encode('utf-8'))}",
                "",
                body,
            ]
        lines += [f"--{changeset}--", "", f"--{batch}--", ""]
        response = self._client.send_request(
            HttpRequest(
                "POST",
                "/$batch",
                headers={
                    "x-ms-version": API_VERSION,
                    "DataServiceVersion": "3.0",
                    "MaxDataServiceVersion": "3.0;NetFx",
                    "Content-Type": f"multipart/mixed; boundary={batch}",
                    "Accept": "application/json",
                },
                content="\r\n".join(lines).encode("utf-8"),
            ),
            # Streamed, as the SDK asks for it: the pipeline would try to decode the
            # multipart answer as JSON or XML.
            stream=True,
        )
        response.read()
        if response.status_code != 202:
            raise _status_error(response.status_code, response.text(), response=response)
        answer = BOUNDARY.search(response.headers.get("Content-Type", ""))
        if answer is None:
            raise DecodeError("a transaction's answer is not multipart")
        parts = answer_parts(response.text().replace("\r\n", "\n"), answer.group(1))
        for status, _, text in parts:
            if not 200 <= status < 300:
                raise _transaction_error(status, text)
        if len(parts) != len(operations):
            raise DecodeError(
                f"a transaction of {len(operations)} operations was answered in {len(parts)} parts"
            )
        return [{"etag": headers["etag"]} if "etag" in headers else {} for _, headers, _ in parts]

    def _operation(self, operation: tuple[Any, ...]) -> tuple[str, str, dict[str, str], str]:
        """One operation of a transaction: method, absolute URL, headers and body."""
        kind, entity = operation[0], operation[1]
        options: Mapping[str, Any] = operation[2] if len(operation) > 2 else {}
        headers = {
            "Content-Type": "application/json",
            "Accept": "application/json;odata=minimalmetadata",
            "DataServiceVersion": "3.0",
            "x-ms-version": API_VERSION,
        }
        row_url = f"{self._account_url}/{self._row_path(entity)}"
        if kind == "create":
            headers["Prefer"] = "return-no-content"
            return (
                "POST",
                f"{self._account_url}/{self._name}",
                headers,
                json.dumps(entity_json(entity)),
            )
        if kind == "delete":
            headers["If-Match"] = _if_match(options)
            return "DELETE", row_url, headers, ""
        method = METHODS.get((kind, UpdateMode(options.get("mode", UpdateMode.MERGE))))
        if method is None:
            raise ValueError(f"unknown transaction operation {kind!r}")
        if kind == "update":
            headers["If-Match"] = _if_match(options)
        return method, row_url, headers, json.dumps(entity_json(entity))

    def _row_path(self, entity: Mapping[str, Any]) -> str:
        partition, row = _key(entity["PartitionKey"]), _key(entity["RowKey"])
        return f"{self._name}(PartitionKey='{partition}',RowKey='{row}')"


def _if_match(options: Mapping[str, Any]) -> str:
    """The If-Match an update or delete sends: its version when only that version may change,
    else any version ("*"), as the SDK does."""
    if options.get("match_condition") is MatchConditions.IfNotModified:
        etag = options.get("etag")
        if not etag:
            raise ValueError("an ETag-checked operation needs its etag")
        return str(etag)
    return "*"


def answer_parts(body: str, boundary: str) -> list[tuple[int, dict[str, str], str]]:
    """The HTTP answers inside a multipart body (a changeset's, nested in the batch's): each
    part's status, headers (names lower-cased) and body."""
    answers: list[tuple[int, dict[str, str], str]] = []
    for chunk in body.split(f"--{boundary}")[1:]:
        if chunk.startswith("--"):
            break  # the closing delimiter
        part_headers, _, rest = chunk.lstrip("\n").partition("\n\n")
        inner = BOUNDARY.search(part_headers)
        if inner is not None and "multipart/mixed" in part_headers.lower():
            answers += answer_parts(rest, inner.group(1))
            continue
        head, _, text = rest.partition("\n\n")
        status_line, *header_lines = head.split("\n")
        status = STATUS_LINE.match(status_line.strip())
        if status is None:
            raise DecodeError(f"a transaction's answer has a part without a status: {status_line}")
        headers = {}
        for line in header_lines:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        answers.append((int(status.group(1)), headers, text.strip()))
    return answers


def _error_words(text: str) -> tuple[str | None, str]:
    """The service's error code and message from a JSON error body, when it has one."""
    try:
        error = json.loads(text).get("odata.error", {})
        message = error.get("message", {})
        return error.get("code"), str(
            message.get("value", "") if isinstance(message, dict) else message
        )
    except (ValueError, AttributeError):
        return None, text


def _transaction_error(status: int, text: str) -> TableTransactionError:
    """What the SDK raises for a failed operation: its index (the message's "N:" prefix),
    status and error code."""
    code, message = _error_words(text)
    error = TableTransactionError(message=f"{message}\nErrorCode:{code}")
    error.status_code = status
    setattr(error, "error_code", code)  # noqa: B010 (the SDK sets it so, outside __init__)
    return error


def _status_error(status: int, text: str, **kwargs: Any) -> HttpResponseError:
    code, message = _error_words(text)
    kind = {409: ResourceExistsError, 412: ResourceModifiedError, 404: ResourceNotFoundError}.get(
        status, HttpResponseError
    )
    error = kind(message=f"{message}\nErrorCode:{code}", **kwargs)
    setattr(error, "error_code", code)  # noqa: B010 (the SDK sets it so, outside __init__)
    return error


def _key(value: str) -> str:
    """A key inside the URL's `(PartitionKey='…')`: quotes doubled, then percent-encoded, as
    the SDK does."""
    return quote(value.replace("'", "''"), safe="")


def _query_string(params: Mapping[str, str]) -> str:
    """Every value percent-encoded, braces too: the client fills `{…}` in a URL as a template."""
    return "&".join(f"{name}={quote(value, safe='')}" for name, value in params.items())


def _raise_unless_ok(response: Any) -> None:
    if response.status_code != 200:
        raise _status_error(response.status_code, response.text(), response=response)
