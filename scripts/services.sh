#!/usr/bin/env bash
# Starts the services tests need when they are not running (no systemd on CI machines).
set -euo pipefail
if command -v libvirtd >/dev/null; then
  pgrep -x virtlogd >/dev/null || virtlogd -d || true
  pgrep -x libvirtd >/dev/null || libvirtd -d || true
fi
