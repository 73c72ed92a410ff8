#!/bin/sh
# fetch-assets.sh DIR: Debian's cloud kernel (linux-image-cloud-amd64's current image
# package) and busybox-static, downloaded with `apt-get download` (no installation, no
# root needed) and unpacked into DIR/root for the VM tests (tests/vm.rs). Runs once: the
# tests call it when DIR/root has no kernel yet; .ci/run calls it up front.
set -eu
dir=$1
mkdir -p "$dir/deb"
cd "$dir/deb"
image=$(apt-cache depends linux-image-cloud-amd64 | awk '$1 == "Depends:" && $2 ~ /^linux-image-/ { print $2; exit }')
[ -n "$image" ] || { echo "fetch-assets: apt-cache knows no linux-image-cloud-amd64 (a Debian apt source?)" >&2; exit 1; }
download() { apt-get download -q "$image" busybox-static 2>&1; }
if ! download; then
	# Stale package lists name versions the mirror no longer has.
	[ "$(id -u)" = 0 ] && apt-get update -qq && download
fi
rm -rf "$dir/root.new"
for deb in ./*.deb; do dpkg-deb -x "$deb" "$dir/root.new"; done
rm -rf "$dir/root"
mv "$dir/root.new" "$dir/root"
rm -f ./*.deb
echo "fetch-assets: $(ls "$dir/root/boot" | grep vmlinuz) and busybox-static in $dir/root"
