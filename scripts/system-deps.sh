#!/usr/bin/env bash
# Install the real servers the test suite starts (it starts and stops them itself), when missing.
# Debian packages need root (CI runs as root); elsewhere install them yourself.
set -euo pipefail
need=()
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need+=(postgresql)
# Node.js runs the Cloudflare KV emulator and the GramIO wire-compatibility check.
command -v node >/dev/null 2>&1 || need+=(nodejs)
command -v npm >/dev/null 2>&1 || need+=(npm)
# The Redis TLS test makes a throwaway CA with the openssl command.
command -v openssl >/dev/null 2>&1 || need+=(openssl)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "Missing Debian packages: ${need[*]} (run as root or: sudo apt-get install ${need[*]})" >&2
    exit 1
  fi
  echo "Installing ${need[*]} ..."
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  # Debian starts packaged services; the tests run their own on free ports instead.
  service redis-server stop >/dev/null 2>&1 || true
  service postgresql stop >/dev/null 2>&1 || true
fi
# The Cloudflare KV emulator (Miniflare) for the tests, pinned by the lockfile.
if [ -f tests/cloudflare/package-lock.json ] && [ ! -d tests/cloudflare/node_modules ]; then
  (cd tests/cloudflare && npm ci --no-audit --no-fund --silent)
fi
