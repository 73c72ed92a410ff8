# A board with zram (ZRAM_MIB of swap) under policies/embedded.toml, run on a real ARM
# kernel by tests/vm/arm.rs: a small foreground process, background apps at adj 900, 700
# and 200 (BG_MIB each, ~3:1 compressible), then an adj-0 leak at LEAK_RATE MiB/s. On the
# way down lowmemd must page background apps out to zram (the policy's `background` level:
# process_madvise doing real work, their swap grows: the event log's pageout records), then
# kill the leak (background apps may die before it, highest adj first); the foreground
# lives and the kernel's OOM killer never fires. lowmemd runs at debug log level, where a
# process_madvise or process_mrelease that the kernel refused is logged: the host checks
# that there is none, and that the start-up probe found both calls.
. /vm/lib.sh
zram_swap "${ZRAM_MIB:?}M"
start_guard --log-level debug
result caps "$(grep -o 'process_mrelease=[a-z]* process_madvise=[a-z]*' /tmp/lowmemd.log | head -n 1)"
spawn small --adj 0 --mib 8
wait_ready small
for adj in 900 700 200; do
	spawn "bg$adj" --adj "$adj" --mib "${BG_MIB:?}" --compress-ratio 3
	wait_ready "bg$adj"
done
sleep 1
result available_before_kib "$(mem_available_kib)"
oom0=$(oom_kills)
pswpout0=$(awk '$1 == "pswpout" { print $2 }' /proc/vmstat)
start_min_available
t0=$(now_ms)
spawn leak --adj 0 --mib 0 --rate "${LEAK_RATE:?}"
wait_gone "$PID_leak" 150 || result leak_survived 1
result leak_to_gone_ms $(($(now_ms) - t0))
stop_min_available
# Let lowmemd see the final state.
sleep 2
result oom_kill_delta $(($(oom_kills) - oom0))
result dmesg_out_of_memory "$(dmesg | grep -c 'Out of memory')"
result swapped_out_kib $((($(awk '$1 == "pswpout" { print $2 }' /proc/vmstat) - pswpout0) * 4))
for p in small bg900 bg700 bg200; do
	eval "pid=\$PID_$p"
	if alive "$pid"; then result "${p}_alive" 1; else result "${p}_alive" 0; fi
done
result madvise_refused "$(grep -c 'process_madvise(pid' /tmp/lowmemd.log)"
result mrelease_refused "$(grep -c 'process_mrelease(pid' /tmp/lowmemd.log)"
deaths
stop_guard
