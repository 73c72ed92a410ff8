# One boot of the head to head on the systemd machine (benches/vm_systemd_head_to_head.rs,
# docs/head-to-head.md): GUARD (kernel, systemd-oomd, earlyoom, nohang, lowmemd) against
# each of CELLS (runaway, build, thrash, noswap; in that order: noswap turns swap off), from
# /vm/bench.env. A user with lingering runs their apps in app-*.scope units under
# user@1000.service; each cell starts from their editor and browser (the session restarted
# if a cell before took it down) and a latency probe at system scope (adj -1000). Everything
# is reported as `RESULT CELL.key=value`.

. /vm/lib.sh
. /vm/bench.env
: "${CELLS:=runaway build thrash noswap}"

USER_NAME=alice
USER_UID=1000
RUNTIME=/run/user/$USER_UID
OUT=/run/bench
mkdir -p $OUT
chmod 1777 $OUT
install -m 755 /vm/lowmemd-workload /usr/local/bin/lowmemd-workload

# At oom_score_adj 200, as on a systemd desktop: systemd 252's user manager runs at 100
# and gives its units 200, and an app launched by the shell (a user unit itself) inherits
# its 200. (choom: this scenario runs at -1000, which everything it starts would inherit.)
as_user() {
	choom -n 200 -- runuser -u "$USER_NAME" -- env XDG_RUNTIME_DIR="$RUNTIME" \
		DBUS_SESSION_BUS_ADDRESS="unix:path=$RUNTIME/bus" "$@"
}
# app NAME CMD...: CMD as the user in app-NAME.scope, as a desktop launches an app; its
# output in $OUT/NAME.out. (lowmemd-workload takes --adj 0 unless told: the 200 it
# inherits, which it may not lower.)
app() {
	_n=$1
	shift
	as_user systemd-run --user --quiet --scope --unit="app-$_n.scope" -- "$@" >"$OUT/$_n.out" 2>&1 &
}
# The pid of the process of app-NAME.scope named NAME (comm); fails while there is none
# (a pipeline's status is its last command's: `head` alone would always succeed).
app_pid() { pgrep -x -u $USER_UID "$1" | head -n 1 | grep .; }
ready() { grep -q '^ready' "$OUT/$1.out" 2>/dev/null; }
session_alive() { [ "$(prop user@$USER_UID.service ActiveState)" = active ]; }
user_procs() { find /sys/fs/cgroup/user.slice/user-$USER_UID.slice -name cgroup.procs -exec cat {} + 2>/dev/null | wc -l; }

result guard "$GUARD"
result mem_total_kib "$(awk '$1 == "MemTotal:" { print $2 }' /proc/meminfo)"

# The user's session, lingering: user@1000.service with its bus, nobody logged in.
useradd -m -u $USER_UID -s /bin/sh $USER_NAME
loginctl enable-linger $USER_NAME
until_ok 60 sh -c "[ -S $RUNTIME/bus ]"

# Swap as Ubuntu installs it (a swap file on the root file system); the noswap cell turns
# it off.
dd if=/dev/zero of=/swapfile bs=1M count=384 status=none
chmod 600 /swapfile
mkswap -q /swapfile >/dev/null && swapon /swapfile

# lowmemd's package is installed under every guard (it starts nothing until enabled): a
# `dpkg -i` by itself changes how fast a leak's swap phase goes (docs/zram-vm.md, the
# systemd machine), so no guard's machine may have had one the others did not.
dpkg -i /vm/lowmemd.deb >/dev/null 2>&1

# The guard, as each ships.
case $GUARD in
kernel) ;;
systemd-oomd)
	# Fedora's systemd-oomd-defaults (Ubuntu ships the same three settings): swap kill on the
	# root slice, memory pressure kill at 50 % on every user's manager, 20 s.
	mkdir -p /etc/systemd/system/-.slice.d /etc/systemd/system/user@.service.d /etc/systemd/oomd.conf.d
	printf '[Slice]\nManagedOOMSwap=kill\n' >/etc/systemd/system/-.slice.d/10-oomd-root-slice-defaults.conf
	printf '[Service]\nManagedOOMMemoryPressure=kill\nManagedOOMMemoryPressureLimit=50%%\n' >/etc/systemd/system/user@.service.d/10-oomd-user-service-defaults.conf
	printf '[OOM]\nDefaultMemoryPressureDurationSec=20s\n' >/etc/systemd/oomd.conf.d/10-oomd-defaults.conf
	systemctl daemon-reload
	# The bench's own hands (this scenario and the probe) are not part of what is compared:
	# the other guards never kill adj -1000, oomd is told with its own marking.
	systemctl set-property --runtime vm-test.service ManagedOOMPreference=omit
	systemctl restart user@$USER_UID.service
	until_ok 60 sh -c "[ -S $RUNTIME/bus ]"
	systemctl start systemd-oomd.service
	;;
earlyoom) systemctl start earlyoom.service ;;
nohang) systemctl start nohang.service ;;
lowmemd)
	cp /usr/share/doc/lowmemd/policies/desktop.toml /etc/lowmemd/policy.toml
	if [ -n "${LOWMEMD_LOG_LEVEL:-}" ]; then
		mkdir -p /etc/systemd/system/lowmemd.service.d
		printf '[Service]\nExecStart=\nExecStart=%s --log-level %s\n' \
			"$(systemctl cat lowmemd | sed -n 's/^ExecStart=//p' | tail -n 1)" \
			"$LOWMEMD_LOG_LEVEL" >/etc/systemd/system/lowmemd.service.d/log-level.conf
		systemctl daemon-reload
	fi
	systemctl enable --now lowmemd >/dev/null 2>&1
	;;
esac
sleep 2
guard_unit=$GUARD.service
[ "$GUARD" = kernel ] || result guard_state "$(prop "$guard_unit" ActiveState)"
result guard_version "$(dpkg-query -W -f '${Version}' "$GUARD" 2>/dev/null || echo -)"

# cell NAME: one cell from a fresh start of the user's apps; RESULT NAME.key=value.
cell() {
	CELL=$1
	r() { result "$CELL.$1" "$2"; }
	# What a cell before left: its apps stopped, the session back if it was taken down.
	for u in $(as_user systemctl --user list-units --plain --no-legend 'app-*.scope' 2>/dev/null | awk '{ print $1 }'); do
		as_user systemctl --user stop "$u" 2>/dev/null
	done
	session_alive || systemctl restart user@$USER_UID.service
	until_ok 60 sh -c "[ -S $RUNTIME/bus ]"
	# A scope killed in a cell before stays loaded as failed: its name could not be reused.
	as_user systemctl --user reset-failed 'app-*.scope' 2>/dev/null
	rm -f $OUT/*
	[ "$CELL" = noswap ] && swapoff -a
	r swap_kib "$(awk '$1 == "SwapTotal:" { print $2 }' /proc/meminfo)"
	sync
	echo 3 >/proc/sys/vm/drop_caches

	# The latency probe: every 50 ms it reads its 8 MiB and a small file.
	lowmemd-workload --name probe --adj -1000 --probe --mib 8 --probe-file /vm/lib.sh >/tmp/probe.out 2>&1 &
	probe=$!
	until_ok 60 grep -q '^ready' /tmp/probe.out

	# The user's everyday apps: an editor and a browser that keep using their memory.
	app editor lowmemd-workload --name editor --adj 200 --mib 48 --cycle-ms 1000
	app browser lowmemd-workload --name browser --adj 200 --mib 160 --cycle-ms 2000
	until_ok 60 ready editor
	until_ok 60 ready browser
	editor=$(app_pid editor)
	browser=$(app_pid browser)
	oom0=$(oom_kills)
	t_cell=$(date '+%Y-%m-%d %H:%M:%S')
	r user_procs_before "$(user_procs)"
	tracked="editor:$editor browser:$browser"

	case $CELL in
	runaway | noswap)
		# A runaway in one app's scope: grows at 64 MiB/s until something stops it.
		t0=$(now_ms)
		app leak lowmemd-workload --name leak --adj 200 --rate 64
		until_ok 20 app_pid leak >/dev/null
		leak=$(app_pid leak)
		[ -n "$leak" ] || {
			r failed "the leak did not start: $(cat $OUT/leak.out)"
			kill -TERM $probe && wait $probe
			return
		}
		if until_ok 180 gone "$leak"; then
			r leak_to_death_ms $(($(now_ms) - t0))
		else
			r leak_to_death_ms never
			as_user systemctl --user kill -s KILL app-leak.scope
		fi
		tracked="leak:$leak $tracked"
		;;
	build)
		# A parallel build: 24 compiler-sized jobs of 90 MiB, 6 at a time, each done in 8 s
		# (timeout's 124); a job killed by a signal says 128+N.
		t0=$(now_ms)
		app build sh -c "seq 24 | xargs -P 6 -I{} sh -c 'timeout 8 lowmemd-workload --name cc1plus --adj 200 --mib 90 --rate 200 >/dev/null; echo \$? >>$OUT/jobs'; echo done >>$OUT/jobs"
		builddone() { grep -q '^done' $OUT/jobs 2>/dev/null; }
		buildgone() { ! pgrep -x -u $USER_UID xargs >/dev/null; }
		until_ok 20 pgrep -x -u $USER_UID xargs >/dev/null
		until_ok 300 buildgone
		r build_ms $(($(now_ms) - t0))
		r build_finished "$(builddone && echo yes || echo no)"
		r build_jobs_ok "$(grep -c '^124$' $OUT/jobs 2>/dev/null)"
		r build_jobs_killed "$(grep -Evc '^(124|done)$' $OUT/jobs 2>/dev/null)"
		r build_job_codes "$(grep -v done $OUT/jobs 2>/dev/null | sort | uniq -c | tr -s ' \n' '  ')"
		;;
	thrash)
		# A file twice the page cache left beside the apps, written then read twice: the
		# cache thrashes, the machine should ride it out with everyone alive.
		t0=$(now_ms)
		app copy sh -c "dd if=/dev/urandom of=/home/$USER_NAME/big bs=1M count=640 status=none && cat /home/$USER_NAME/big >/dev/null && cat /home/$USER_NAME/big >/dev/null && echo copied"
		copied() { grep -q '^copied' $OUT/copy.out; }
		# Gone once its shell is (between dd and cat, neither runs for a moment).
		copygone() { ! pgrep -u $USER_UID -f "of=/home/$USER_NAME/big" >/dev/null; }
		until_ok 20 pgrep -u $USER_UID -x dd >/dev/null
		until_ok 300 copygone
		r thrash_ms $(($(now_ms) - t0))
		r thrash_finished "$(copied && echo yes || echo no)"
		rm -f /home/$USER_NAME/big
		;;
	esac
	sleep 3

	kill -TERM $probe
	wait $probe
	for kv in $(grep '^probe ' /tmp/probe.out); do
		case $kv in *=*) r "probe_${kv%%=*}" "${kv#*=}" ;; esac
	done

	# Who died and who killed them: the kernel when its OOM killer named the pid, else the
	# guard (the only other killer on the machine).
	died=""
	for t in $tracked; do
		name=${t%%:*}
		pid=${t#*:}
		alive "$pid" && continue
		if dmesg | grep -q "Killed process $pid "; then
			by=kernel
		elif [ "$GUARD" = kernel ]; then
			by=exit
		else
			by=$GUARD
		fi
		died="$died$name($by) "
	done
	r died "${died:-none}"
	r oom_kills $(($(oom_kills) - oom0))
	r session "$(session_alive && echo alive || echo dead)"
	r user_procs_after "$(user_procs)"
	echo "--- guard-log-$CELL begin"
	if [ -n "${LOWMEMD_LOG_LEVEL:-}" ]; then
		journalctl -q --no-pager -o short-monotonic --since "$t_cell" -u "$guard_unit" | tail -n 300
	else
		[ "$GUARD" = kernel ] || journalctl -q --no-pager -o short-monotonic --since "$t_cell" -u "$guard_unit" |
			grep -Ei 'kill|sigterm|sigkill|pressure|swap|victim|corrective|skip|vanish|exit|level' | head -n 40
	fi
	echo "--- guard-log-$CELL end"
}

for c in $CELLS; do
	cell "$c"
done
