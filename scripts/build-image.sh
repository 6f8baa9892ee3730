#!/usr/bin/env bash
# Build a local podman image that runs llama-server, without any registry.
#
# Usage: scripts/build-image.sh [IMAGE] [BINARY]
#   IMAGE   image name (default localhost/orch-llama-server:11434.0.0)
#   BINARY  llama-server binary (default: the path scripts/build-llama-server.sh prints)
#
# The image is FROM scratch: the binary, every library `ldd` lists and the
# dynamic loader, at their host paths. Its entrypoint is llama-server, so
#   podman run IMAGE --host 0.0.0.0 --port 8080 -m /models/x.gguf
# works. The binary's sha256 is stored as the label io.orch.llama-server.sha256;
# when IMAGE already exists with that label value nothing is rebuilt.
# Honours CONTAINERS_CONF (tests/CI point it at tests/podman.containers.conf)
# and PODMAN (default: podman). Prints the image name on its last line.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
image="${1:-localhost/orch-llama-server:11434.0.0}"
binary="${2:-}"
if [[ -z "$binary" ]]; then
  binary="$("$here/build-llama-server.sh" | tail -n 1)"
fi
podman="${PODMAN:-podman}"
label="io.orch.llama-server.sha256"

if [[ ! -x "$binary" ]]; then
  echo "build-image: not an executable: $binary" >&2
  exit 1
fi
binary="$(readlink -f "$binary")"
sha="$(sha256sum "$binary" | cut -d' ' -f1)"

old_id=""
if "$podman" image exists "$image"; then
  old_id="$("$podman" image inspect --format '{{ .Id }}' "$image")"
  current="$("$podman" image inspect --format "{{ index .Labels \"$label\" }}" "$image" 2>/dev/null || true)"
  if [[ "$current" == "$sha" ]]; then
    echo "build-image: $image is up to date (binary sha256 $sha)" >&2
    echo "$image"
    exit 0
  fi
fi

version="$("$binary" --version 2>&1 | grep -m1 -o 'version: .*' | cut -d' ' -f2- || true)"

work="$(mktemp -d "${TMPDIR:-/tmp}/orch-image.XXXXXX")"
trap 'rm -rf "$work"' EXIT
rootfs="$work/rootfs"
mkdir -p "$rootfs/usr/local/bin" "$rootfs/tmp" "$rootfs/models" "$rootfs/etc"
chmod 1777 "$rootfs/tmp"
install -m 0755 "$binary" "$rootfs/usr/local/bin/llama-server"

# Shared libraries and the loader, copied (links resolved) to the paths ldd
# reports, so the loader finds them exactly where the binary expects.
# `ldd` lines: "libx.so.N => /path/libx.so.N (0x...)" or "/lib64/ld-linux-x86-64.so.2 (0x...)".
mapfile -t libs < <(ldd "$binary" | awk '
  $2 == "=>" && $3 ~ /^\// { print $3; next }
  $1 ~ /^\// { print $1 }')
if [[ "${#libs[@]}" -eq 0 ]]; then
  echo "build-image: ldd listed no libraries for $binary (static binary?)" >&2
fi
for lib in "${libs[@]}"; do
  mkdir -p "$rootfs$(dirname "$lib")"
  cp -L "$lib" "$rootfs$lib"
done

# Minimal identity files: some libraries look the current user up.
printf 'root:x:0:0:root:/:/usr/local/bin/llama-server\nnobody:x:65534:65534:nobody:/:/usr/local/bin/llama-server\n' >"$rootfs/etc/passwd"
printf 'root:x:0:\nnogroup:x:65534:\n' >"$rootfs/etc/group"

cat >"$work/Containerfile" <<'EOF'
FROM scratch
COPY rootfs/ /
WORKDIR /
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/llama-server"]
EOF

"$podman" build --quiet --layers=false --file "$work/Containerfile" \
  --label "$label=$sha" \
  --label "io.orch.llama-server.version=${version:-unknown}" \
  --tag "$image" "$work" >&2
# Drop the image this one replaced, unless something still uses or names it.
if [[ -n "$old_id" && "$old_id" != "$("$podman" image inspect --format '{{ .Id }}' "$image")" ]]; then
  "$podman" image rm "$old_id" >/dev/null 2>&1 || true
fi
echo "$image"
