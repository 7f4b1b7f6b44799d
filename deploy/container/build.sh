#!/usr/bin/env bash
# Builds the fedistill image with Podman from a prebuilt binary and no container registry: the Debian base
# image is made from an apt mirror with debootstrap (unless it already exists), then deploy/Containerfile's
# `prebuilt` target packages the binary on it. Run as root (debootstrap). Documented in docs/operations.md
# ("Building the image without registry access").
#
# Usage: deploy/container/build.sh [--bin PATH] [--tag TAG] [--base IMAGE] [--mirror URL] [--suite SUITE]
#                                  [--rebuild-base] [--no-strip]
#   --bin PATH      the fedistill binary to package (default: $FEDISTILL_BIN or target/release/fedistill)
#   --tag TAG       the image to build (default: fedistill:0.1.0, the name compose.yaml and deploy/k8s use)
#   --base IMAGE    the runtime base image (default: localhost/debian:SUITE-slim, made here when missing)
#   --mirror URL    Debian mirror for debootstrap (default: the one apt uses on this machine)
#   --suite SUITE   Debian release of the base (default: bookworm: glibc 2.36, as the image's documentation says)
#   --rebuild-base  make the base image again even if it exists
#   --no-strip      package the binary as it is (default: its debug sections are stripped into the image,
#                   symbols kept, so a panic's backtrace still names functions)
# Exit status: 0 when the image was built and `fedistill --version` ran in it as uid 10001 with a read-only
# root; 1 when a step failed; 2 on bad usage or a missing prerequisite.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
BIN="${FEDISTILL_BIN:-$ROOT/target/release/fedistill}"
TAG="fedistill:0.1.0"
SUITE="bookworm"
BASE=""
MIRROR=""
REBUILD_BASE=0
STRIP=1

usage() { sed -n '7,18p' "$0" | sed 's/^# \{0,1\}//'; }

while [ $# -gt 0 ]; do
  case "$1" in
    --bin) BIN="$2"; shift 2 ;;
    --tag) TAG="$2"; shift 2 ;;
    --base) BASE="$2"; shift 2 ;;
    --mirror) MIRROR="$2"; shift 2 ;;
    --suite) SUITE="$2"; shift 2 ;;
    --rebuild-base) REBUILD_BASE=1; shift ;;
    --no-strip) STRIP=0; shift ;;
    -h|--help) usage; exit 0 ;;
    *) echo "build.sh: unknown argument $1" >&2; usage >&2; exit 2 ;;
  esac
done
BASE="${BASE:-localhost/debian:$SUITE-slim}"

command -v podman >/dev/null 2>&1 || { echo "build.sh: podman is required (apt-get install podman)" >&2; exit 2; }
[ -x "$BIN" ] || { echo "build.sh: no fedistill binary at $BIN (cargo build --release, or --bin PATH)" >&2; exit 2; }

log() { printf '[build] %s\n' "$*"; }

# The mirror apt uses: the URIs of the sources that serve SUITE itself, deb822 .sources files first, then
# one-line sources.list entries (every match printed; the caller takes the first).
apt_mirror() {
  local f
  for f in /etc/apt/sources.list.d/*.sources; do
    [ -f "$f" ] || continue
    awk -v suite="$SUITE" '
      function flush() { if (uri != "" && ok && deb) print uri; uri = ""; ok = 0; deb = 0 }
      /^[[:space:]]*$/ { flush(); next }
      /^URIs:/ { uri = $2 }
      /^Types:/ { for (i = 2; i <= NF; i++) if ($i == "deb") deb = 1 }
      /^Suites:/ { for (i = 2; i <= NF; i++) if ($i == suite) ok = 1 }
      END { flush() }' "$f"
  done
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
    [ -f "$f" ] || continue
    awk -v suite="$SUITE" '$1 == "deb" { u = $2; s = $3; if ($2 ~ /^\[/) { u = $3; s = $4 } if (s == suite) print u }' "$f"
  done
  return 0
}

# ---- the base image ---------------------------------------------------------------------------------------

make_base() {
  [ "$(id -u)" -eq 0 ] || { echo "build.sh: making the base image needs root (debootstrap); or pass --base IMAGE" >&2; exit 2; }
  command -v debootstrap >/dev/null 2>&1 || { echo "build.sh: debootstrap is required (apt-get install debootstrap)" >&2; exit 2; }
  if [ -z "$MIRROR" ]; then
    MIRROR="$(apt_mirror | sed -n 1p)"
    [ -n "$MIRROR" ] || { echo "build.sh: no apt source for $SUITE found in /etc/apt; pass --mirror URL" >&2; exit 2; }
  fi
  local rootfs; rootfs="$(mktemp -d /tmp/fedistill-rootfs.XXXXXX)"
  # shellcheck disable=SC2064   # expand now: the trap must remove this directory, not a later value
  trap "rm -rf '$rootfs'" EXIT
  log "debootstrap --variant=minbase $SUITE from $MIRROR (about 30 s)"
  if ! debootstrap --variant=minbase "$SUITE" "$rootfs" "$MIRROR" >"$rootfs.log" 2>&1; then
    tail -n 20 "$rootfs.log" >&2; rm -f "$rootfs.log"
    echo "build.sh: debootstrap failed" >&2; exit 1
  fi
  rm -f "$rootfs.log"
  # Slim it as debian:*-slim is: no package caches or lists, no documentation (copyright files kept), no
  # locales or man pages, and dpkg told not to install them later.
  rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/cache/apt/*.bin "$rootfs"/var/lib/apt/lists/* \
    "$rootfs"/usr/share/man/* "$rootfs"/usr/share/info/* "$rootfs"/usr/share/locale/* "$rootfs"/var/log/*
  find "$rootfs/usr/share/doc" -mindepth 1 -not -name copyright -not -type d -delete
  find "$rootfs/usr/share/doc" -mindepth 1 -type d -empty -delete
  cat >"$rootfs/etc/dpkg/dpkg.cfg.d/slim" <<'EOF'
# Made by fedistill's deploy/container/build.sh, as in debian:*-slim.
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
EOF
  # The image configuration debian:*-slim has (an imported file system has none): without PATH, a runtime
  # that does not add a default one (podman kube play) finds no command by name.
  tar --numeric-owner -C "$rootfs" -c . |
    podman import --quiet --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
      --change 'CMD ["bash"]' - "$BASE" >/dev/null
  rm -rf "$rootfs"
  trap - EXIT
  log "base image $BASE: $(podman image inspect --format '{{.Size}}' "$BASE") bytes"
}

if [ "$REBUILD_BASE" -eq 1 ] || ! podman image exists "$BASE"; then
  make_base
else
  log "base image $BASE exists (--rebuild-base to make it again)"
fi

# ---- the image --------------------------------------------------------------------------------------------

glibc_needed="$(objdump -T "$BIN" 2>/dev/null | grep -o 'GLIBC_[0-9.]*' | sort -Vu | tail -n1 || true)"
log "binary $BIN ($(stat -c %s "$BIN") bytes; newest glibc symbol it needs: ${glibc_needed:-unknown})"

# A small context instead of the repository root: the Containerfile, the example configs it copies and the
# binary at prebuilt/fedistill (the repository's target/ is tens of GB and must not be walked).
ctx="$(mktemp -d /tmp/fedistill-image-context.XXXXXX)"
# shellcheck disable=SC2064
trap "rm -rf '$ctx'" EXIT
install -D -m 0644 "$ROOT/deploy/Containerfile" "$ctx/deploy/Containerfile"
install -D -m 0644 "$ROOT/deploy/examples/coordinator.toml" "$ctx/deploy/examples/coordinator.toml"
install -D -m 0644 "$ROOT/deploy/examples/participant.toml" "$ctx/deploy/examples/participant.toml"
install -D -m 0755 "$BIN" "$ctx/prebuilt/fedistill"
if [ "$STRIP" -eq 1 ]; then
  strip --strip-debug "$ctx/prebuilt/fedistill"
  log "stripped the debug sections: $(stat -c %s "$ctx/prebuilt/fedistill") bytes packaged"
fi

old_id="$(podman image inspect --format '{{.Id}}' "$TAG" 2>/dev/null || true)"
log "podman build --target prebuilt --build-arg RUNTIME_IMAGE=$BASE -t $TAG"
podman build --quiet --target prebuilt --build-arg "RUNTIME_IMAGE=$BASE" --network=none \
  -f "$ctx/deploy/Containerfile" -t "$TAG" "$ctx" >/dev/null
rm -rf "$ctx"
trap - EXIT
# The image this one replaces (another binary) would stay behind untagged: remove it unless a container uses it.
new_id="$(podman image inspect --format '{{.Id}}' "$TAG")"
if [ -n "$old_id" ] && [ "$old_id" != "$new_id" ]; then podman rmi "$old_id" >/dev/null 2>&1 || true; fi

# It runs: as the image's user, on a read-only root (a glibc older than the binary needs fails here).
if ! version="$(podman run --rm --read-only --network=none "$TAG" --version)"; then
  base_glibc="$(podman run --rm --network=none --entrypoint /usr/bin/ldd "$TAG" --version 2>/dev/null | sed -n '1s/.* //p' || true)"
  echo "build.sh: the image was built but \`fedistill --version\` fails in it (error above). The binary needs" \
    "${glibc_needed:-an unknown glibc}, the base has glibc ${base_glibc:-unknown}; if the loader complains, build" \
    "the binary on $SUITE or older, or pass the --suite of the build host's Debian" >&2
  exit 1
fi
user="$(podman image inspect --format '{{.Config.User}}' "$TAG")"
log "image $TAG: $version, user $user, $(podman image inspect --format '{{.Size}}' "$TAG") bytes"
