# kill = "cgroup" on a pure cgroup-v2 hierarchy: /box (memory.max 256M) holds two app
# cgroups; app-a.scope has four processes, one of them leaking at 100 MiB/s, app-b.scope
# one. lowmemd must kill app-a whole (all four, each exit confirmed) and leave app-b alone,
# before the kernel's memcg OOM killer (memory.events oom_kill stays 0).
. /vm/lib.sh
mount -t cgroup2 cgroup2 /sys/fs/cgroup || fail "mount cgroup2"
echo +memory >/sys/fs/cgroup/cgroup.subtree_control || fail "+memory"
mkdir /sys/fs/cgroup/box /sys/fs/cgroup/box/app-a.scope /sys/fs/cgroup/box/app-b.scope
echo 256M >/sys/fs/cgroup/box/memory.max || fail "memory.max"
a=/sys/fs/cgroup/box/app-a.scope/cgroup.procs
b=/sys/fs/cgroup/box/app-b.scope/cgroup.procs
events=/sys/fs/cgroup/box/memory.events
memcg_event() { awk -v k="$1" '$1 == k { print $2 }' "$events"; }
cat >/tmp/policy.toml <<'POLICY'
[[level]]
name = "critical"
action = "kill"
kill = "cgroup"
min_adj = 0
available_below_pct = 5

[[level]]
name = "low"
action = "kill"
kill = "cgroup"
min_adj = 900
available_below_pct = 15
POLICY

start_lowmemd --cgroup /box --policy /tmp/policy.toml
for n in a1 a2 a3; do
	spawn "$n" --adj 900 --mib 8 --cgroup-procs "$a"
	wait_ready "$n"
done
spawn b1 --adj 900 --mib 8 --cgroup-procs "$b"
wait_ready b1
oom0=$(memcg_event oom_kill)
sysoom0=$(oom_kills)
spawn leak --adj 900 --mib 0 --rate 100 --cgroup-procs "$a"
wait_gone "$PID_leak" 120 || result leak_survived 1
sleep 1
for n in a1 a2 a3 b1; do
	eval "pid=\$PID_$n"
	if alive "$pid"; then result "${n}_alive" 1; else result "${n}_alive" 0; fi
done
result memcg_oom_kill_delta $(($(memcg_event oom_kill) - oom0))
result oom_kill_delta $(($(oom_kills) - sysoom0))
result processes "$(grep -o '"processes":[0-9]*' /tmp/events.jsonl | head -n 1 | cut -d: -f2)"
result confirmed "$(grep -c '"exit_confirmed":true' /tmp/events.jsonl)"
stop_lowmemd
dump_lowmemd
