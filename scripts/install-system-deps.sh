#!/usr/bin/env bash
# Install the system packages orch's tests and demo use (Debian/Ubuntu). No-op when present.
set -euo pipefail
need=()
command -v podman >/dev/null 2>&1 || need+=(podman)
command -v runc >/dev/null 2>&1 || need+=(runc)
command -v catatonit >/dev/null 2>&1 || [[ -x /usr/libexec/podman/catatonit ]] || need+=(catatonit)
command -v numactl >/dev/null 2>&1 || need+=(numactl)
command -v systemd-analyze >/dev/null 2>&1 || need+=(systemd)
command -v cmake >/dev/null 2>&1 || need+=(cmake)
command -v ninja >/dev/null 2>&1 || need+=(ninja-build)
command -v g++ >/dev/null 2>&1 || need+=(g++)
command -v cc >/dev/null 2>&1 || need+=(gcc)          # tests/throttle/throttle_read.c
command -v chromium >/dev/null 2>&1 || need+=(chromium) # the gateway's status page test
if ((${#need[@]} == 0)); then
  exit 0
fi
if [[ $(id -u) -ne 0 ]]; then
  echo "orch needs these packages: ${need[*]} (run: sudo apt-get install -y ${need[*]})" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq "${need[@]}" >/dev/null
