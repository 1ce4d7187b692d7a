#!/usr/bin/env bash
# Starts the services tests need when they are not running (no systemd on CI machines).
set -euo pipefail
if command -v libvirtd >/dev/null; then
  pgrep -x virtlogd >/dev/null || virtlogd -d || true
  pgrep -x libvirtd >/dev/null || libvirtd -d || true
fi
# The disk array of `amvm volume` (issue #11): this machine's own tgtd (management port 0, iSCSI
# portal 3260), started when it does not answer; its PID in /run/amvm-tgtd.pid. (The tests run
# private tgtd instances of their own.)
if command -v tgtd >/dev/null; then
  if ! tgtadm -C 0 --op show --mode sys >/dev/null 2>&1; then
    tgtd -p /run/amvm-tgtd.pid || true
  fi
fi
