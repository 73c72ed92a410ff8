# The helpers of the systemd machine's scenarios (scenario.sh, session.sh, bench.sh):
# sourced from /vm, where the host put them.

# journalctl and systemctl write to the console, which is a tty: no colour codes.
export SYSTEMD_COLORS=0 SYSTEMD_PAGER=

result() { echo "RESULT $1=$2"; }
pass() { result "check_$1" "PASS $2"; }
fail() { result "check_$1" "FAIL $2"; }

# Milliseconds since boot.
now_ms() { awk '{ printf "%d\n", $1 * 1000 }' /proc/uptime; }

# until_ok SECONDS CMD...: runs CMD every 200 ms until it succeeds; 1 if it never did.
until_ok() {
	_end=$(($(now_ms) + $1 * 1000))
	shift
	until "$@"; do
		[ "$(now_ms)" -lt "$_end" ] || return 1
		sleep 0.2
	done
}

alive() {
	# No pid is no process (not /proc//stat, which is /proc/stat).
	[ -n "$1" ] || return 1
	_state=$(cut -d' ' -f3 "/proc/$1/stat" 2>/dev/null) || return 1
	[ -n "$_state" ] && [ "$_state" != Z ] && [ "$_state" != X ]
}
gone() { ! alive "$1"; }
all_gone() {
	for _p in "$@"; do alive "$_p" && return 1; done
	return 0
}

prop() { systemctl show -P "$2" "$1"; }
oom_kills() { awk '$1 == "oom_kill" { print $2 }' /proc/vmstat; }
# The policy in force as `lowmemd status` says it ("FILE (hash H)").
policy_in_force() { lowmemd status 2>&1 | sed -n 's/^policy: *//p'; }
# The kill of PID in the journal (`journalctl LOWMEMD_ACTION=kill`), one line.
kill_in_journal() { journalctl -q --no-pager -o cat LOWMEMD_ACTION=kill "LOWMEMD_PID=$1" | tail -n 1; }
journal_has_kill() { [ -n "$(kill_in_journal "$1")" ]; }
# systemd-run UNIT ARGS: a transient service at oom_score_adj 0 (systemd's default).
run_unit() {
	_u=$1
	shift
	systemd-run --quiet --unit="$_u" "$@" >/dev/null && prop "$_u" MainPID
}
main_pid_changed() { [ "$(prop lowmemd MainPID)" != "$1" ] && [ "$(prop lowmemd ActiveState)" = active ]; }
