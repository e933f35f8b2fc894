#!/usr/bin/env bash
# Debian/Ubuntu packages the service needs: runsc (gVisor), debootstrap (base image),
# iproute2 + nftables (egress for image builds), skopeo + umoci (registry pulls), procps,
# and gcc (builds a 1 KB compatibility shim for old runsc). The tests also need
# docker-registry, apache2-utils (htpasswd) and openssl (a real registry on loopback) and
# busybox-static (a tiny image to push), and node + npm for the MCP Inspector CLI check of
# the MCP server (Debian's nodejs 18 is enough for the pinned inspector 0.15.0; an existing
# newer node is kept). e2fsprogs + mount: per-sandbox disks (mkfs.ext4, loop mounts).
# Installs only what is missing; needs root.
set -euo pipefail
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
