#!/usr/bin/env bash
# Install what bench/run.py needs from Debian, but only what is missing (idempotent):
# nginx + the echo module (the upstream), wrk (closed-loop max throughput), golang-go (to build
# the open-loop generator in bench/loadgen at run time). Needs root (or sudo) and network access to
# the Debian mirrors; every network step has a timeout. Exits non-zero if something is still
# missing afterwards, so callers (tests/test_bench_smoke.py) can skip with the reason.
set -euo pipefail

need=()
command -v nginx >/dev/null 2>&1 || need+=(nginx)
ls /usr/lib/nginx/modules/ngx_http_echo_module.so >/dev/null 2>&1 \
  || ls /usr/share/nginx/modules/ngx_http_echo_module.so >/dev/null 2>&1 \
  || need+=(libnginx-mod-http-echo)
command -v wrk >/dev/null 2>&1 || need+=(wrk)
command -v go >/dev/null 2>&1 || need+=(golang-go)

if [ ${#need[@]} -eq 0 ]; then
  echo "bench/setup.sh: nginx, echo module, wrk and go are present" >&2
  exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    SUDO="sudo -n"
  else
    echo "bench/setup.sh: missing ${need[*]}; need root or passwordless sudo to apt-get them" >&2
    exit 1
  fi
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "bench/setup.sh: missing ${need[*]} and no apt-get here; install them by hand" >&2
  exit 1
fi

echo "bench/setup.sh: installing ${need[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
APT_OPTS=(-o Acquire::http::Timeout=20 -o Acquire::Retries=2 -o DPkg::Lock::Timeout=120)
timeout 300 $SUDO apt-get "${APT_OPTS[@]}" update -qq
# policy-rc.d: keep Debian's postinst from starting the system nginx on port 80.
rcd=/usr/sbin/policy-rc.d
created_rcd=0
if [ ! -e "$rcd" ]; then
  printf '#!/bin/sh\nexit 101\n' | $SUDO tee "$rcd" >/dev/null
  $SUDO chmod +x "$rcd"
  created_rcd=1
fi
status=0
timeout 600 $SUDO apt-get "${APT_OPTS[@]}" install -y -qq --no-install-recommends "${need[@]}" \
  || status=$?
if [ "$created_rcd" = 1 ]; then $SUDO rm -f "$rcd"; fi
exit $status
