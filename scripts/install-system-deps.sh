#!/usr/bin/env bash
# Debian/Ubuntu packages the service needs: a current runsc (gVisor; see below), debootstrap (base image),
# iproute2 + nftables (egress for image builds), skopeo + umoci (registry pulls), procps,
# and gcc (builds a 1 KB compatibility shim for old runsc). The tests also need
# docker-registry, apache2-utils (htpasswd) and openssl (a real registry on loopback) and
# busybox-static (a tiny image to push), and node + npm for the MCP Inspector CLI check of
# the MCP server (Debian's nodejs 18 is enough for the pinned inspector 0.15.0; an existing
# newer node is kept). e2fsprogs + mount: per-sandbox disks (mkfs.ext4, loop mounts).
# Installs only what is missing; needs root.
set -euo pipefail
# runsc: a current gVisor (RUNSC_MIN or newer). Debian 13 (trixie) ships 0.0~20240729.0; on
# Debian 12 (bookworm) that same package comes from trixie, pinned by apt preferences so
# that it is the only package taken from there (its binary is static: no dependencies).
RUNSC_MIN=20240729
runsc_date() { runsc --version 2>/dev/null | sed -n 's/.*\(20[0-9]\{6\}\).*/\1/p' | head -n1; }
codename=$(. /etc/os-release && echo "${VERSION_CODENAME:-}")
if [ "$codename" = bookworm ] && [ ! -f /etc/apt/sources.list.d/sbx-trixie-runsc.sources ]; then
  mirror=$(sed -n 's/^URIs: *\(http[^ ]*\/debian\)\/*$/\1/p' /etc/apt/sources.list.d/*.sources \
             2>/dev/null | head -n1 || true)
  [ -n "$mirror" ] || mirror=$(sed -n 's/^deb \(http[^ ]*\/debian\)\/* bookworm .*/\1/p' \
                                 /etc/apt/sources.list 2>/dev/null | head -n1 || true)
  mirror=${mirror:-http://deb.debian.org/debian}
  echo "adding trixie (for runsc only) from $mirror"
  printf 'Types: deb\nURIs: %s\nSuites: trixie\nComponents: main\nSigned-By: %s\n' \
    "$mirror" /usr/share/keyrings/debian-archive-keyring.gpg \
    > /etc/apt/sources.list.d/sbx-trixie-runsc.sources
  printf '%s\n' "# sandbox-service: only runsc comes from trixie (a current gVisor on Debian 12)" \
    "Package: *" "Pin: release n=trixie" "Pin-Priority: 1" "" \
    "Package: runsc" "Pin: release n=trixie" "Pin-Priority: 990" \
    > /etc/apt/preferences.d/sbx-trixie-runsc
fi
have=$(runsc_date || true)
if [ -z "$have" ] || [ "$have" -lt "$RUNSC_MIN" ]; then
  echo "installing a current runsc (have: ${have:-none})"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends runsc >/dev/null
fi

pkgs=(runsc debootstrap iproute2 nftables skopeo umoci procps ca-certificates gcc libc6-dev make
      e2fsprogs mount
      docker-registry apache2-utils openssl busybox-static)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
command -v npx >/dev/null 2>&1 || missing+=(nodejs npm)
if [ "${#missing[@]}" -gt 0 ]; then
  echo "installing: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
runsc --version | sed -n 1p  # sed reads it all: no SIGPIPE under pipefail
