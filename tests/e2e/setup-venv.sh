#!/usr/bin/env bash
# Creates (or refreshes) the Python virtualenv holding the end-to-end test clients, at
# $OTELEPHANT_E2E_VENV (default: .venv at the repository root). Idempotent: does nothing when
# the venv already matches tests/e2e/requirements.txt. Prints the venv's python on success.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
venv=${OTELEPHANT_E2E_VENV:-$root/.venv}
requirements=$root/tests/e2e/requirements.txt
stamp=$venv/.requirements.sha256
want=$(sha256sum "$requirements" | cut -d' ' -f1)

# One installer at a time when several tests ask at once.
exec 9>"$root/target/.e2e-venv.lock" 2>/dev/null || { mkdir -p "$root/target"; exec 9>"$root/target/.e2e-venv.lock"; }
flock 9

if [ ! -x "$venv/bin/python" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  python3 -m venv "$venv" >&2
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$requirements" >&2
  echo "$want" >"$stamp"
fi
echo "$venv/bin/python"
