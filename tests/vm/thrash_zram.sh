# Thrash on zram (issue 24): two cached apps (adj 900, opened first) and two apps the user
# works in (adj 0), 200 MiB each of ~3:1-compressible memory, every one re-reading all of
# its memory every second: 800 MiB in use in 768 MiB of RAM with 384 MiB of zram swap.
# Nothing runs out (zram holds what RAM cannot), but every pass swaps pages in and others
# out: the machine thrashes on zram. Relief is a kill of a cached app; nothing below adj 900
# may die, since the user's two apps fit in RAM once the cached ones are gone. The machine
# is watched for OBSERVE_S seconds after the last app is up. GUARD and POLICY (/vm/env.sh)
# choose what protects it (lib.sh start_guard).
. /vm/lib.sh
zram_swap "$(($(awk '$1 == "MemTotal:" { print $2 }' /proc/meminfo) / 2))K"
start_guard
start_probe
vmstat() { awk -v k="$1" '$1 == k { print $2 }' /proc/vmstat; }
oom0=$(oom_kills)
start_min_available
t0=$(now_ms)
for n in cached1 cached2 app1 app2; do
	case $n in cached*) adj=900 ;; *) adj=0 ;; esac
	spawn "$n" --adj "$adj" --mib 200 --rate 100 --compress-ratio 3 --cycle-ms 1000
	wait_ready_or_gone "$n" 120 || result "${n}_not_ready" 1
done
t1=$(now_ms)
result apps_up_ms $((t1 - t0))
some0=$(psi_total some)
full0=$(psi_total full)
pswpin0=$(vmstat pswpin)
refault0=$(vmstat workingset_refault_anon)
# Watch who dies when (ms since the first app started; cached ones may go before all are up).
end=$((t1 + ${OBSERVE_S:?} * 1000))
while [ "$(now_ms)" -lt "$end" ]; do
	for n in cached1 cached2 app1 app2; do
		eval "pid=\$PID_$n seen=\${gone_$n:-}"
		[ -z "$seen" ] && ! alive "$pid" && eval "gone_$n=$(($(now_ms) - t0))"
	done
	sleep 0.5
done
for n in cached1 cached2 app1 app2; do
	eval "gone=\${gone_$n:-}"
	if [ -n "$gone" ]; then
		result "${n}_alive" 0
		result "${n}_gone_ms" "$gone"
	else
		result "${n}_alive" 1
	fi
done
result psi_some_ms $((($(psi_total some) - some0) / 1000))
result psi_full_ms $((($(psi_total full) - full0) / 1000))
result swapped_in_kib $((($(vmstat pswpin) - pswpin0) * 4))
result refault_anon $(($(vmstat workingset_refault_anon) - refault0))
stop_min_available
zram_stats
result oom_kill_delta $(($(oom_kills) - oom0))
result dmesg_out_of_memory "$(dmesg | grep -c 'Out of memory')"
stop_probe
deaths
stop_guard
