# System scope, zram swap: an adj-0 leak at 100 MiB/s among three small innocents.
# lowmemd (built-in policy) must kill the leak, and only the leak, before the kernel's OOM
# killer does anything, and before the probe stalls; the swap in use at the kill is
# reported (issue 24: swap is headroom, but a runaway still dies early). (benches/vm_head_to_head.rs runs it under other guards too:
# GUARD, lib.sh start_guard.)
. /vm/lib.sh
zram_swap "$(($(awk '$1 == "MemTotal:" { print $2 }' /proc/meminfo) / 2))K"
start_guard
for i in 1 2 3; do spawn "innocent$i" --adj 0 --mib 16; done
for i in 1 2 3; do wait_ready "innocent$i"; done
start_probe
result available_before_kib "$(mem_available_kib)"
oom0=$(oom_kills)
pswpout0=$(awk '$1 == "pswpout" { print $2 }' /proc/vmstat)
start_min_available
t0=$(now_ms)
spawn leak --adj 0 --mib 0 --rate 100
wait_gone "$PID_leak" 120 || result leak_survived 1
t1=$(now_ms)
result leak_to_gone_ms $((t1 - t0))
# max_swap_used_kib: the swap in use at the kill (the leak held the most just before it).
stop_min_available
result oom_kill_delta $(($(oom_kills) - oom0))
result dmesg_out_of_memory "$(dmesg | grep -c 'Out of memory')"
result swapped_out_kib $((($(awk '$1 == "pswpout" { print $2 }' /proc/vmstat) - pswpout0) * 4))
for i in 1 2 3; do
	eval "pid=\$PID_innocent$i"
	if alive "$pid"; then result "innocent${i}_alive" 1; else result "innocent${i}_alive" 0; fi
done
stop_probe
deaths
stop_guard
