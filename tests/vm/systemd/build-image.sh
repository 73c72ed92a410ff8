#!/bin/sh
# build-image.sh CACHE: the systemd VM's disk image (tests/vm/systemd.rs), built from
# Debian's packages with mmdebstrap and cached under CACHE/KEY, where KEY is the hash of
# the package list, this script and the files it puts in the image: a change to any of
# them builds a new image (and removes the old ones). Prints the image's directory (disk.img,
# vmlinuz, initrd.img) on its last line. Needs root, mmdebstrap and mkfs.ext4 (e2fsprogs).
set -eu
cache=$1
here=$(cd "$(dirname "$0")" && pwd)
key=$(cat "$here/packages" "$here/build-image.sh" "$here/vm-test" "$here/vm-test.service" |
	sha256sum | cut -c1-16)
out=$cache/$key
mkdir -p "$cache"
# One build at a time (two test runs may start together); the second finds the first's.
exec 9>"$cache/lock"
flock 9
if [ -f "$out/disk.img" ]; then
	echo "$out"
	exit 0
fi
for tool in mmdebstrap mkfs.ext4; do
	command -v $tool >/dev/null || { echo "build-image: $tool is missing (apt-get install mmdebstrap e2fsprogs)" >&2; exit 1; }
done
[ "$(id -u)" = 0 ] || { echo "build-image: needs root (mmdebstrap's root mode, and mkfs.ext4 -d keeps owners)" >&2; exit 1; }
# Only the image of this key stays.
find "$cache" -mindepth 1 -maxdepth 1 -type d -exec rm -rf {} +
tmp=$cache/$key.new
root=$tmp/root
mkdir -p "$tmp"
packages=$(grep -v '^#' "$here/packages" | grep . | paste -sd, -)
start=$(date +%s)
mmdebstrap --quiet --variant=minbase --include="$packages" bookworm "$root" >&2
# A machine that has booted before: no first-boot prompts on the console
# (systemd-firstboot asks for a locale and a root password when /etc/machine-id is empty).
echo 5a0e8b7c1d2f4e3a9b6c0d1e2f3a4b5c >"$root/etc/machine-id"
ln -sf /dev/null "$root/etc/systemd/system/systemd-firstboot.service"
echo lowmemd-vm >"$root/etc/hostname"
# The scenario reports on ttyS0: no getty there.
ln -sf /dev/null "$root/etc/systemd/system/serial-getty@ttyS0.service"
# The other killers of the bench stay off unless a bench run starts one: their packages
# enable them, and in the CI checks only lowmemd may act.
for unit in earlyoom.service nohang.service nohang-desktop.service systemd-oomd.service systemd-oomd.socket; do
	chroot "$root" systemctl disable --quiet "$unit" 2>/dev/null || true
done
install -m 755 "$here/vm-test" "$root/usr/local/sbin/vm-test"
install -m 644 "$here/vm-test.service" "$root/etc/systemd/system/vm-test.service"
mkdir -p "$root/etc/systemd/system/multi-user.target.wants"
ln -sf /etc/systemd/system/vm-test.service "$root/etc/systemd/system/multi-user.target.wants/vm-test.service"
cp "$root"/boot/vmlinuz-* "$tmp/vmlinuz"
cp "$root"/boot/initrd.img-* "$tmp/initrd.img"
# 2 GiB, sparse: the root filesystem is ~400 MB; the rest is room for the journal and the
# test's files. The VM boots it with -snapshot, so the image stays as built.
mkfs.ext4 -q -F -L root -d "$root" "$tmp/disk.img" 2G >&2
rm -rf "$root"
mv "$tmp" "$out"
echo "build-image: $out in $(($(date +%s) - start)) s ($packages)" >&2
echo "$out"
