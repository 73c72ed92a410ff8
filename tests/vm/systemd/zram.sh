# The zram scenarios of the busybox bed (tests/vm/system_runaway.sh, finite_job.sh) on the
# real systemd machine, for benches/vm_head_to_head.rs: systemd-oomd needs systemd, and its
# paired lowmemd arm runs in the same machine so that the two compare like for like.
# SCENARIO (runaway | finite) and GUARD (oomd | lowmemd, POLICY a file in /vm) come from
# /vm/env.sh. Every workload is a transient unit in apps.slice (as a desktop starts apps in
# their own units under user@.service): systemd-oomd kills cgroups, so a workload in
# vm-test.service would take the scenario with it. The probe (adj -1000) is a unit of its
# own in system.slice, which only the swap rule watches, and it never holds the 5 % of swap
# that rule needs to pick a cgroup.
. /vm/lib.sh

install -m 755 /vm/lowmemd-workload /usr/local/bin/lowmemd-workload
SLICE=apps.slice

# spawn NAME ARGS...: lib.sh's spawn, as the unit NAME.service in apps.slice.
spawn() {
	name=$1
	shift
	systemd-run --quiet --unit="$name" --slice="$SLICE" \
		-p StandardOutput="truncate:/tmp/$name.out" -p StandardError=inherit \
		/usr/local/bin/lowmemd-workload --name "$name" "$@" || fail "systemd-run $name"
	note_spawned "$name" "$(systemctl show -P MainPID "$name")" "$@"
}

start_probe() {
	systemd-run --quiet --unit=probe -p StandardOutput=truncate:/tmp/probe.out -p StandardError=inherit \
		/usr/local/bin/lowmemd-workload --name probe --adj -1000 --probe --mib 8 \
		--probe-file /vm/lib.sh || fail "systemd-run probe"
	PROBE=$(systemctl show -P MainPID probe)
	wait_file /tmp/probe.out '^ready' 60 || fail "probe not ready: $(cat /tmp/probe.out)"
}

# The probe is not the shell's child here: stop it and wait until it printed its summary.
stop_probe() {
	systemctl kill -s TERM probe
	wait_gone "$PROBE" 30
	for _kv in $(grep '^probe ' /tmp/probe.out); do
		case $_kv in *=*) result "probe_${_kv%%=*}" "${_kv#*=}" ;; esac
	done
}

# systemd-oomd's package, installed under every guard, its daemon started by start_oomd
# alone (policy-rc.d keeps the package's scripts from starting it). Installing it changes by
# itself how fast the leak's zram phase goes — lowmemd killed the runaway 7.4-7.8 s after
# its start where the package was installed, oomd run or not, against 10.9-11.8 s where it
# was not (docs/zram-vm.md; daemon-reload or unpacking the files alone did not do it) — so
# every guard runs on a machine where it happened.
install_oomd() {
	printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
	chmod 755 /usr/sbin/policy-rc.d
	dpkg -i /vm/systemd-oomd.deb >/tmp/dpkg.log 2>&1 || fail "dpkg -i systemd-oomd: $(tail -n 3 /tmp/dpkg.log)"
	rm -f /usr/sbin/policy-rc.d
	result oomd_installed "$(systemctl is-active systemd-oomd)"
}

# systemd-oomd as Fedora's systemd-oomd-defaults and Ubuntu set it up: ManagedOOMSwap=kill
# on the root slice, ManagedOOMMemoryPressure=kill at 50 % on the unit that holds the
# user's apps (user@.service there, apps.slice here), pressure held 20 s; the rest is
# systemd's defaults (SwapUsedLimit=90 %).
start_oomd() {
	mkdir -p /etc/systemd/system/-.slice.d /etc/systemd/system/user@.service.d \
		/etc/systemd/system/$SLICE.d /etc/systemd/oomd.conf.d
	printf '[Slice]\nManagedOOMSwap=kill\n' >/etc/systemd/system/-.slice.d/10-oomd-root-slice-defaults.conf
	printf '[Service]\nManagedOOMMemoryPressure=kill\nManagedOOMMemoryPressureLimit=50%%\n' \
		>/etc/systemd/system/user@.service.d/10-oomd-user-service-defaults.conf
	printf '[Slice]\nManagedOOMMemoryPressure=kill\nManagedOOMMemoryPressureLimit=50%%\n' \
		>/etc/systemd/system/$SLICE.d/10-oomd-user-service-defaults.conf
	printf '[OOM]\nDefaultMemoryPressureDurationSec=20s\n' >/etc/systemd/oomd.conf.d/10-oomd-defaults.conf
	systemctl daemon-reload
	# apps.slice exists once it holds a unit: start it so that oomd watches it from now on.
	systemctl start "$SLICE"
	systemctl enable systemd-oomd >/dev/null 2>&1
	systemctl restart systemd-oomd || fail "systemd-oomd did not start: $(journalctl -q --no-pager -u systemd-oomd | tail -n 3)"
	watched() { oomctl dump 2>/dev/null | grep -q "Path: /$SLICE"; }
	_end=$(($(now_ms) + 30000))
	until watched; do
		[ "$(now_ms)" -lt "$_end" ] || fail "systemd-oomd does not watch $SLICE: $(oomctl dump 2>&1 | head -n 20 | tr '\n' '|')"
		sleep 0.2
	done
	result oomd "$(oomctl dump | grep -E 'Swap Used Limit|Default Memory Pressure' | tr -s ' ' | tr '\n' ';')"
}

# lowmemd as deploy/systemd/lowmemd.service runs it (the unit the .deb ships), with POLICY.
start_lowmemd_unit() {
	install -m 755 /vm/lowmemd /usr/bin/lowmemd
	install -m 644 /vm/lowmemd.service /etc/systemd/system/lowmemd.service
	mkdir -p /etc/lowmemd
	install -m 644 "/vm/${POLICY:?}" /etc/lowmemd/policy.toml
	if [ -n "${LOWMEMD_LOG_LEVEL:-}" ]; then
		mkdir -p /etc/systemd/system/lowmemd.service.d
		printf '[Service]\nExecStart=\nExecStart=%s --log-level %s\n' \
			"$(sed -n 's/^ExecStart=//p' /etc/systemd/system/lowmemd.service)" "$LOWMEMD_LOG_LEVEL" \
			>/etc/systemd/system/lowmemd.service.d/log-level.conf
	fi
	systemctl daemon-reload
	systemctl start lowmemd || fail "lowmemd did not start: $(journalctl -q --no-pager -u lowmemd | tail -n 5 | tr '\n' '|')"
	result lowmemd_started 1
}

start_guard() {
	install_oomd
	case $GUARD in
	oomd) start_oomd ;;
	lowmemd) start_lowmemd_unit ;;
	# The kernel alone: the pace a job has when nobody watches.
	none) ;;
	*) fail "unknown GUARD $GUARD" ;;
	esac
	result guard "$GUARD${POLICY:+ $POLICY}"
}

# comm_ticks NAME: the CPU time (utime + stime, clock ticks) of the processes and kernel
# threads named NAME so far: where the machine's CPU went besides the guard (psimon is the
# kernel's PSI trigger poller, alive while someone holds a trigger; kswapd0 reclaims).
comm_ticks() {
	_sum=0
	for _s in /proc/[0-9]*/stat; do
		read -r _line <"$_s" 2>/dev/null || continue
		case $_line in *"($1)"*) ;; *) continue ;; esac
		set -- "$1" ${_line##*) }
		_sum=$((_sum + ${13} + ${14}))
	done
	echo $_sum
}

# unit_cpu_ms UNIT: the CPU time the unit used so far (its cgroup's cpu.stat), in ms.
unit_cpu_ms() {
	_ns=$(systemctl show -P CPUUsageNSec "$1")
	case $_ns in '' | *[!0-9]*) echo "?" ;; *) echo $((_ns / 1000000)) ;; esac
}

stop_guard() {
	case $GUARD in
	oomd) result guard_cpu_ms "$(unit_cpu_ms systemd-oomd)" ;;
	lowmemd)
		result guard_cpu_ms "$(unit_cpu_ms lowmemd)"
		# Where lowmemd's CPU went, thread by thread (utime + stime, clock ticks).
		_main=$(systemctl show -P MainPID lowmemd)
		for _t in /proc/"$_main"/task/*; do
			read -r _comm <"$_t/comm"
			result "guard_thread_${_comm}_ticks" "$(awk '{ print $14 + $15 }' "$_t/stat")"
		done
		;;
	esac
	case $GUARD in
	oomd)
		journalctl -q --no-pager -o short-monotonic -u systemd-oomd >/tmp/oomd.log
		dump oomd-log /tmp/oomd.log
		;;
	lowmemd)
		systemctl stop lowmemd
		result lowmemd_exit "$(systemctl show -P ExecMainStatus lowmemd)"
		journalctl -q --no-pager -o short-monotonic -u lowmemd >/tmp/lowmemd.log
		dump events /var/log/lowmemd/events.jsonl
		dump lowmemd-log /tmp/lowmemd.log
		;;
	esac
}

# lib.sh's deaths, with systemd-oomd as a killer: it kills a unit's cgroup and says so
# in its journal ("Killed /apps.slice/NAME.service due to ...").
deaths() {
	ln -sf /var/log/lowmemd/events.jsonl /tmp/events.jsonl
	_died=
	for _n in $SPAWNED; do
		eval "_pid=\$PID_$_n _adj=\$ADJ_$_n"
		alive "$_pid" && continue
		if dmesg | grep -q "Killed process $_pid ("; then
			_by=kernel
		elif grep '"action":"kill"' /tmp/events.jsonl 2>/dev/null | grep -Eq "\"pid\":$_pid[,}]"; then
			_by=lowmemd
		elif journalctl -q --no-pager -o cat -u systemd-oomd | grep -q "Killed /$SLICE/$_n.service"; then
			_by=systemd-oomd
		else
			_by=exited
		fi
		_died="$_died${_died:+,}$_n/$_adj/$_by"
	done
	result died "${_died:--}"
}

# settle: waits (at most 60 s) until the machine is quiet — no systemd job but this
# scenario's own, and the CPUs 90 % idle over a second — then drops the page cache, so that
# every arm starts its workloads on a settled machine with the same cache. (The leak reached
# 64 MiB of swap after 8 s in the systemd-oomd arm and 13-21 s in lowmemd's, not because of
# boot — 20 s more of waiting changed nothing — nor of lowmemd's polling: docs/zram-vm.md.)
settle() {
	_end=$(($(now_ms) + 60000))
	while [ "$(now_ms)" -lt "$_end" ]; do
		_jobs=$(systemctl list-jobs --no-legend 2>/dev/null | grep -vc 'vm-test.service')
		read -r _ _u _n _s _i _w _ </proc/stat
		sleep 1
		read -r _ _u2 _n2 _s2 _i2 _w2 _ </proc/stat
		_busy=$((_u2 + _n2 + _s2 - _u - _n - _s))
		_idle=$((_i2 + _w2 - _i - _w))
		if [ "$_jobs" -eq 0 ] && [ $((_idle * 10)) -ge $(((_busy + _idle) * 9)) ]; then
			result settled_uptime_ms "$(now_ms)"
			# The same page cache for every arm: what each arm's set-up read or wrote
			# (a package installed, a binary copied) is not left for its job to reclaim.
			sync
			echo 3 >/proc/sys/vm/drop_caches
			result cached_before_kib "$(awk '$1 == "Cached:" { print $2 }' /proc/meminfo)"
			return
		fi
	done
	result settled_uptime_ms "never ($_jobs jobs; busy $_busy of $((_busy + _idle)) ticks)"
}

modprobe zram || fail "modprobe zram"
modprobe lzo-rle 2>/dev/null

case ${SCENARIO:?} in
runaway)
	# tests/vm/system_runaway.sh
	zram_swap "$(($(awk '$1 == "MemTotal:" { print $2 }' /proc/meminfo) / 2))K"
	start_guard
	settle
	for i in 1 2 3; do spawn "innocent$i" --adj 0 --mib 16; done
	for i in 1 2 3; do wait_ready "innocent$i"; done
	start_probe
	result available_before_kib "$(mem_available_kib)"
	oom0=$(oom_kills)
	start_min_available
	t0=$(now_ms)
	result leak_start_uptime_ms "$t0"
	psimon0=$(comm_ticks psimon) kswapd0=$(comm_ticks kswapd0)
	cp /proc/vmstat /tmp/vmstat0
	spawn leak --adj 0 --mib 0 --rate 100
	if ! wait_gone "$PID_leak" 120; then
		result leak_survived 1
		# The machine must come back for the results to leave it.
		systemctl kill -s KILL leak
		wait_gone "$PID_leak" 60
	fi
	result leak_to_gone_ms $(($(now_ms) - t0))
	result psimon_ticks $(($(comm_ticks psimon) - psimon0))
	result kswapd_ticks $(($(comm_ticks kswapd0) - kswapd0))
	result leak_cpu_ms "$(unit_cpu_ms leak)"
	# Where the reclaim went while the leak lived: scanned and stolen, anon and file,
	# swapped out, refaulted.
	for _k in pgscan_anon pgsteal_anon pgscan_file pgsteal_file pswpout pswpin \
		workingset_refault_anon workingset_refault_file pgmajfault allocstall_normal \
		allocstall_movable pgscan_direct pgscan_kswapd; do
		result "vmstat_$_k" "$(awk -v k="$_k" 'NR == FNR { if ($1 == k) v = $2; next }
			$1 == k { print $2 - v; exit }' /tmp/vmstat0 /proc/vmstat)"
	done
	stop_min_available
	result oom_kill_delta $(($(oom_kills) - oom0))
	for i in 1 2 3; do
		eval "pid=\$PID_innocent$i"
		if alive "$pid"; then result "innocent${i}_alive" 1; else result "innocent${i}_alive" 0; fi
	done
	;;
finite)
	# tests/vm/finite_job.sh
	zram_swap "${ZRAM_MIB:?}M"
	start_guard
	settle
	start_probe
	sleep 1
	result available_before_kib "$(mem_available_kib)"
	oom0=$(oom_kills)
	start_min_available
	t0=$(now_ms)
	spawn job --adj 0 --mib "${JOB_MIB:?}" --rate 100 --compress-ratio 3
	wait_ready_or_gone job 120
	result job_grow_ms $(($(now_ms) - t0))
	if alive "$PID_job" && ! wait_gone "$PID_job" "${HOLD_S:?}"; then
		result job_alive 1
	else
		result job_alive 0
		result job_to_gone_ms $(($(now_ms) - t0))
	fi
	zram_stats
	stop_min_available
	result oom_kill_delta $(($(oom_kills) - oom0))
	;;
*) fail "unknown SCENARIO $SCENARIO" ;;
esac
stop_probe
deaths
stop_guard
result end_uptime_ms "$(now_ms)"
