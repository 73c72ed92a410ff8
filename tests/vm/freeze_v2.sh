# The freeze tier (issue 23) on a pure cgroup-v2 hierarchy, as tests/freeze_pressure.rs on
# the host: a 256 MiB memcg scope /box with zram swap, a cached app (adj 900, 100 MiB of
# ~3:1-compressible memory read every 200 ms) in /box/app, a foreground job in /box/fg (v2:
# processes only in leaves, +memory down to them). The foreground job's 160 MiB keep
# available below the freeze level's 40 % even with the app paged out, so that only its end
# ends the pressure. Under pressure the app is frozen and paged out, nothing is killed; the
# foreground job ends and 10 s later the app is thawed and runs again; a lowmemd killed with
# SIGKILL while the app is frozen leaves it to the next start, which thaws it.
. /vm/lib.sh
mount -t cgroup2 cgroup2 /sys/fs/cgroup || fail "mount cgroup2"
echo +memory >/sys/fs/cgroup/cgroup.subtree_control || fail "+memory"
mkdir /sys/fs/cgroup/box /sys/fs/cgroup/box/app /sys/fs/cgroup/box/fg
echo +memory >/sys/fs/cgroup/box/cgroup.subtree_control || fail "+memory in /box"
echo 256M >/sys/fs/cgroup/box/memory.max || fail "memory.max"
zram_swap 256M
app=/sys/fs/cgroup/box/app
events=/sys/fs/cgroup/box/memory.events
memcg_event() { awk -v k="$1" '$1 == k { print $2 }' "$events"; }
frozen() { awk '$1 == "frozen" { print $2 }' "$app/cgroup.events"; }
# utime + stime of PID in clock ticks: moves only while it runs.
ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
swap_kib() { awk '$1 == "VmSwap:" { print $2 }' "/proc/$1/status"; }
# wait_frozen VALUE SECONDS: until the app's cgroup.events says frozen VALUE.
wait_frozen() {
	end=$(($(now_ms) + $2 * 1000))
	until [ "$(frozen)" = "$1" ]; do
		[ "$(now_ms)" -lt "$end" ] || return 1
		sleep 0.05
	done
}
count() { grep -c "\"action\":\"$1\"" /tmp/events.jsonl 2>/dev/null; }

# Freeze cached apps below 40 % available (RAM alone), thaw 10 s after that ends; kill
# anything but protected processes only when RAM and zram are nearly gone.
cat >/tmp/policy.toml <<'POLICY'
[[level]]
name = "critical"
action = "kill"
min_adj = 0
available_below_pct = 3

[[level]]
name = "cached"
action = "freeze"
min_adj = 900
available_below_pct = 40
thaw_after_ms = 10000
POLICY
cat >/tmp/kill-only.toml <<'POLICY'
[[level]]
name = "critical"
action = "kill"
min_adj = 0
available_below_pct = 3
POLICY
export RUNTIME_DIRECTORY=/run/lowmemd
mkdir -p "$RUNTIME_DIRECTORY"
result controllers "$(tr ' ' , <$app/cgroup.controllers)"
oom0=$(memcg_event oom_kill)
sysoom0=$(oom_kills)

spawn cached --adj 900 --mib 100 --rate 200 --cycle-ms 200 --compress-ratio 3 \
	--cgroup-procs "$app/cgroup.procs"
wait_ready cached
start_lowmemd --cgroup /box --policy /tmp/policy.toml
t0=$(now_ms)
spawn fg --adj 0 --mib 160 --rate 200 --cgroup-procs /sys/fs/cgroup/box/fg/cgroup.procs
wait_ready fg
wait_file /tmp/events.jsonl '"action":"freeze"' 60 || result freeze_missing 1
result freeze_ms $(($(now_ms) - t0))
wait_frozen 1 5 || result not_frozen 1
result frozen "$(frozen)"
a=$(ticks "$PID_cached")
sleep 1.5
result frozen_ticks_moved $(($(ticks "$PID_cached") - a))
result frozen_swap_kib "$(swap_kib "$PID_cached")"

# Memory returns: the foreground job ends; 10 s later the app is thawed and runs.
kill -9 "$PID_fg"
wait "$PID_fg"
t0=$(now_ms)
wait_file /tmp/events.jsonl '"action":"thaw"' 30 || result thaw_missing 1
result thaw_ms $(($(now_ms) - t0))
result thaw_reason "$(grep '"action":"thaw"' /tmp/events.jsonl | head -1 | sed -n 's/.*"reason":"\([a-z_]*\)".*/\1/p')"
result thawed_frozen "$(frozen)"
a=$(ticks "$PID_cached")
sleep 1.5
result thawed_ticks_moved $(($(ticks "$PID_cached") - a))
result freezes "$(count freeze)"
result thaws "$(count thaw)"
result kills "$(count kill)"
if alive "$PID_cached"; then result cached_alive 1; else result cached_alive 0; fi
stop_lowmemd
dump_lowmemd first

# SIGKILL while frozen: nothing can thaw it but the next start.
rm -f /tmp/events.jsonl /tmp/lowmemd.log
start_lowmemd --cgroup /box --policy /tmp/policy.toml
spawn fg2 --adj 0 --mib 160 --rate 200 --cgroup-procs /sys/fs/cgroup/box/fg/cgroup.procs
wait_ready fg2
wait_file /tmp/events.jsonl '"action":"freeze"' 60 || result crash_freeze_missing 1
wait_frozen 1 5 || result crash_not_frozen 1
kill -9 "$LOWMEMD"
wait "$LOWMEMD"
sleep 0.3
result crash_frozen "$(frozen)"
dump_lowmemd crash
rm -f /tmp/lowmemd.log
t0=$(now_ms)
start_lowmemd --cgroup /box --policy /tmp/kill-only.toml
wait_frozen 0 2 || result restart_not_thawed 1
result restart_thaw_ms $(($(now_ms) - t0))
result restart_frozen "$(frozen)"
result restart_says "$(grep -c thawed /tmp/lowmemd.log)"
stop_lowmemd
dump_lowmemd restart
kill -9 "$PID_fg2"
wait "$PID_fg2"
if alive "$PID_cached"; then result end_cached_alive 1; else result end_cached_alive 0; fi
result memcg_oom_kill_delta $(($(memcg_event oom_kill) - oom0))
result oom_kill_delta $(($(oom_kills) - sysoom0))
kill -9 "$PID_cached"
wait "$PID_cached"
