# deploy/busybox/S05lowmemd as a board's init would run it (policies/embedded.toml as
# /etc/lowmemd/policy.toml, 256 MiB with 128 MiB of zram swap, as the README's "zram on a
# small board"): `start` brings lowmemd up, it kills a runaway, `stop` ends it.
. /vm/lib.sh
# As a board's init runs it (lib.sh put this shell at -1000): lowmemd must protect itself.
echo 0 >/proc/$$/oom_score_adj
zram_swap 128M
init=/etc/init.d/S05lowmemd
out=$($init start 2>&1)
result start_rc $?
result start_output "$(echo "$out" | tr '\n' ' ')"
$init status >/dev/null 2>&1
result status_rc $?
pid=$(cat /var/run/lowmemd.pid 2>/dev/null)
result lowmemd_comm "$(cat "/proc/$pid/comm" 2>/dev/null)"
result lowmemd_adj "$(cat "/proc/$pid/oom_score_adj" 2>/dev/null)"
wait_file /var/log/lowmemd.log 'monitoring ' 30 || fail "lowmemd did not start: $(cat /var/log/lowmemd.log)"
result policy_file "$(grep -c 'policy in force: /etc/lowmemd/policy.toml' /var/log/lowmemd.log)"
oom0=$(oom_kills)
t0=$(now_ms)
spawn leak --adj 0 --mib 0 --rate 100
wait_gone "$PID_leak" 120 || result leak_survived 1
result leak_to_gone_ms $(($(now_ms) - t0))
result oom_kill_delta $(($(oom_kills) - oom0))
out=$($init stop 2>&1)
result stop_rc $?
result stop_output "$(echo "$out" | tr '\n' ' ')"
if alive "$pid"; then result lowmemd_alive_after_stop 1; else result lowmemd_alive_after_stop 0; fi
result lowmemd_processes "$(pidof lowmemd | wc -w)"
if [ -e /var/run/lowmemd.pid ]; then result pidfile_left 1; else result pidfile_left 0; fi
dump events /var/log/lowmemd-events.jsonl
dump lowmemd-log /var/log/lowmemd.log
