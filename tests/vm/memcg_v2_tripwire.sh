# The memory.high tripwire of a cgroup-v2 memcg scope (issue 25), on a pure cgroup-v2
# hierarchy with /box at memory.max 256M: lowmemd idles at 60 % and at 5 % usage (its
# threads' context switches over 30 s, as tests/idle.rs counts them), the same at 60 %
# with the tripwire off (the previous design, for the benchmark row), still kills a
# 1000 MiB/s runaway before the memcg OOM killer, puts the original memory.high back after
# a SIGKILL and a restart and on SIGTERM, and leaves a user's memory.high alone.
. /vm/lib.sh
mount -t cgroup2 cgroup2 /sys/fs/cgroup || fail "mount cgroup2"
echo +memory >/sys/fs/cgroup/cgroup.subtree_control || fail "+memory"
mkdir /sys/fs/cgroup/box
echo 256M >/sys/fs/cgroup/box/memory.max || fail "memory.max"
procs=/sys/fs/cgroup/box/cgroup.procs
events=/sys/fs/cgroup/box/memory.events
high=/sys/fs/cgroup/box/memory.high
memcg_event() { awk -v k="$1" '$1 == k { print $2 }' "$events"; }

# switches PID: context switches of all its threads so far; ticks PID: its CPU ticks.
switches() { cat /proc/"$1"/task/*/status | awk '/ctxt_switches/ { n += $2 } END { print n }'; }
ticks() { awk '{ sub(/.*\) /, ""); print $12 + $13 }' /proc/"$1"/stat; }

# idle NAME SECONDS: RESULT NAME_wakeups and NAME_ticks of lowmemd over SECONDS.
idle() {
	sleep 2
	s0=$(switches "$LOWMEMD")
	c0=$(ticks "$LOWMEMD")
	sleep "$2"
	result "$1_wakeups" $(($(switches "$LOWMEMD") - s0))
	result "$1_ticks" $(($(ticks "$LOWMEMD") - c0))
}

{ echo 'memory_high_tripwire = false'; cat /etc/lowmemd/policies/default.toml; } >/tmp/poll.toml

start_lowmemd --cgroup /box
result high_armed "$(cat $high)"
grep -q 'memory.high tripwire: lowmemd set memory.high' /tmp/lowmemd.log && result startup_says 1

spawn calm --adj 0 --mib 154 --rate 100 --cgroup-procs "$procs"
wait_ready calm
idle at60 30
kill -9 "$PID_calm"
wait "$PID_calm"

spawn small --adj 0 --mib 13 --cgroup-procs "$procs"
wait_ready small
idle at5 30

# The runaway, 1000 MiB/s, with the small one beside it.
oom0=$(memcg_event oom_kill)
sysoom0=$(oom_kills)
t0=$(now_ms)
spawn leak --adj 0 --mib 0 --rate 1000 --cgroup-procs "$procs"
wait_gone "$PID_leak" 120 || result leak_survived 1
result leak_to_gone_ms $(($(now_ms) - t0))
result memcg_oom_kill_delta $(($(memcg_event oom_kill) - oom0))
result oom_kill_delta $(($(oom_kills) - sysoom0))
result memcg_high_events "$(memcg_event high)"
if alive "$PID_small"; then result small_alive 1; else result small_alive 0; fi
sleep 1
result high_after_kill "$(cat $high)"

# SIGKILL: the tripwire stays behind; the next start (with it off) puts max back.
kill -9 "$LOWMEMD"
wait "$LOWMEMD"
result high_after_sigkill "$(cat $high)"
dump_lowmemd first
rm -f /tmp/lowmemd.log
start_lowmemd --cgroup /box --policy /tmp/poll.toml
result high_after_restart "$(cat $high)"
grep -q 'put back max' /tmp/lowmemd.log && result restart_says 1
spawn calm2 --adj 0 --mib 154 --cgroup-procs "$procs"
wait_ready calm2
idle poll60 10
stop_lowmemd
dump_lowmemd poll
kill -9 "$PID_calm2"
wait "$PID_calm2"

# With it on again, SIGTERM lifts it.
rm -f /tmp/lowmemd.log
start_lowmemd --cgroup /box
result high_rearmed "$(cat $high)"
stop_lowmemd
result high_after_term "$(cat $high)"

# A user's memory.high is left alone, said at start-up and by doctor.
echo 200M >$high
rm -f /tmp/lowmemd.log
start_lowmemd --cgroup /box
sleep 2
result high_user "$(cat $high)"
grep -q 'set by someone else: left alone' /tmp/lowmemd.log && result user_high_reported 1
lowmemd doctor --cgroup /box >/tmp/doctor.out 2>&1
grep -q 'someone else' /tmp/doctor.out && result doctor_says 1
stop_lowmemd
result high_user_after "$(cat $high)"
dump_lowmemd user
dump doctor /tmp/doctor.out
kill -9 "$PID_small"
wait "$PID_small"
