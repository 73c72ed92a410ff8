# The memcg scope on a pure cgroup-v2 hierarchy: cgroup2 at /sys/fs/cgroup (nothing else
# mounted), +memory for the children, memory.max 256M on /box. First calm use (60 % of the
# limit for 10 s: nothing may be killed), then an adj-0 leak at 100 MiB/s in /box: lowmemd
# must kill it before the kernel's memcg OOM killer (memory.events oom_kill stays 0).
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
