#!/usr/bin/env bash
# Makes the browser tests' tools ready, idempotently, and prints the browser's path:
# - Debian's chromium (/usr/bin/chromium), installed with apt-get when it is missing (as root,
#   or through sudo); playwright never downloads a browser of its own;
# - playwright-core from npm, into tests/browser/node_modules, as package-lock.json pins it
#   (npm ci again only when the lock file changes).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
chromium=${CHROMIUM:-/usr/bin/chromium}

# One installer at a time when several tests ask at once.
mkdir -p "$here/../../target"
exec 9>"$here/../../target/.browser-setup.lock"
flock 9

if [ ! -x "$chromium" ]; then
  sudo=""
  if [ "$(id -u)" != 0 ]; then sudo="sudo -n"; fi
  echo "installing Debian's chromium" >&2
  $sudo apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq chromium >&2
fi

stamp=$here/node_modules/.package-lock.sha256
want=$(sha256sum "$here/package-lock.json" | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  (cd "$here" && npm ci --no-audit --no-fund --loglevel=error) >&2
  echo "$want" >"$stamp"
fi
echo "$chromium"
