#!/bin/busybox sh
# /init of the test VM (tests/vm.rs builds the initramfs): PID 1 sets up a minimal system,
# loads the modules listed in /lib/modules/load.order, runs /vm/scenario.sh and powers off.
# Everything the host reads comes over the serial console: `RESULT key=value` lines and
# blocks between `--- NAME begin` and `--- NAME end` markers.
/bin/busybox --install -s
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t tmpfs tmpfs /tmp
mount -t tmpfs tmpfs /run
mkdir -p /var /dev/pts
ln -s /run /var/run
mkdir -p /var/log
# Only our own lines on the console: kernel messages stay in dmesg (the scenario greps it).
dmesg -n 1
while read -r ko; do
	insmod "/lib/modules/$ko" || echo "RESULT insmod_failed=$ko"
done </lib/modules/load.order
echo "--- vm up $(cut -d' ' -f1 /proc/uptime) s after boot"
sh /vm/scenario.sh
rc=$?
if [ $rc != 0 ]; then
	# Whatever there is to see (the tests print it when they fail).
	echo "--- postmortem begin"
	for f in /tmp/lowmemd.log /tmp/events.jsonl /var/log/lowmemd.log /var/log/lowmemd-events.jsonl; do
		[ -e $f ] && echo "== $f" && cat $f
	done
	echo "== dmesg"
	dmesg | tail -n 60
	echo "--- postmortem end"
fi
# The kernel's own OOM kills, if any, in its words.
echo "--- kernel-oom begin"
dmesg | grep -E 'Out of memory|oom-kill:|Memory cgroup out of memory'
echo "--- kernel-oom end"
echo "--- scenario exit $rc"
sync
poweroff -f
