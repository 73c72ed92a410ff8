# The memcg scope on a pure cgroup-v2 hierarchy: cgroup2 at /sys/fs/cgroup (nothing else
# mounted), +memory for the children, memory.max 256M on /box. First calm use (60 % of the
# limit for 10 s: nothing may be killed), then an adj-0 leak at 100 MiB/s in /box: lowmemd
# must kill it before the kernel's memcg OOM killer (memory.events oom_kill stays 0).
# Then, as the v1 host tests (tests/pressure.rs) in a fresh lowmemd each: cached apps make
# room for a growing foreground app, highest adj first; and a dry run under the same
# pressure logs would_kill and signals nobody.
. /vm/lib.sh
mount -t cgroup2 cgroup2 /sys/fs/cgroup || fail "mount cgroup2"
echo +memory >/sys/fs/cgroup/cgroup.subtree_control || fail "+memory"
mkdir /sys/fs/cgroup/box
echo 256M >/sys/fs/cgroup/box/memory.max || fail "memory.max"
result controllers "$(tr ' ' , </sys/fs/cgroup/box/cgroup.controllers)"
procs=/sys/fs/cgroup/box/cgroup.procs
events=/sys/fs/cgroup/box/memory.events
memcg_event() { awk -v k="$1" '$1 == k { print $2 }' "$events"; }

start_lowmemd --cgroup /box

# Calm: 154 MiB of 256 for 10 s.
spawn calm --adj 0 --mib 154 --rate 100 --cgroup-procs "$procs"
wait_ready calm
sleep 10
if alive "$PID_calm"; then result calm_alive 1; else result calm_alive 0; fi
result calm_actions "$(grep -c '"action"' /tmp/events.jsonl 2>/dev/null)"
kill -9 "$PID_calm"
wait "$PID_calm"

# Runaway.
spawn small --adj 0 --mib 8 --cgroup-procs "$procs"
wait_ready small
oom0=$(memcg_event oom_kill)
sysoom0=$(oom_kills)
t0=$(now_ms)
spawn leak --adj 0 --mib 0 --rate 100 --cgroup-procs "$procs"
wait_gone "$PID_leak" 120 || result leak_survived 1
t1=$(now_ms)
result leak_to_gone_ms $((t1 - t0))
result memcg_oom_kill_delta $(($(memcg_event oom_kill) - oom0))
result memcg_oom_events "$(memcg_event oom)"
result memcg_max_events "$(memcg_event max)"
result oom_kill_delta $(($(oom_kills) - sysoom0))
if alive "$PID_small"; then result small_alive 1; else result small_alive 0; fi
stop_lowmemd
dump_lowmemd
kill -9 "$PID_small"
wait "$PID_small"

# cached_apps PHASE FG_MIB: in /box, a small adj-0 process and background apps at adj 900,
# 950 and 1000 (30 MiB each), then a foreground app growing at 100 MiB/s to FG_MIB; 2 s to
# settle; RESULT PHASE_NAME_alive for each and PHASE_memcg_oom_kill_delta; then all go.
cached_apps() {
	oom0=$(memcg_event oom_kill)
	spawn small --adj 0 --mib 8 --cgroup-procs "$procs"
	wait_ready small
	for adj in 900 950 1000; do
		spawn "bg$adj" --adj "$adj" --mib 30 --cgroup-procs "$procs"
		wait_ready "bg$adj"
	done
	spawn fg --adj 0 --mib "$2" --rate 100 --cgroup-procs "$procs"
	end=$(($(now_ms) + 60000))
	until grep -q '^ready' /tmp/fg.out || ! alive "$PID_fg" || [ "$(now_ms)" -ge "$end" ]; do
		sleep 0.05
	done
	sleep 2
	for p in small bg900 bg950 bg1000 fg; do
		eval "pid=\$PID_$p"
		if alive "$pid"; then result "$1_${p}_alive" 1; else result "$1_${p}_alive" 0; fi
	done
	result "$1_memcg_oom_kill_delta" $(($(memcg_event oom_kill) - oom0))
	for p in small bg900 bg950 bg1000 fg; do
		eval "pid=\$PID_$p"
		kill -9 "$pid" 2>/dev/null
		wait "$pid"
	done
}

# Cached apps make room: 8 + 3 x 30 + 170 MiB do not fit in 256; two kills (1000, 950) do.
rm -f /tmp/events.jsonl /tmp/lowmemd.log
start_lowmemd --cgroup /box
cached_apps cached 170
stop_lowmemd
dump_lowmemd cached

# Dry run: 8 + 90 + 130 = 228 MiB fit (11 % available: the low level) without a kill.
rm -f /tmp/events.jsonl /tmp/lowmemd.log
start_lowmemd --cgroup /box --dry-run
cached_apps dry 130
stop_lowmemd
dump_lowmemd dry
