"""Storage requests the app made, by kind, from Azurite's debug log (one line per request).

    python -m benchmarks.storage_requests AZURITE_DEBUG_LOG --per 3000

`benchmarks/fanout.py --storage-log FILE` writes such a log and prints this summary at its
end. Ledger rows are told apart by their keys (the table layout in
shared/adapters/table_ledger.py): the run row, machine rows, claims, the run index, events,
notes; queue requests by queue and verb. The benchmark's own storage probe is counted apart.
"""

from __future__ import annotations

import argparse
import collections
import re
import urllib.parse

REQUEST = re.compile(
    r"(Table|Queue|Blob)StorageContextMiddleware: RequestMethod=(\w+) RequestURL=(\S+)"
)
ENTITY = re.compile(r"^/[^/]+/(\w+)\(PartitionKey='([^']*)',RowKey='([^']*)'\)$")
PROBE = "probe"


def kind_of(service: str, method: str, url: str) -> str:
    """A request's kind, e.g. "Table PUT machine row", "Queue GET maintenance-tasks messages"."""
    parsed = urllib.parse.urlsplit(urllib.parse.unquote(url))
    path = parsed.path
    if PROBE in path:
        return f"{service} (the benchmark's probe)"
    if service == "Table":
        entity = ENTITY.match(path)
        if entity:
            _, partition, row = entity.groups()
            if partition.startswith("claim|"):
                what = "claim"
            elif partition == "runindex":
                what = "run index row"
            else:
                what = row.split("|", 1)[0] + " row"
            return f"Table {method} {what}"
        if path.endswith("$batch"):
            return "Table transaction"
        if "PartitionKey eq" in parsed.query:
            lower = re.search(r"RowKey ge '([a-z]+)\|", parsed.query)
            return f"Table {method} query" + (f" of {lower.group(1)} rows" if lower else "")
        return f"Table {method} {path.rsplit('/', 1)[-1] or 'table'}"
    if service == "Queue":
        parts = [p for p in path.split("/") if p][1:]
        what = " ".join(parts[:2]) if parts else "account"
        return f"Queue {method} {what}"
    return f"Blob {method}"


def count(log_path: str) -> collections.Counter[str]:
    counts: collections.Counter[str] = collections.Counter()
    with open(log_path, encoding="utf-8", errors="replace") as log:
        for line in log:
            found = REQUEST.search(line)
            if found:
                counts[kind_of(*found.groups())] += 1
    return counts


def summary(counts: collections.Counter[str], per: int, top: int = 14) -> str:
    """Requests per VM, the app's total and its largest kinds."""
    app = {k: n for k, n in counts.items() if PROBE not in k}
    total = sum(app.values())
    per = max(per, 1)
    lines = [f"storage requests by the app: {total} = {total / per:.2f} per VM"]
    for kind, n in sorted(app.items(), key=lambda item: -item[1])[:top]:
        lines.append(f"  {n / per:6.2f} per VM  {kind} ({n})")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("log", help="Azurite's debug log")
    parser.add_argument("--per", type=int, default=1, help="VMs started (divides the counts)")
    args = parser.parse_args()
    print(summary(count(args.log), args.per))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
