#!/usr/bin/env bash
# Static checks of infra/ with checkov, offline: no policy download, no update check, no API key.
# Exits non-zero on any failed check, and on any .bicep file checkov's parser cannot read
# (checkov itself skips such a file with a warning, which would hide it from every check).
# Needs .venv-checkov:  python3 -m venv .venv-checkov && .venv-checkov/bin/pip install -r requirements-checkov.txt
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${CHECKOV_VENV:-$root/.venv-checkov}"
checkov="$venv/bin/checkov"

if [[ ! -x "$checkov" ]]; then
    echo "infra/check.sh: $checkov not found; create it with:" >&2
    echo "  python3 -m venv .venv-checkov && .venv-checkov/bin/pip install -r requirements-checkov.txt" >&2
    exit 2
fi

# The same parser (pycep, pinned by checkov) must read every file, or its checks never ran.
"$venv/bin/python" - "$root/infra" <<'PY'
import sys
from pathlib import Path

from pycep import BicepParser

failed = []
files = sorted(Path(sys.argv[1]).rglob("*.bicep"))
for path in files:
    try:
        BicepParser().parse(file_path=path)
    except Exception as error:  # any parse failure means checkov would skip the file
        failed.append(f"{path}: {str(error).splitlines()[0]}")
if not files or failed:
    print("checkov's Bicep parser cannot read:", *failed or ["(no .bicep files found)"], sep="\n  ", file=sys.stderr)
    sys.exit(1)
print(f"checkov's Bicep parser reads all {len(files)} .bicep files")
PY

# Offline: --skip-download skips the policy metadata download, BC_SKIP_MAPPING the mapping
# download, CKV_SKIP_PACKAGE_UPDATE_CHECK the PyPI version check; no --bc-api-key, so nothing
# is uploaded. Skips are inline (// checkov:skip=ID: reason) next to the resource they concern.
export CKV_SKIP_PACKAGE_UPDATE_CHECK=true BC_SKIP_MAPPING=TRUE
exec "$checkov" --directory "$root/infra" --framework bicep arm --skip-download --compact --quiet "$@"
