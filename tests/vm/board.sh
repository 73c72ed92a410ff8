# A 256 MiB board without swap, system scope: a small foreground process, background apps
# at adj 1000, 950 and 900 (30 MiB each), then a foreground app growing at 100 MiB/s to
# 10 MiB more than is available. lowmemd (built-in policy) must make room by killing
# background apps, highest adj first, and leave the foreground alone; the kernel's OOM
# killer must not fire. (benches/vm_head_to_head.rs runs it under other guards too:
# GUARD, lib.sh start_guard.)
#
# Arithmetic: with A MiB available after the set-up, the foreground ends needing A + 10;
# one kill (30 MiB) leaves 20 MiB (< 15 % of ~217 MiB: low), a second leaves 50 MiB (over
# 15 %, under 25 %: page-out, which without swap frees nothing and kills nothing): two kills.
. /vm/lib.sh
start_guard
spawn small --adj 0 --mib 8
wait_ready small
for adj in 1000 950 900; do
	spawn "bg$adj" --adj "$adj" --mib 30
	wait_ready "bg$adj"
done
start_probe
sleep 1
avail=$(($(mem_available_kib) / 1024))
result available_before_mib "$avail"
oom0=$(oom_kills)
t0=$(now_ms)
spawn fg --adj 0 --mib $((avail + 10)) --rate 100
end=$(($(now_ms) + 120000))
until grep -q '^ready' /tmp/fg.out || ! alive "$PID_fg" || [ "$(now_ms)" -ge "$end" ]; do
	sleep 0.05
done
result fg_grow_ms $(($(now_ms) - t0))
# Let lowmemd see the final state.
sleep 3
result available_after_mib $(($(mem_available_kib) / 1024))
result oom_kill_delta $(($(oom_kills) - oom0))
result dmesg_out_of_memory "$(dmesg | grep -c 'Out of memory')"
for p in small bg1000 bg950 bg900 fg; do
	eval "pid=\$PID_$p"
	if alive "$pid"; then result "${p}_alive" 1; else result "${p}_alive" 0; fi
done
stop_probe
deaths
stop_guard
