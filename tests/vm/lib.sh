# Helpers for the scenario scripts (sourced by each). Guest side of tests/vm.rs.

# The host's settings for this run (tests/vm/harness.rs Vm::env): GUARD, POLICY, ...
[ -r /vm/env.sh ] && . /vm/env.sh

# The scenario's shell is the test's hands, not a workload: a killer that takes it (lowmemd
# did, under a thrash burst with its workloads gone) ends the scenario with no results. It
# and its helpers run at -1000; workloads set their own adj (spawn --adj, as_user).
echo -1000 >/proc/$$/oom_score_adj

# as_user CMD...: CMD at oom_score_adj 0, as a user's program runs.
as_user() { (echo 0 >/proc/self/oom_score_adj && exec "$@"); }

result() { echo "RESULT $1=$2"; }

fail() {
	result failed "$*"
	dump_lowmemd
	exit 1
}

# Milliseconds since boot (10 ms resolution).
now_ms() {
	read -r up _ </proc/uptime
	echo $((${up%.*} * 1000 + 10 * $(echo "${up#*.}" | sed 's/^0//')))
}

# Whether PID is running (not gone, not a zombie).
alive() {
	[ -r "/proc/$1/stat" ] || return 1
	state=$(cut -d' ' -f3 "/proc/$1/stat" 2>/dev/null)
	[ -n "$state" ] && [ "$state" != Z ] && [ "$state" != X ]
}

# wait_gone PID SECONDS: until PID exits (polled every 20 ms); 1 if it still runs after
# SECONDS.
wait_gone() {
	_end=$(($(now_ms) + $2 * 1000))
	while alive "$1"; do
		[ "$(now_ms)" -lt "$_end" ] || return 1
		sleep 0.02
	done
}

# wait_file FILE TEXT SECONDS: until FILE contains TEXT.
wait_file() {
	_end=$(($(now_ms) + $3 * 1000))
	until grep -q "$2" "$1" 2>/dev/null; do
		[ "$(now_ms)" -lt "$_end" ] || return 1
		sleep 0.05
	done
}

# spawn NAME ARGS...: lowmemd-workload --name NAME ARGS in the background; its pid in
# $PID_NAME, its --adj in $ADJ_NAME, its output in /tmp/NAME.out; NAME joins $SPAWNED.
spawn() {
	name=$1
	shift
	lowmemd-workload --name "$name" "$@" >"/tmp/$name.out" 2>&1 &
	note_spawned "$name" $! "$@"
}

# note_spawned NAME PID ARGS...: what spawn remembers of a workload started with ARGS (also
# for one started another way, as a systemd unit): $PID_NAME, $ADJ_NAME, $SPAWNED, RESULT.
note_spawned() {
	_name=$1
	_pid=$2
	shift 2
	eval "PID_$_name=$_pid"
	_adj=0
	_prev=
	for _a in "$@"; do
		[ "$_prev" = --adj ] && _adj=$_a
		_prev=$_a
	done
	eval "ADJ_$_name=$_adj"
	SPAWNED="$SPAWNED $_name"
	result "pid_$_name" "$_pid"
}

# deaths: RESULT died=NAME/ADJ/KILLER,... ("-" for none) for every spawned workload that no
# longer runs. KILLER: whoever named its pid as killed (the kernel's OOM killer in dmesg,
# lowmemd's event log, earlyoom's log), else "exited".
deaths() {
	_died=
	for _n in $SPAWNED; do
		eval "_pid=\$PID_$_n _adj=\$ADJ_$_n"
		alive "$_pid" && continue
		if dmesg | grep -q "Killed process $_pid ("; then
			_by=kernel
		elif grep '"action":"kill"' /tmp/events.jsonl 2>/dev/null | grep -Eq "\"pid\":$_pid[,}]"; then
			_by=lowmemd
		elif grep -q "process $_pid uid" /tmp/earlyoom.log 2>/dev/null; then
			_by=earlyoom
		else
			_by=exited
		fi
		_died="$_died${_died:+,}$_n/$_adj/$_by"
	done
	result died "${_died:--}"
}

# wait_ready NAME [SECONDS]: until the workload NAME printed `ready`.
wait_ready() {
	wait_file "/tmp/$1.out" '^ready' "${2:-60}" || fail "$1 not ready: $(cat "/tmp/$1.out")"
}

# wait_ready_or_gone NAME SECONDS: until the workload NAME printed `ready`, exited, or
# SECONDS passed; 0 if it is ready.
wait_ready_or_gone() {
	eval "_pid=\$PID_$1"
	_end=$(($(now_ms) + $2 * 1000))
	until grep -q '^ready' "/tmp/$1.out"; do
		alive "$_pid" && [ "$(now_ms)" -lt "$_end" ] || return 1
		sleep 0.05
	done
}

# start_lowmemd ARGS...: lowmemd on the system (or --cgroup) scope, events in
# /tmp/events.jsonl; returns once it is monitoring.
start_lowmemd() {
	lowmemd run --event-log /tmp/events.jsonl --metrics-listen off "$@" 2>/tmp/lowmemd.log &
	LOWMEMD=$!
	wait_file /tmp/lowmemd.log 'monitoring ' 30 || fail "lowmemd did not start"
	result lowmemd_started 1
}

stop_lowmemd() {
	kill -TERM "$LOWMEMD"
	wait "$LOWMEMD"
	result lowmemd_exit $?
}

# start_guard ARGS...: what protects the machine in this run, $GUARD from /vm/env.sh:
# lowmemd (the default: start_lowmemd ARGS, with --policy $POLICY if set), earlyoom
# (Debian's package and its default arguments; the host puts it in the initramfs) or none
# (the kernel's OOM killer alone).
start_guard() {
	case ${GUARD:=lowmemd} in
	lowmemd) start_lowmemd ${POLICY:+--policy "$POLICY"} "$@" ;;
	earlyoom)
		earlyoom -r 3600 >/tmp/earlyoom.log 2>&1 &
		GUARD_PID=$!
		wait_file /tmp/earlyoom.log 'mem avail' 30 || fail "earlyoom did not start: $(cat /tmp/earlyoom.log)"
		;;
	none) ;;
	*) fail "unknown GUARD $GUARD" ;;
	esac
	result guard "$GUARD${POLICY:+ $POLICY}"
}

# stop_guard: stops it and dumps its log (and lowmemd's event log).
stop_guard() {
	case $GUARD in
	lowmemd)
		stop_lowmemd
		dump_lowmemd
		;;
	earlyoom)
		kill -TERM "$GUARD_PID"
		wait "$GUARD_PID"
		dump earlyoom-log /tmp/earlyoom.log
		;;
	esac
}

# start_probe [FILE]: the latency probe (lowmemd-workload --probe: every 50 ms it reads its
# 8 MiB and FILE, default /vm/lib.sh), at adj -1000 so that no killer picks it.
start_probe() {
	lowmemd-workload --name probe --adj -1000 --probe --mib 8 --probe-file "${1:-/vm/lib.sh}" >/tmp/probe.out 2>&1 &
	PROBE=$!
	wait_file /tmp/probe.out '^ready' 60 || fail "probe not ready: $(cat /tmp/probe.out)"
}

# stop_probe: RESULT probe_ticks, probe_max_ms, probe_p99_ms, probe_stalled_ms.
stop_probe() {
	kill -TERM "$PROBE"
	wait "$PROBE"
	for _kv in $(grep '^probe ' /tmp/probe.out); do
		case $_kv in *=*) result "probe_${_kv%%=*}" "${_kv#*=}" ;; esac
	done
}

# read_mem: MemAvailable and swap in use (SwapTotal - SwapFree), in KiB, into $MEM_AVAILABLE
# and $SWAP_USED, without a fork (for sampling loops).
read_mem() {
	while read -r _k _v _; do
		case $_k in
		MemAvailable:) MEM_AVAILABLE=$_v ;;
		SwapTotal:) _swap_total=$_v ;;
		SwapFree:) SWAP_USED=$((_swap_total - _v)) ;;
		esac
	done </proc/meminfo
}

# judged_kib: the headroom lowmemd judges with swap counted (src/scope/swap.rs), for zram0:
# MemAvailable plus zram's free slots times (1 - 1/ratio), the ratio measured (data stored
# over the RAM it takes) once it holds 8 MiB, 2 before. Call read_mem first.
judged_kib() {
	[ -r /sys/block/zram0/mm_stat ] || { echo "$MEM_AVAILABLE"; return; }
	read -r _orig _ _used _ </sys/block/zram0/mm_stat
	read -r _disk </sys/block/zram0/disksize
	_free=$(((_disk - _orig) / 1024))
	if [ "$_orig" -ge 8388608 ] && [ "$_used" -gt 0 ] && [ "$_orig" -gt "$_used" ]; then
		echo $((MEM_AVAILABLE + _free * (_orig - _used) / _orig))
	else
		echo $((MEM_AVAILABLE + _free / 2))
	fi
}

# start_min_available / stop_min_available: the lowest MemAvailable and the most swap in
# use seen in between, sampled every 100 ms: RESULT min_available_kib, min_available_pct (of
# MemTotal) and max_swap_used_kib. A growing job holds the most swap just before it dies,
# so for a killed one the last is the swap in use at the kill (to 100 ms). Also
# swap_64mib_ms and swap_128mib_ms: when swap in use first reached 64 and 128 MiB, from the
# start: the pace of a growing job into swap whatever guards it (- when never). And
# min_judged_pct: the lowest headroom lowmemd judges with swap counted (judged_kib), in % of
# MemTotal: how close a job came to a policy's watermarks.
start_min_available() {
	rm -f /tmp/min-available.stop
	(
		read_mem
		m=$MEM_AVAILABLE
		s=$SWAP_USED
		t0=$(now_ms)
		at64=-
		at128=-
		j=$(judged_kib)
		_i=0
		: >/tmp/mem-timeline
		while [ ! -e /tmp/min-available.stop ]; do
			read_mem
			_j=$(judged_kib)
			# Every ~second, "ms available_kib swap_used_kib judged_kib": where the job's pace
			# went (RAM filling, then swap).
			[ $((_i % 10)) -eq 0 ] && echo "$(($(now_ms) - t0)) $MEM_AVAILABLE $SWAP_USED $_j" >>/tmp/mem-timeline
			_i=$((_i + 1))
			[ "$_j" -lt "$j" ] && j=$_j
			[ "$MEM_AVAILABLE" -lt "$m" ] && m=$MEM_AVAILABLE
			[ "$SWAP_USED" -gt "$s" ] && s=$SWAP_USED
			[ "$at64" = - ] && [ "$s" -ge 65536 ] && at64=$(($(now_ms) - t0))
			[ "$at128" = - ] && [ "$s" -ge 131072 ] && at128=$(($(now_ms) - t0))
			echo "$m $s $at64 $at128 $j" >/tmp/min-available
			sleep 0.1
		done
	) &
	MIN_AVAILABLE=$!
}

stop_min_available() {
	touch /tmp/min-available.stop
	wait "$MIN_AVAILABLE"
	read -r _m _s _at64 _at128 _j </tmp/min-available
	dump mem-timeline /tmp/mem-timeline
	_total=$(awk '$1 == "MemTotal:" { print $2 }' /proc/meminfo)
	result swap_64mib_ms "$_at64"
	result swap_128mib_ms "$_at128"
	result min_available_kib "$_m"
	result min_available_pct $((_m * 100 / _total))
	result min_judged_pct "$((_j * 100 / _total)).$((_j * 1000 / _total % 10))"
	result max_swap_used_kib "$_s"
}

# PSI memory stall totals (µs since boot): psi_total some|full.
psi_total() { awk -v k="$1" '$1 == k { sub("total=", "", $5); print $5 }' /proc/pressure/memory; }

# zram_stats: RESULT zram_orig_kib, zram_compr_kib, zram_mem_used_kib (/sys/block/zram0/
# mm_stat: data stored, its compressed size, the RAM zram takes for it) and the ratio x100.
zram_stats() {
	read -r _orig _compr _used _ </sys/block/zram0/mm_stat
	result zram_orig_kib $((_orig / 1024))
	result zram_compr_kib $((_compr / 1024))
	result zram_mem_used_kib $((_used / 1024))
	result zram_ratio_x100 $((_orig * 100 / (_compr > 0 ? _compr : 1)))
}

oom_kills() { awk '$1 == "oom_kill" { print $2 }' /proc/vmstat; }

mem_available_kib() { awk '$1 == "MemAvailable:" { print $2 }' /proc/meminfo; }

# zram_swap SIZE: /dev/zram0 of SIZE as swap, compressed with lzo-rle (what Fedora and
# Debian's zram-tools use; it must be chosen before the size).
zram_swap() {
	echo lzo-rle >/sys/block/zram0/comp_algorithm || fail "zram comp_algorithm lzo-rle"
	echo "$1" >/sys/block/zram0/disksize || fail "zram disksize"
	mkswap /dev/zram0 >/dev/null || fail mkswap
	swapon /dev/zram0 || fail swapon
	result swap_kib "$(awk '$1 == "SwapTotal:" { print $2 }' /proc/meminfo)"
}

# dump NAME FILE: FILE between markers, for the host.
dump() {
	echo "--- $1 begin"
	cat "$2" 2>/dev/null
	echo "--- $1 end"
}

# dump_lowmemd [SUFFIX]: the event log and lowmemd's log, as blocks events[-SUFFIX] and
# lowmemd-log[-SUFFIX].
dump_lowmemd() {
	dump "events${1:+-$1}" /tmp/events.jsonl
	dump "lowmemd-log${1:+-$1}" /tmp/lowmemd.log
}

result mem_total_kib "$(awk '$1 == "MemTotal:" { print $2 }' /proc/meminfo)"
