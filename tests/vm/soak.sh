# Soak (issue 21 item 5): hours, not minutes. System scope, 768 MiB with zram swap of half
# of RAM, a 2 GiB virtio disk (ext2) for file-cache thrash, lowmemd under $POLICY
# (tests/vm/soak.rs says which and why). A user's app (adj 0, 64 MiB) lives throughout;
# then every CYCLE_S seconds, for SOAK_S seconds:
#   1. cached apps (adj 900, 32 MiB of ~3:1-compressible memory each) topped up to three:
#      what a phone or a board keeps in the background, for lowmemd to page out or kill;
#   2. a runaway (adj 0, an unbounded leak at 100 MiB/s): lowmemd must kill it, not the
#      kernel; how long it lived and who killed it are recorded (the scenario kills one
#      that lives 90 s: "survived");
#   3. a thrash burst: two readers (adj 0) stream two files of 0.45x RAM each (together
#      more than the page cache can hold beside the apps), in opposite
#      orders, for THRASH_S seconds, so the page cache drops what the other re-reads;
#   4. one line `SOAK cycle=N ...` with lowmemd's RSS (VmRSS, RssAnon, VmSwap), open fds,
#      threads, CPU ticks, the processes running, the kernel's OOM kills since the start,
#      lowmemd's kills and
#      page-outs so far and the event log's length (the host splits the log by it to get
#      each cycle's sample_to_kill_ms); then it waits for the next cycle.
# A cycle that takes longer than CYCLE_S (a slow runaway on a loaded host) is followed at
# once by the next. The event log comes back whole at the end.
. /vm/lib.sh
: "${SOAK_S:?}" "${CYCLE_S:=30}" "${THRASH_S:=6}"
mem_total=$(awk '$1 == "MemTotal:" { print $2 }' /proc/meminfo)
zram_swap "$((mem_total / 2))K"
mkdir -p /mnt
mke2fs -q /dev/vda >/dev/null 2>&1 || fail "mke2fs /dev/vda"
mount /dev/vda /mnt || fail "mount /dev/vda"
file_mib=$((mem_total * 45 / 100 / 1024))
t=$(now_ms)
for f in f1 f2; do
	dd if=/dev/zero of="/mnt/$f" bs=1M count="$file_mib" 2>/dev/null || fail "dd /mnt/$f"
done
sync
echo 3 >/proc/sys/vm/drop_caches
result thrash_file_mib "$file_mib"
result thrash_files_write_ms $(($(now_ms) - t))

start_guard
# Its pid (the shell's $! is the daemon itself: start_lowmemd runs it in the background).
result lowmemd_pid "$LOWMEMD"
spawn fg --adj 0 --mib 64
wait_ready fg

# sample CYCLE RUNAWAY RUNAWAY_MS: the cycle's line.
sample() {
	_rss= _anon= _swap= _threads=
	while read -r _k _v _; do
		case $_k in
		VmRSS:) _rss=$_v ;;
		RssAnon:) _anon=$_v ;;
		VmSwap:) _swap=$_v ;;
		Threads:) _threads=$_v ;;
		esac
	done <"/proc/$LOWMEMD/status"
	# Its fds: all of them; those of its process cache (four per process its last scan saw,
	# each naming /proc/PID or a file in it); the rest (PSI triggers, the event log, pidfds
	# in flight, ...). And the processes the cache still holds that have gone: a cache that
	# kept the dead would hold more of them every cycle.
	ls -l "/proc/$LOWMEMD/fd" >/tmp/fds
	_fds=$(grep -c ' -> ' /tmp/fds)
	_other=$(grep ' -> ' /tmp/fds | grep -vc ' -> /proc/[0-9]')
	_cached=0 _dead=0
	for _p in $(sed -n 's|.* -> /proc/\([0-9]*\).*|\1|p' /tmp/fds | sort -u); do
		_cached=$((_cached + 1))
		[ -d "/proc/$_p" ] || _dead=$((_dead + 1))
	done
	# utime + stime (fields 14, 15; lowmemd's comm has no spaces), in clock ticks; and stime
	# alone: a page-out's reclaim and compression into zram run in the caller, lowmemd.
	read -r _cpu _stime <<-EOF
		$(awk '{ print $14 + $15, $15 }' "/proc/$LOWMEMD/stat")
	EOF
	_kills=$(grep -c '"action":"kill"' /tmp/events.jsonl)
	_pageouts=$(grep -c '"action":"pageout"' /tmp/events.jsonl)
	_events=$(wc -l </tmp/events.jsonl)
	_procs=$(ls -d /proc/[0-9]* | wc -l)
	echo "SOAK cycle=$1 t_s=$((($(now_ms) - soak0) / 1000)) rss_kib=$_rss anon_kib=$_anon swap_kib=$_swap fds=$_fds other_fds=$_other cached_procs=$_cached cached_dead=$_dead threads=$_threads procs=$_procs cpu_ticks=$_cpu stime_ticks=$_stime oom_kill=$(($(oom_kills) - oom0)) kills=$_kills pageouts=$_pageouts events=$_events runaway=$2 runaway_ms=$3 available_kib=$(mem_available_kib)"
}

oom0=$(oom_kills)
soak0=$(now_ms)
# (Not `end`: lib.sh's waits set their own deadline variables, which once clobbered this one
# and kept the soak going for as long as its cycles did.)
soak_end=$((soak0 + SOAK_S * 1000))
cycle=0
sample 0 - 0
while [ "$(now_ms)" -lt "$soak_end" ]; do
	cycle=$((cycle + 1))
	c0=$(now_ms)
	alive "$LOWMEMD" || fail "lowmemd died in cycle $cycle"
	for i in 1 2 3; do
		eval "_pid=\${CACHED_$i:-}"
		if [ -n "$_pid" ] && alive "$_pid"; then continue; fi
		# Reap the one that died (a zombie per cycle would pile up for the whole soak).
		[ -n "$_pid" ] && wait "$_pid" 2>/dev/null
		lowmemd-workload --name "cached$i" --adj 900 --mib 32 --compress-ratio 3 >/dev/null 2>&1 &
		eval "CACHED_$i=$!"
	done
	sleep 2
	lowmemd-workload --name runaway --adj 0 --mib 0 --rate 100 >/dev/null 2>&1 &
	leak=$!
	l0=$(now_ms)
	if wait_gone "$leak" 90; then
		leak_ms=$(($(now_ms) - l0))
		if grep '"action":"kill"' /tmp/events.jsonl | grep -Eq "\"pid\":$leak[,}]"; then
			by=lowmemd
		elif dmesg | grep -q "Killed process $leak ("; then
			by=kernel
		else
			by=exited
		fi
	else
		leak_ms=$(($(now_ms) - l0))
		by=survived
		kill -KILL "$leak"
	fi
	wait "$leak" 2>/dev/null
	as_user timeout "$THRASH_S" cat /mnt/f1 /mnt/f2 /mnt/f1 /mnt/f2 >/dev/null 2>&1 &
	r1=$!
	as_user timeout "$THRASH_S" cat /mnt/f2 /mnt/f1 /mnt/f2 /mnt/f1 >/dev/null 2>&1 &
	r2=$!
	wait "$r1" "$r2"
	sample "$cycle" "$by" "$leak_ms"
	left=$((c0 + CYCLE_S * 1000 - $(now_ms)))
	[ "$left" -gt 0 ] && sleep "$((left / 1000)).$(printf %03d $((left % 1000)))"
done
result cycles "$cycle"
result oom_kill_delta $(($(oom_kills) - oom0))
result dmesg_out_of_memory "$(dmesg | grep -c 'Out of memory')"
if alive "$LOWMEMD"; then result lowmemd_alive 1; else result lowmemd_alive 0; fi
if alive "$PID_fg"; then result fg_alive 1; else result fg_alive 0; fi
stop_guard
