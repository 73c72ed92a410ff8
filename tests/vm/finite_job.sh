# A finite job with zram swap (issue 24): an adj-0 job grows at 100 MiB/s to JOB_MIB of
# ~3:1-compressible memory, then holds it for HOLD_S seconds, with the latency probe running
# throughout. RAM alone cannot hold it, RAM and zram (ZRAM_MIB of swap) can: the kernel
# alone and earlyoom keep it, and so must every shipped lowmemd policy. GUARD and POLICY
# (/vm/env.sh) choose what protects the machine (lib.sh start_guard); JOB_MIB, ZRAM_MIB and
# HOLD_S come from tests/vm/harness.rs finite_job / finite_job_board.
. /vm/lib.sh
zram_swap "${ZRAM_MIB:?}M"
start_guard
start_probe
sleep 1
result available_before_kib "$(mem_available_kib)"
oom0=$(oom_kills)
pswpin0=$(awk '$1 == "pswpin" { print $2 }' /proc/vmstat)
some0=$(psi_total some)
full0=$(psi_total full)
start_min_available
t0=$(now_ms)
spawn job --adj 0 --mib "${JOB_MIB:?}" --rate 100 --compress-ratio 3
# Growing: ~JOB_MIB / 100 s natively, slower under TCG.
wait_ready_or_gone job 120
result job_grow_ms $(($(now_ms) - t0))
# Holding.
if alive "$PID_job" && ! wait_gone "$PID_job" "${HOLD_S:?}"; then
	result job_alive 1
	# What zram holds for the job, while it still does.
	zram_stats
else
	result job_alive 0
	result job_to_gone_ms $(($(now_ms) - t0))
	zram_stats
fi
stop_min_available
# Under TCG zram compresses several times slower than natively: the job stalls in reclaim.
result psi_some_ms $((($(psi_total some) - some0) / 1000))
result psi_full_ms $((($(psi_total full) - full0) / 1000))
result oom_kill_delta $(($(oom_kills) - oom0))
result dmesg_out_of_memory "$(dmesg | grep -c 'Out of memory')"
result swapped_in_kib $((($(awk '$1 == "pswpin" { print $2 }' /proc/vmstat) - pswpin0) * 4))
stop_probe
deaths
stop_guard
