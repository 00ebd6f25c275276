#!/usr/bin/env bash
# Makes this machine able to run Kubernetes Pod YAML with podman (Debian 12, as root).
# Idempotent: a second run only checks. Facts behind it: ../shared/reference/local-pods.md
#  - podman + runc + busybox-static (busybox gives the stand-in curl image its shell);
#  - crun (podman's default runtime) fails on these machines: use runc, with default ulimits
#    low enough for runc to set them.
set -euo pipefail

conf=/etc/containers/containers.conf
want_conf='[containers]
default_ulimits = ["nofile=1024:1024", "nproc=1024:1024"]

[engine]
runtime = "runc"'

need=()
for pkg in podman runc busybox-static curl jq openssl; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || need+=("$pkg")
done
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "setup-podman: missing ${need[*]}; run as root or install them" >&2
    exit 1
  fi
  echo "setup-podman: installing ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get -o DPkg::Lock::Timeout=600 update -qq
  apt-get -o DPkg::Lock::Timeout=600 install -y -qq "${need[@]}" >/dev/null
fi

if ! command -v kubectl >/dev/null 2>&1; then
  echo "setup-podman: kubectl is missing (it applies the webhook's patch: kubectl patch --local);" \
       "it is not in Debian 12's archive, install it from https://kubernetes.io/docs/tasks/tools/" >&2
  exit 1
fi

# Only the two settings we need; leave anything else an operator put there alone.
conf_ok() {
  [ -f "$conf" ] &&
    grep -Eq '^[[:space:]]*runtime[[:space:]]*=[[:space:]]*"runc"' "$conf" &&
    grep -Eq '^[[:space:]]*default_ulimits[[:space:]]*=.*nofile=1024:1024' "$conf"
}
if ! conf_ok; then
  if [ -f "$conf" ] && [ -s "$conf" ]; then
    cp "$conf" "$conf.tandem-backup"
    echo "setup-podman: $conf did not set runtime=runc and default_ulimits; saved it as $conf.tandem-backup"
  fi
  mkdir -p "$(dirname "$conf")"
  printf '%s\n' "$want_conf" >"$conf"
  echo "setup-podman: wrote $conf (runtime runc, default ulimits nofile/nproc 1024)"
fi

# A smoke test that the runtime really starts containers would need an image; the walkthrough
# builds its own right after this, so `podman info` is the check here.
podman info --format '{{.Host.OCIRuntime.Name}}' >/dev/null
