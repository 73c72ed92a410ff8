# A burst of file-cache thrash on a desktop-like machine (system scope, 768 MiB, zram swap
# of half of RAM as system_runaway.sh): an editor (adj 0, 30 MiB), a browser tab (adj 300,
# 50 MiB) and cached apps (adj 900, 950, 1000, 30 MiB each) stay put while files of 1.5x
# the available memory are written to a virtio disk (/dev/vda, ext2) and read back twice by
# two readers at once: the page cache thrashes, yet MemAvailable stays near 60 % (page
# cache counts as available). The machine rides it out: nothing the user sees (adj < 900)
# may be killed, the kernel's OOM killer must stay idle. GUARD and POLICY (/vm/env.sh)
# choose what protects the machine (lib.sh start_guard).
. /vm/lib.sh
zram_swap "$(($(awk '$1 == "MemTotal:" { print $2 }' /proc/meminfo) / 2))K"
mkdir -p /mnt
mke2fs -q /dev/vda >/dev/null 2>&1 || fail "mke2fs /dev/vda"
mount /dev/vda /mnt || fail "mount /dev/vda"
echo "a small file the probe reads every 50 ms" >/mnt/probe.txt
start_guard
spawn editor --adj 0 --mib 30
spawn tab --adj 300 --mib 50
for adj in 900 950 1000; do spawn "cached$adj" --adj "$adj" --mib 30; done
for n in editor tab cached900 cached950 cached1000; do wait_ready "$n"; done
start_probe /mnt/probe.txt
sleep 2
avail=$(mem_available_kib)
result available_before_kib "$avail"
result available_before_pct $((avail * 100 / $(awk '$1 == "MemTotal:" { print $2 }' /proc/meminfo)))
# Four files of 1.5x MemAvailable together.
file_mib=$((avail * 3 / 2 / 1024 / 4))
result burst_file_mib "$file_mib"
oom0=$(oom_kills)
some0=$(psi_total some)
full0=$(psi_total full)
start_min_available
t0=$(now_ms)
# The burst runs at adj 0, as the user's copy or build would; a killer may take it (the
# host sees that in the killer's log), and the scenario goes on.
for i in 1 2 3 4; do
	as_user dd if=/dev/zero of="/mnt/f$i" bs=1M count="$file_mib" 2>/dev/null || result "burst_dd${i}_rc" $?
done
sync
result burst_write_ms $(($(now_ms) - t0))
as_user sh -c 'for pass in 1 2; do cat /mnt/f1 /mnt/f2 /mnt/f3 /mnt/f4 >/dev/null; done' &
r1=$!
as_user sh -c 'for pass in 1 2; do cat /mnt/f4 /mnt/f3 /mnt/f2 /mnt/f1 >/dev/null; done' &
r2=$!
wait "$r1" "$r2"
result burst_ms $(($(now_ms) - t0))
result psi_some_ms $((($(psi_total some) - some0) / 1000))
result psi_full_ms $((($(psi_total full) - full0) / 1000))
# Let a guard that acts late show it.
sleep 3
stop_min_available
result oom_kill_delta $(($(oom_kills) - oom0))
result dmesg_out_of_memory "$(dmesg | grep -c 'Out of memory')"
stop_probe
deaths
stop_guard
