# The systemd machine's checks (tests/vm/systemd.rs), in order, in one boot: the .deb as a
# user installs it, then every claim of the unit. Each check says `RESULT check_NAME=PASS
# what was seen` or `=FAIL what was seen`; a failed check does not stop the ones after it.
# Runs as root in vm-test.service (oom_score_adj -1000), from /vm (the host's tar).

. /vm/lib.sh

result mem_total_kib "$(awk '$1 == "MemTotal:" { print $2 }' /proc/meminfo)"
result kernel "$(uname -r)"
result systemd "$(systemctl --version | head -n 1)"

# 1. The package, as the README tells users to install it.
if out=$(dpkg -i /vm/lowmemd.deb 2>&1); then
	pass install "dpkg -i: $(dpkg-query -W -f '${Package} ${Version} ${Status}' lowmemd)"
else
	fail install "dpkg -i: $(echo "$out" | tail -n 3 | tr '\n' ' ')"
fi

# 2. enable --now: active only once lowmemd said READY=1 (Type=notify).
out=$(systemctl enable --now lowmemd 2>&1)
rc=$?
state=$(prop lowmemd ActiveState)/$(prop lowmemd SubState)
type=$(prop lowmemd Type)
status=$(prop lowmemd StatusText)
enabled=$(systemctl is-enabled lowmemd 2>&1)
seen="rc $rc, $state, Type=$type, $enabled, Status=\"$status\""
if [ $rc = 0 ] && [ "$state" = active/running ] && [ "$type" = notify ] &&
	[ "$enabled" = enabled ] && [ -n "$status" ]; then
	pass active "$seen"
else
	fail active "$seen; $out"
fi
FIRST_PID=$(prop lowmemd MainPID)

# 3. The sandbox: systemd's own exposure score, at most 2.0.
exposure=$(systemd-analyze security lowmemd 2>&1 | sed -n 's/.*Overall exposure level for lowmemd.service: \([0-9.]*\).*/\1/p')
result exposure "$exposure"
if [ -n "$exposure" ] && awk -v e="$exposure" 'BEGIN { exit !(e <= 2.0) }'; then
	pass security "exposure $exposure"
else
	fail security "exposure '$exposure': $(systemd-analyze security lowmemd 2>&1 | tail -n 2 | tr '\n' ' ')"
fi

# 3b. Inside that sandbox the kill path's threads (monitor, pipeline) run SCHED_FIFO, as
# lmkd's, and the rest stays SCHED_OTHER: stat's 41st field, the policy (1: FIFO).
policies=$(for t in /proc/"$FIRST_PID"/task/*; do
	printf '%s=%s ' "$(cat "$t/comm")" "$(awk '{ print $41 }' "$t/stat")"
done)
case " $policies" in
*" monitor=1 "*) fifo_monitor=1 ;;
*) fifo_monitor=0 ;;
esac
case " $policies" in
*" pipeline=1 "*) fifo_pipeline=1 ;;
*) fifo_pipeline=0 ;;
esac
if [ $fifo_monitor = 1 ] && [ $fifo_pipeline = 1 ] && echo "$policies" | grep -q 'log-writer=0 '; then
	pass priority "$policies"
else
	fail priority "$policies; $(journalctl -q --no-pager -o cat -u lowmemd | grep -i 'thread' | head -n 2)"
fi

# 4. `lowmemd status` for an admin (root), through the unit's status socket.
out=$(lowmemd status 2>&1)
rc=$?
if [ $rc = 0 ] && echo "$out" | grep -q '^policy: */etc/lowmemd/policy.toml'; then
	pass status "rc 0: $(echo "$out" | head -n 4 | tr '\n' '|')"
else
	fail status "rc $rc: $(echo "$out" | head -n 6 | tr '\n' '|')"
fi

# 4b. `lowmemd rank` for an admin, with the installed policy: the machine's processes in
# kill order; the daemon itself is there at adj -1000 (OOMScoreAdjust=), excluded.
out=$(lowmemd rank --policy /etc/lowmemd/policy.toml 2>&1)
rc=$?
row=$(echo "$out" | awk -v p="$FIRST_PID" '$1 == p')
rows=$(echo "$out" | awk '$1 ~ /^[0-9]+$/' | wc -l)
if [ $rc = 0 ] && [ "$rows" -ge 5 ] && echo "$row" | grep -q -- '-1000'; then
	pass rank "rc 0, $rows processes, lowmemd: $(echo "$row" | tr -s ' ')"
else
	fail rank "rc $rc, $rows processes, lowmemd row '$row': $(echo "$out" | head -n 4 | tr '\n' '|')"
fi

# 5. The watchdog: a stopped daemon pings no more and is restarted (WatchdogSec=10s).
restarts0=$(prop lowmemd NRestarts)
t0=$(now_ms)
kill -STOP "$FIRST_PID"
if until_ok 60 main_pid_changed "$FIRST_PID"; then
	pass watchdog "pid $FIRST_PID stopped, pid $(prop lowmemd MainPID) active after $(($(now_ms) - t0)) ms, NRestarts $restarts0 -> $(prop lowmemd NRestarts)"
else
	fail watchdog "pid $FIRST_PID stopped 60 s ago, MainPID $(prop lowmemd MainPID), $(prop lowmemd ActiveState), NRestarts $(prop lowmemd NRestarts)"
	kill -CONT "$FIRST_PID"
fi

# 6. A runaway at system scope (the installed policy, default.toml), with the restarted
# daemon: lowmemd kills it, the kernel's OOM killer never runs, the innocents live, and
# the kill is in the journal under LOWMEMD_ACTION=kill.
oom0=$(oom_kills)
in1=$(run_unit innocent1 python3 /vm/hog.py --hold 32)
in2=$(run_unit innocent2 python3 /vm/hog.py --hold 32)
sleep 2
t0=$(now_ms)
leak=$(run_unit runaway python3 /vm/hog.py --rate 64)
result pid_runaway "$leak"
if until_ok 120 gone "$leak"; then
	took=$(($(now_ms) - t0))
	until_ok 15 journal_has_kill "$leak"
	journal=$(kill_in_journal "$leak")
	oom=$(($(oom_kills) - oom0))
	seen="runaway pid $leak gone after $took ms, $oom kernel OOM kills, innocents alive: $(alive "$in1" && echo 1 || echo 0)$(alive "$in2" && echo 1 || echo 0), journal: ${journal:-nothing}"
	if [ $oom = 0 ] && [ -n "$journal" ] && alive "$in1" && alive "$in2"; then
		pass runaway "$seen"
	else
		fail runaway "$seen"
	fi
else
	fail runaway "runaway pid $leak still runs after 120 s; $(($(oom_kills) - oom0)) kernel OOM kills"
	systemctl kill -s KILL runaway
fi
systemctl stop innocent1 innocent2 runaway 2>/dev/null
systemctl reset-failed 2>/dev/null

# 7. `systemctl reload` after an edit: desktop.toml with kill = "cgroup" in every kill
# level. lowmemd also reloads by itself when a file in /etc/lowmemd is saved, which would
# apply the edit before the reload does; so here the policy lives outside that directory,
# behind a symlink (as a configuration manager may keep it), where only the reload sees an
# edit. The edit must not be in force before `systemctl reload`, and must be after it, in
# the same process.
mkdir -p /etc/lowmemd-site
cp /etc/lowmemd/policy.toml /etc/lowmemd-site/policy.toml
ln -s /etc/lowmemd-site/policy.toml /etc/lowmemd/policy.toml.link
mv -T /etc/lowmemd/policy.toml.link /etc/lowmemd/policy.toml
sleep 2
before=$(policy_in_force)
t_reload=$(date '+%Y-%m-%d %H:%M:%S')
pid=$(prop lowmemd MainPID)
sed 's/^action = "kill"$/&\nkill = "cgroup"/' /usr/share/doc/lowmemd/policies/desktop.toml >/etc/lowmemd-site/policy.toml
sleep 3
unreloaded=$(policy_in_force)
out=$(systemctl reload lowmemd 2>&1)
rc=$?
sighup() { journalctl -q --no-pager -o cat -u lowmemd --since "$t_reload" | grep 'policy reloaded (SIGHUP)'; }
until_ok 15 sighup >/dev/null
after=$(policy_in_force)
lines=$(journalctl -q --no-pager -o cat -u lowmemd --since "$t_reload" | grep 'policy reload' | cut -c1-120 | tr '\n' '|')
seen="rc $rc, pid $pid -> $(prop lowmemd MainPID), policy '$before', 3 s after the edit '$unreloaded', after the reload '$after', journal: $lines"
if [ $rc = 0 ] && [ "$(prop lowmemd MainPID)" = "$pid" ] && [ -n "$before" ] &&
	[ "$unreloaded" = "$before" ] && [ "$after" != "$before" ] && [ -n "$after" ] &&
	[ -n "$(sighup)" ] && [ "$(grep -c '^kill = "cgroup"' /etc/lowmemd/policy.toml)" -ge 2 ]; then
	pass reload "$seen"
else
	fail reload "$seen $out"
fi

# 8. kill = "cgroup" under the unit: a runaway in a three-process app-hog.scope (as a
# desktop starts apps): all three die, app-other.scope lives, no kernel OOM kill.
oom0=$(oom_kills)
scope_procs() { cat /sys/fs/cgroup/system.slice/"$1"/cgroup.procs 2>/dev/null; }
systemd-run --quiet --scope --unit=app-other -- sh -c 'echo 0 >/proc/self/oom_score_adj; exec python3 /vm/hog.py --hold 32' &
systemd-run --quiet --scope --unit=app-hog -- sh -c 'echo 0 >/proc/self/oom_score_adj; sleep 1000 & sleep 1000 & exec python3 /vm/hog.py --rate 64' &
three() { [ "$(scope_procs app-hog.scope | wc -l)" = 3 ]; }
if until_ok 30 three; then
	app=$(scope_procs app-hog.scope | tr '\n' ' ')
	other=$(scope_procs app-other.scope | tr '\n' ' ')
	t0=$(now_ms)
	# shellcheck disable=SC2086
	if until_ok 120 all_gone $app; then
		took=$(($(now_ms) - t0))
		sleep 1
		oom=$(($(oom_kills) - oom0))
		journal=""
		for p in $app; do journal="$journal$(kill_in_journal "$p")"; done
		refused=$(journalctl -q --no-pager -o cat -u lowmemd --since "$t_reload" | grep 'cannot kill cgroup' | head -n 3 | tr '\n' '|')
		processes=$(grep -o '"processes":[0-9]*' /var/log/lowmemd/events.jsonl | tail -n 1 | cut -d: -f2)
		# shellcheck disable=SC2086
		seen="app-hog.scope pids $app all gone after $took ms, event processes=$processes, $oom kernel OOM kills, app-other alive: $(all_gone $other && echo 0 || echo 1), journal: ${journal:-nothing} ${refused}"
		# shellcheck disable=SC2086
		if [ $oom = 0 ] && [ "$processes" = 3 ] && [ -n "$journal" ] && ! all_gone $other && [ -z "$refused" ]; then
			pass kill_cgroup "$seen"
		else
			fail kill_cgroup "$seen"
		fi
	else
		left=""
		for p in $app; do alive "$p" && left="$left $p($(cut -d' ' -f2 /proc/$p/stat))"; done
		fail kill_cgroup "app-hog.scope pids $app: still running after 120 s:$left; $(($(oom_kills) - oom0)) kernel OOM kills; journal: $(journalctl -q --no-pager -o cat -u lowmemd --since "$t_reload" | tail -n 5 | tr '\n' '|')"
	fi
else
	fail kill_cgroup "app-hog.scope never had three processes: $(scope_procs app-hog.scope | tr '\n' ' ')"
fi
systemctl stop app-hog.scope app-other.scope 2>/dev/null

# 9. The metrics drop-in the package ships as an example: /metrics on localhost:10104.
mkdir -p /etc/systemd/system/lowmemd.service.d
cp /usr/share/doc/lowmemd/examples/metrics.conf /etc/systemd/system/lowmemd.service.d/
systemctl daemon-reload
systemctl restart lowmemd
scrape() { bash -c 'exec 3<>/dev/tcp/127.0.0.1/10104 && printf "GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n" >&3 && cat <&3' >/tmp/metrics 2>&1 && grep -q '^lowmemd_' /tmp/metrics; }
if until_ok 30 scrape; then
	pass metrics "$(head -n 1 /tmp/metrics | tr -d '\r'), $(grep -c '^lowmemd_' /tmp/metrics) lowmemd_ samples, exposure with the drop-in $(systemd-analyze security lowmemd 2>&1 | sed -n 's/.*lowmemd.service: \([0-9.]*\).*/\1/p')"
else
	fail metrics "$(prop lowmemd ActiveState), scrape: $(head -c 300 /tmp/metrics | tr '\n' '|')"
fi

# 10. Socket activation: with the daemon stopped and lowmemd.socket enabled, an lmkd client
# that connects to /run/lmkd starts lowmemd.service and gets its LMK_GETKILLCNT answer
# ([4, kills]).
systemctl stop lowmemd
out=$(systemctl enable --now lowmemd.socket 2>&1)
rc=$?
before=$(prop lowmemd ActiveState)
answer=$(python3 /vm/lmkd_client.py 2>&1)
after=$(prop lowmemd ActiveState)
seen="enable --now lowmemd.socket rc $rc, lowmemd $before before the client, $after after, answer '$answer'"
if [ $rc = 0 ] && [ "$before" = inactive ] && [ "$after" = active ] && echo "$answer" | grep -Eq '^4 [0-9]+$'; then
	pass socket "$seen"
else
	fail socket "$seen $out"
fi

echo "--- events begin"
cat /var/log/lowmemd/events.jsonl
echo "--- events end"
echo "--- lowmemd-log begin"
journalctl -q --no-pager -o short-monotonic -u lowmemd
echo "--- lowmemd-log end"
