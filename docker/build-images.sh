#!/usr/bin/env bash
# Builds the walkthrough's images with podman, from static release builds of our binaries:
#   localhost/tandem-proxy:dev, localhost/tandem-injector:dev   FROM scratch, non-root, no shell
#   docker.io/hashicorp/http-echo:latest                       our docker/http-echo, FROM scratch
#   docker.io/tutum/curl:latest                                busybox-static + Debian's curl
# The app images carry the seed's names so its manifests run unchanged (podman uses a local
# image of that name and never pulls).
#
# Usage: docker/build-images.sh [proxy] [injector] [http-echo] [curl]     (default: all four)
# Any Rust image builds the same four binaries (tandem-agent too: the walkthrough runs it on the
# host) in one `cargo build`: one set of packages means one feature resolution, so nothing is
# compiled twice and a second run is a no-op.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)
# shellcheck source-path=SCRIPTDIR source=images.env
. "$here/images.env"

wanted=("$@")
[ ${#wanted[@]} -gt 0 ] || wanted=(proxy injector http-echo curl)

log() { printf 'build-images: %s\n' "$*"; }
die() { printf 'build-images: error: %s\n' "$*" >&2; exit 1; }

packages=()
for image in "${wanted[@]}"; do
  case $image in
    proxy | injector | http-echo) packages=(-p tandem-agent -p tandem-proxy -p tandem-injector -p http-echo) ;;
    curl) ;;
    *) die "unknown image \"$image\": expected proxy, injector, http-echo or curl" ;;
  esac
done

target=x86_64-unknown-linux-gnu
target_dir=$(cd "$repo" && cargo metadata --format-version 1 --no-deps | jq -r .target_directory)
bin_dir=$target_dir/$target/release
if [ ${#packages[@]} -gt 0 ]; then
  log "static release build: cargo build --release --target $target ${packages[*]}"
  # --target keeps build scripts and proc-macros dynamic; only our binaries get crt-static.
  (cd "$repo" && RUSTFLAGS="-C target-feature=+crt-static" \
     cargo build --release --locked --target "$target" "${packages[@]}")
fi

stage_root=$target_dir/tandem-images
mkdir -p "$stage_root"

# ldd exits 1 on a static non-PIE binary ("not a dynamic executable"): read its words, not its status.
is_static() {
  local out
  out=$(ldd "$1" 2>&1 || true)
  grep -Eq 'statically linked|not a dynamic executable' <<<"$out"
}

# Copies a static binary into a fresh build context, refusing a dynamic one (it could not run
# FROM scratch).
stage_binary() {
  local bin=$1 context=$stage_root/$1
  [ -x "$bin_dir/$bin" ] || die "$bin_dir/$bin was not built"
  if ! is_static "$bin_dir/$bin"; then
    die "$bin_dir/$bin is dynamically linked; it cannot run in a FROM scratch image"
  fi
  rm -rf "$context" && mkdir -p "$context"
  if command -v strip >/dev/null 2>&1; then
    strip -o "$context/$bin" "$bin_dir/$bin"
  else
    cp "$bin_dir/$bin" "$context/$bin"
  fi
  printf '%s' "$context"
}

# busybox-static for /bin/sh and sleep, curl and the libraries the dynamic loader needs for it.
stage_curl() {
  local context=$stage_root/curl rootfs
  rootfs=$context/rootfs
  rm -rf "$context" && mkdir -p "$rootfs/bin" "$rootfs/usr/bin" "$rootfs/tmp" "$rootfs/etc/ssl/certs"
  chmod 1777 "$rootfs/tmp"
  local busybox=/bin/busybox
  [ -x "$busybox" ] || die "$busybox is missing: install busybox-static (docker/setup-podman.sh)"
  is_static "$busybox" || die "$busybox is dynamically linked: install busybox-static"
  cp "$busybox" "$rootfs/bin/busybox"
  local applet
  for applet in $("$busybox" --list); do
    [ "$applet" = busybox ] || ln -sf busybox "$rootfs/bin/$applet"
  done
  local curl
  curl=$(command -v curl) || die "curl is missing: apt-get install curl"
  cp -L "$curl" "$rootfs/usr/bin/curl"
  rm -f "$rootfs/bin/curl"   # (busybox has no curl applet; never shadow the real one)
  local lib
  for lib in $(ldd "$curl" | awk '/=> \// { print $3 } /^[[:space:]]*\// { print $1 }'); do
    mkdir -p "$rootfs$(dirname "$lib")"
    cp -L "$lib" "$rootfs$lib"
  done
  [ -f /etc/ssl/certs/ca-certificates.crt ] &&
    cp -L /etc/ssl/certs/ca-certificates.crt "$rootfs/etc/ssl/certs/ca-certificates.crt"
  printf '%s' "$context"
}

build() {
  local containerfile=$here/$1 tag=$2 context=$3
  [ -n "$context" ] || exit 1   # staging failed and said why
  log "podman build -t $tag ($(basename "$containerfile"))"
  podman build --quiet --file "$containerfile" --tag "$tag" "$context" >/dev/null
}

# Staging runs in a subshell ($(...)): its failure is caught by the empty-context check in build().
for image in "${wanted[@]}"; do
  case $image in
    proxy) build tandem-proxy.Containerfile "$PROXY_IMAGE" "$(stage_binary tandem-proxy)" ;;
    injector) build tandem-injector.Containerfile "$INJECTOR_IMAGE" "$(stage_binary tandem-injector)" ;;
    http-echo) build http-echo.Containerfile "$HTTP_ECHO_IMAGE" "$(stage_binary http-echo)" ;;
    curl) build curl.Containerfile "$CURL_IMAGE" "$(stage_curl)" ;;
  esac
done
