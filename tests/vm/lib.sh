# Helpers for the scenario scripts (sourced by each). Guest side of tests/vm.rs.

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
	end=$(($(now_ms) + $2 * 1000))
	while alive "$1"; do
		[ "$(now_ms)" -lt "$end" ] || return 1
		sleep 0.02
	done
}

# wait_file FILE TEXT SECONDS: until FILE contains TEXT.
wait_file() {
	end=$(($(now_ms) + $3 * 1000))
	until grep -q "$2" "$1" 2>/dev/null; do
		[ "$(now_ms)" -lt "$end" ] || return 1
		sleep 0.05
	done
}

# spawn NAME ARGS...: lowmemd-workload --name NAME ARGS in the background; its pid in
# $PID_NAME, its output in /tmp/NAME.out.
spawn() {
	name=$1
	shift
	lowmemd-workload --name "$name" "$@" >"/tmp/$name.out" 2>&1 &
	eval "PID_$name=$!"
	result "pid_$name" $!
}

# wait_ready NAME [SECONDS]: until the workload NAME printed `ready`.
wait_ready() {
	wait_file "/tmp/$1.out" '^ready' "${2:-60}" || fail "$1 not ready: $(cat "/tmp/$1.out")"
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

oom_kills() { awk '$1 == "oom_kill" { print $2 }' /proc/vmstat; }

mem_available_kib() { awk '$1 == "MemAvailable:" { print $2 }' /proc/meminfo; }

# zram_swap SIZE: /dev/zram0 of SIZE as swap.
zram_swap() {
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

dump_lowmemd() {
	dump events /tmp/events.jsonl
	dump lowmemd-log /tmp/lowmemd.log
}

result mem_total_kib "$(awk '$1 == "MemTotal:" { print $2 }' /proc/meminfo)"
