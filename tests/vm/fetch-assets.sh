#!/bin/sh
# fetch-assets.sh DIR [ARCH]: a Debian kernel and busybox-static for the VM tests
# (tests/vm.rs), downloaded with `apt-get download` (no installation) and unpacked into
# DIR/root. ARCH is Debian's name: amd64 (the default: linux-image-cloud-amd64), arm64
# (linux-image-cloud-arm64, for qemu-system-aarch64 -M virt) or armhf
# (linux-image-armmp-lpae, for qemu-system-arm -M virt). A foreign ARCH must be known to
# dpkg (`dpkg --add-architecture ARCH && apt-get update`); as root this script does that
# itself. Runs once: the tests call it when DIR/root has no kernel yet; .ci/run calls it up
# front.
set -eu
dir=$1
arch=${2:-amd64}
case $arch in
amd64) meta=linux-image-cloud-amd64 ;;
arm64) meta=linux-image-cloud-arm64 ;;
armhf) meta=linux-image-armmp-lpae ;;
*) echo "fetch-assets: unknown ARCH $arch (amd64, arm64 or armhf)" >&2 && exit 2 ;;
esac
native=$(dpkg --print-architecture)
if [ "$arch" != "$native" ] && ! dpkg --print-foreign-architectures | grep -qx "$arch"; then
	[ "$(id -u)" = 0 ] || { echo "fetch-assets: run dpkg --add-architecture $arch && apt-get update as root" >&2; exit 1; }
	dpkg --add-architecture "$arch"
	apt-get update -qq
fi
mkdir -p "$dir/deb"
cd "$dir/deb"
image() { apt-cache depends "$meta:$arch" | awk '$1 == "Depends:" && $2 ~ /^linux-image-/ { sub(/:.*/, "", $2); print $2; exit }'; }
image=$(image)
if [ -z "$image" ] && [ "$(id -u)" = 0 ]; then
	apt-get update -qq
	image=$(image)
fi
[ -n "$image" ] || { echo "fetch-assets: apt-cache knows no $meta:$arch (a Debian apt source?)" >&2; exit 1; }
download() { apt-get download -q "$image:$arch" "busybox-static:$arch" 2>&1; }
if ! download; then
	# Stale package lists name versions the mirror no longer has.
	[ "$(id -u)" = 0 ] && apt-get update -qq && download
fi
rm -rf "$dir/root.new"
for deb in ./*.deb; do dpkg-deb -x "$deb" "$dir/root.new"; done
rm -rf "$dir/root"
mv "$dir/root.new" "$dir/root"
rm -f ./*.deb
echo "fetch-assets: $(ls "$dir/root/boot" | grep vmlinuz) and busybox-static:$arch in $dir/root"
