//! Policy files: the shipped ones validate, the built-in default is policies/default.toml,
//! every kind of bad file gets its expected error text (golden files), and the decision and
//! ranking keep their promises for any input (property tests).
//!
//! Regenerate the golden files after an intended message change with
//! `UPDATE_GOLDEN=1 cargo test --test policies` and review the diff.

use std::path::{Path, PathBuf};

use lowmemd::monitor::trend::{TREND_WINDOW_MS, TrendMeter};
use lowmemd::pipeline::rank::{Exclusion, RankContext, rank};
use lowmemd::policy::decide::{LastActions, decide};
use lowmemd::policy::validate::{LoadError, load};
use lowmemd::policy::{Action, Policy, Reason};
use lowmemd::procs::ProcInfo;
use lowmemd::sample::{MemSnapshot, PsiFired, Sample};
use proptest::prelude::*;

fn shipped() -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir("policies")
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    v.sort();
    v
}

#[test]
fn every_shipped_policy_validates() {
    let files = shipped();
    let names: Vec<_> = files
        .iter()
        .map(|p| p.file_name().unwrap().to_str().unwrap())
        .collect();
    for want in [
        "android.toml",
        "container.toml",
        "default.toml",
        "desktop.toml",
        "embedded.toml",
    ] {
        assert!(names.contains(&want), "policies/{want} missing: {names:?}");
    }
    for f in files {
        if let Err(e) = load(&f) {
            panic!("{} is invalid:\n{e}", f.display());
        }
    }
}

#[test]
fn builtin_default_is_policies_default_toml() {
    let (from_disk, _) = load(Path::new("policies/default.toml")).unwrap();
    assert_eq!(Policy::default(), from_disk);
}

#[test]
fn bad_policies_match_their_golden_errors() {
    let dir = Path::new("tests/bad-policies");
    let update = std::env::var_os("UPDATE_GOLDEN").is_some();
    let mut checked = 0;
    let mut inputs: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    inputs.sort();
    for input in inputs {
        let got = match load(&input) {
            Ok(_) => panic!("{} was accepted", input.display()),
            Err(e) => format!("{e}\n"),
        };
        let golden = input.with_extension("expected");
        if update {
            std::fs::write(&golden, &got).unwrap();
        }
        let want = std::fs::read_to_string(&golden)
            .unwrap_or_else(|e| panic!("{}: {e} (run with UPDATE_GOLDEN=1)", golden.display()));
        assert_eq!(got, want, "{}", input.display());
        checked += 1;
    }
    assert!(checked >= 15, "only {checked} bad policies");
}

#[test]
fn directories_and_huge_files_are_refused_without_reading_them() {
    assert!(matches!(
        load(Path::new("policies")),
        Err(LoadError::Directory { .. })
    ));
    let tmp = tempfile::tempdir().unwrap();
    let big = tmp.path().join("big.toml");
    let f = std::fs::File::create(&big).unwrap();
    f.set_len(100 << 20).unwrap();
    let e = load(&big).unwrap_err();
    assert!(matches!(e, LoadError::TooLarge { .. }), "{e}");
    assert!(e.to_string().contains("big.toml"), "{e}");
}

#[test]
fn check_command_exit_codes() {
    let bin = env!("CARGO_BIN_EXE_lowmemd");
    let ok = std::process::Command::new(bin)
        .args(["check", "--explain"])
        .args(shipped())
        .output()
        .unwrap();
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let text = String::from_utf8_lossy(&ok.stdout);
    assert!(
        text.contains("low: kill adj ≥ 900 when available < 15 % of"),
        "{text}"
    );
    assert!(text.contains("session (line"), "{text}");
    let bad = std::process::Command::new(bin)
        .args([
            "check",
            "policies/default.toml",
            "tests/bad-policies/unknown-key.toml",
        ])
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2));
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(
        err.contains(
            "unknown-key.toml:6:1: level[1].min_ajd: unknown key (did you mean `min_adj`?)"
        ),
        "{err}"
    );
    // `run` refuses to start on an invalid policy.
    let run = std::process::Command::new(bin)
        .args([
            "run",
            "--dry-run",
            "--policy",
            "tests/bad-policies/adj-range.toml",
        ])
        .output()
        .unwrap();
    assert_eq!(run.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&run.stderr).contains("adj-range.toml:4:11"));
}

/// A process anyone could start: any name, run by `nobody` from a path `nobody` can write,
/// in a cgroup `nobody` owns.
fn forged(pid: i32, comm: &str, adj: i16) -> ProcInfo {
    ProcInfo {
        pid,
        comm: comm.to_string(),
        state: 'S',
        flags: 0,
        starttime: pid as u64,
        oom_score_adj: adj,
        rss_kib: 100_000,
        swap_kib: 0,
        attrs: lowmemd::procs::Attrs {
            cmdline: Some(format!("{comm} -D")),
            exe: Some(format!("/tmp/{comm}")),
            uid: Some(65534),
            real_uid: Some(65534),
            cgroups: vec!["/user.slice/user-65534.slice/session-9.scope".into()],
            unified_cgroup: Some("/user.slice/user-65534.slice/session-9.scope".into()),
            marking: None,
        },
    }
}

/// Issue 19, item 2: any process can call itself `sshd` (prctl PR_SET_NAME). Under no
/// shipped policy may a name (or a command line) make a process less killable than its
/// own adj says: not protected, not shifted down, not held back behind others.
#[test]
fn a_process_that_names_itself_like_a_protected_one_gains_nothing_under_any_shipped_policy() {
    let names = [
        "sshd",
        "Xorg",
        "Xwayland",
        "gnome-shell",
        "systemd",
        "systemd-journal",
        "systemd-logind",
        "dbus-daemon",
        "pipewire",
        "NetworkManager",
        "gdm",
        "pause",
        "init",
        "zygote64",
        "system_server",
        "surfaceflinger",
        "lmkd",
        "dropbear",
        "syslogd",
        "getty",
        "udhcpc",
    ];
    for file in shipped() {
        let (policy, _) = load(&file).unwrap();
        let procs: Vec<ProcInfo> = names
            .iter()
            .enumerate()
            .map(|(i, n)| forged(1000 + i as i32, n, 1000))
            .collect();
        let ctx = RankContext {
            rules: &policy.rules,
            ..Default::default()
        };
        for r in rank(procs, &ctx) {
            let p = &r.proc;
            assert!(
                r.excluded.is_none() && p.effective_adj == 1000 && !p.last,
                "{}: nobody's adj-1000 process named {:?} got {:?} by rule {:?} (effective adj {}, last {})",
                file.display(),
                p.comm,
                r.excluded,
                p.rule,
                p.effective_adj,
                p.last
            );
        }
    }
}

/// The protection that replaced the names still holds for what root started from a path
/// only root can write.
#[test]
fn desktop_still_protects_root_sshd_from_its_own_path() {
    let (policy, _) = load(Path::new("policies/desktop.toml")).unwrap();
    let mut sshd = forged(900, "sshd", 0);
    sshd.attrs.uid = Some(0);
    sshd.attrs.exe = Some("/usr/sbin/sshd".into());
    sshd.attrs.cgroups = vec!["/system.slice/ssh.service".into()];
    let ctx = RankContext {
        rules: &policy.rules,
        ..Default::default()
    };
    let ranked = rank(vec![sshd], &ctx);
    assert_eq!(ranked[0].excluded, Some(Exclusion::Protected), "{ranked:?}");
}

/// `lowmemd check` says where a rule lowers the kill order on a name alone, as a warning
/// (exit 0), and the shipped policies have no such rule.
#[test]
fn check_warns_where_a_name_alone_lowers_the_kill_order() {
    let bin = env!("CARGO_BIN_EXE_lowmemd");
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("names.toml");
    std::fs::write(
        &file,
        "[[level]]\nname = \"low\"\naction = \"kill\"\nmin_adj = 900\navailable_below_pct = 10\n\n\
         [[rule]]\nname = \"by-name\"\ncomm = [\"sshd\", \"Xorg\"]\nprotect = true\n\n\
         [[rule]]\nname = \"by-cmdline\"\ncmdline = \"--keep\"\navoid = 100\n\n\
         [[rule]]\nname = \"by-uid\"\ncomm = \"backup\"\nuid = 0\nprotect = true\n\n\
         [[rule]]\nname = \"tabs\"\ncomm = \"Web Content\"\nprefer = 300\n",
    )
    .unwrap();
    let out = std::process::Command::new(bin)
        .arg("check")
        .arg(&file)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "a warning is not an error: {err}");
    let warnings: Vec<&str> = err.lines().filter(|l| l.contains("warning")).collect();
    assert_eq!(warnings.len(), 2, "{err}");
    let at = format!("{}:9:1: warning: rule[1].comm:", file.display());
    assert!(warnings[0].starts_with(&at), "{err}");
    assert!(
        warnings[0].contains("any process can take this name"),
        "{err}"
    );
    let at = format!("{}:14:1: warning: rule[2].cmdline:", file.display());
    assert!(warnings[1].starts_with(&at), "{err}");
    let shipped = std::process::Command::new(bin)
        .arg("check")
        .args(shipped())
        .output()
        .unwrap();
    assert!(shipped.status.success());
    assert_eq!(
        String::from_utf8_lossy(&shipped.stderr),
        "",
        "the shipped policies draw no warning"
    );
}

// ---- property tests ----

/// A sample at 100 s; `psi_runs[i]`: the i-th trigger last fired 500 ms ago, at the end of
/// a run of firings that began this many ms before (`None`: it has not fired).
fn sample(
    policy: &Policy,
    avail_kib: u64,
    psi_runs: &[Option<u64>],
    thrash: Option<f64>,
) -> Sample {
    const LAST: u64 = 99_500;
    Sample {
        at_ms: 100_000,
        mem: MemSnapshot {
            total_kib: 1 << 20,
            available_kib: avail_kib,
            swap_total_kib: 0,
            swap_free_kib: 0,
            ..Default::default()
        },
        psi: policy
            .psi_conditions()
            .into_iter()
            .enumerate()
            .map(|(i, condition)| PsiFired {
                condition,
                window_ms: 2000,
                last_fired_ms: psi_runs.get(i).copied().flatten().map(|_| LAST),
                streak_since_ms: psi_runs.get(i).copied().flatten().map(|run| LAST - run),
                // The stall went on all the while.
                run_stall_ms: psi_runs.get(i).copied().flatten(),
            })
            .collect(),
        vmpressure_ms: None,
        thrashing_pct: thrash,
        thrashing_since_ms: 0,
        headroom_fall_kib_s: None,
        swap_absorbing_ms: None,
    }
}

/// Severity: lower level index is more severe; no decision is the least severe.
fn severity(policy: &Policy, s: &Sample) -> usize {
    decide(s, policy, LastActions::NONE).map_or(usize::MAX, |d| d.level)
}

/// The shipped policies with a runaway level (a watermark qualified by a trend): the policy,
/// that level's watermark in KiB of a 1 GiB scope and its `exhausted_within_ms`.
fn with_runaway_level() -> Vec<(PathBuf, Policy, u64, u64)> {
    shipped()
        .into_iter()
        .filter_map(|path| {
            let (policy, _) = load(&path).unwrap();
            let l = policy
                .levels
                .iter()
                .find(|l| l.conditions.exhausted_within_ms.is_some())?;
            let wm_kib = (l.conditions.available_below_pct? / 100.0 * (1u64 << 20) as f64) as u64;
            let within = l.conditions.exhausted_within_ms?;
            Some((path, policy.clone(), wm_kib, within))
        })
        .collect()
}

/// Headroom over time, sampled every 10 ms as the monitor polls near a watermark: the
/// decisions, with the headroom each was taken at.
fn run_headroom(
    policy: &Policy,
    headroom_at: impl Fn(u64) -> u64,
    until_ms: u64,
) -> Vec<(u64, u64, Option<lowmemd::policy::decide::Decision>)> {
    let mut trend = TrendMeter::default();
    (0..=until_ms)
        .step_by(10)
        .map(|t| {
            let h = headroom_at(t);
            let mut s = sample(policy, h, &[], None);
            s.at_ms = t;
            s.headroom_fall_kib_s = trend.update(t, h);
            (t, h, decide(&s, policy, LastActions::NONE))
        })
        .collect()
}

#[test]
fn every_swap_aware_shipped_policy_has_a_runaway_level() {
    let names: Vec<String> = with_runaway_level()
        .iter()
        .map(|(p, ..)| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    for want in [
        "android.toml",
        "default.toml",
        "desktop.toml",
        "embedded.toml",
    ] {
        assert!(names.iter().any(|n| n == want), "{want}: {names:?}");
    }
}

proptest! {
    /// A job that grows at any rate and then holds its size is never taken for a runaway
    /// once the trend window has passed, however little headroom it left.
    #[test]
    fn a_job_that_stopped_growing_is_never_a_runaway(
        which in 0usize..4,
        start_pct in 30u64..100,
        end_pct in 1u64..30,
        rate_mib_s in 10u64..2048,
    ) {
        let all = with_runaway_level();
        let (path, policy, ..) = &all[which % all.len()];
        let kib = |pct: u64| (pct << 20) / 100;
        let (start, end, rate) = (kib(start_pct), kib(end_pct), rate_mib_s * 1024);
        let grown_ms = (start - end) * 1000 / rate;
        let runs = run_headroom(policy, |t| start.saturating_sub(rate * t / 1000).max(end),
            grown_ms + TREND_WINDOW_MS + 5_000);
        for (t, h, d) in runs {
            if t > grown_ms + TREND_WINDOW_MS {
                prop_assert!(
                    d.as_ref().is_none_or(|d| d.reason != Reason::Exhaustion),
                    "{}: a job holding {} KiB of headroom taken for a runaway at {} ms", path.display(), h, t
                );
            }
        }
    }

    /// A steady leak at any rate meets a kill level that reaches adj 0 before the headroom
    /// falls below what the runaway level promises: its watermark or `exhausted_within_ms`
    /// of the leak, whichever is less, give or take one 10 ms poll.
    #[test]
    fn a_steady_leak_is_stopped_before_headroom_runs_out(
        which in 0usize..4,
        rate_mib_s in 5u64..4096,
    ) {
        let all = with_runaway_level();
        let (path, policy, wm_kib, within) = &all[which % all.len()];
        let total = 1u64 << 20;
        let rate = rate_mib_s * 1024;
        let runs = run_headroom(policy, |t| total.saturating_sub(rate * t / 1000),
            total * 1000 / rate + 10);
        let first = runs.into_iter().find(|(_, _, d)| d.as_ref().is_some_and(|d| {
            let level = d.level(policy);
            level.action == Action::Kill && level.min_adj <= 0
        }));
        let Some((t, h, _)) = first else {
            return Err(TestCaseError::fail(format!("{}: a {rate_mib_s} MiB/s leak never met an adj-0 kill level", path.display())));
        };
        let promised = (*wm_kib).min(rate * within / 1000);
        prop_assert!(
            h + rate / 100 + 1 >= promised,
            "{}: a {} MiB/s leak met an adj-0 kill level only at {} ms with {} KiB left (promised {} KiB)",
            path.display(), rate_mib_s, t, h, promised
        );
    }

    /// Less available memory, more PSI events, longer stalls or more thrashing never yields
    /// a milder level.
    #[test]
    fn decide_is_monotone(
        which in 0usize..5,
        avail in 0u64..(1 << 20),
        less in 0u64..(1 << 20),
        runs in proptest::collection::vec(proptest::option::of(0u64..90_000), 4),
        longer in proptest::collection::vec(proptest::option::of(0u64..90_000), 4),
        thrash in 0.0f64..300.0,
        extra in 0.0f64..300.0,
    ) {
        let policy = load(&shipped()[which]).unwrap().0;
        let base = sample(&policy, avail, &runs, Some(thrash));
        let runs2: Vec<Option<u64>> = runs
            .iter()
            .zip(&longer)
            .map(|(a, b)| match (a, b) {
                (Some(a), Some(b)) => Some((a + b).min(99_000)),
                (a, b) => a.or(*b),
            })
            .collect();
        let worse = sample(&policy, avail.saturating_sub(less), &runs2, Some(thrash + extra));
        prop_assert!(severity(&policy, &worse) <= severity(&policy, &base));
    }

    /// A PSI condition with a duration (stall above 25 % of a 2 s window, for `for_ms`):
    /// a run of firings shorter than the duration never fires; nor does one whose measured
    /// stall fell below the trigger's share between its firings (one burst reported twice);
    /// nor one that began before the last kill and lasted less than the duration after it.
    /// A run long enough, stalling all the while, with no kill, fires.
    #[test]
    fn a_stall_shorter_than_its_duration_never_fires(
        kind in prop_oneof![Just("some"), Just("full")],
        for_ms in 2_000u64..120_000,
        run in 0u64..99_000,
        stall_share in 0.0f64..1.0,
        last_kill in proptest::option::of(0u64..99_000),
    ) {
        const LAST: u64 = 99_500;
        const WINDOW: u64 = 2_000;
        let text = format!(
            "[psi]\nwindow_ms = 2000\n[[level]]\nname = \"l\"\naction = \"kill\"\nmin_adj = 0\n\
             psi_{kind}_ms = 500\npsi_{kind}_for_ms = {for_ms}\n"
        );
        let policy = lowmemd::policy::validate::compile(Path::new("p.toml"), &text).unwrap();
        let mut s = sample(&policy, 1 << 19, &[Some(run)], None);
        s.psi[0].run_stall_ms = Some((run as f64 * stall_share) as u64);
        let fires = |last_kill: Option<u64>| {
            let last = LastActions::kill(last_kill);
            decide(&s, &policy, last).is_some()
        };
        if run + WINDOW < for_ms {
            prop_assert!(!fires(None), "a run of {} ms fired for {} ms", run + WINDOW, for_ms);
        }
        if run > 0 && stall_share < 0.24 {
            prop_assert!(!fires(None), "{:.0} % stall between firings fired", stall_share * 100.0);
        }
        if let Some(kill) = last_kill
            && LAST + WINDOW < kill + WINDOW + for_ms
        {
            prop_assert!(!fires(Some(kill)), "stall from before the kill at {} counted", kill);
        }
        if run + WINDOW >= for_ms && stall_share >= 0.26 {
            prop_assert!(fires(None), "a {} ms run stalling {:.0} %", run + WINDOW, stall_share * 100.0);
        }
    }

    /// A protected process is never a candidate; prefer/avoid move a process exactly by
    /// their amount; the candidates are ordered by effective adj.
    #[test]
    fn ranking_respects_rules(
        adjs in proptest::collection::vec(-999i16..=1000, 1..40),
        shift in 1i16..500,
    ) {
        let text = format!(
            "[[level]]\nname = \"l\"\naction = \"kill\"\nmin_adj = -999\navailable_below_pct = 5\n\
             [[rule]]\ncomm = \"keep\"\nprotect = true\n\
             [[rule]]\ncomm = \"pref\"\nprefer = {shift}\n\
             [[rule]]\ncomm = \"avoid\"\navoid = {shift}\n"
        );
        let policy = lowmemd::policy::validate::compile(Path::new("p.toml"), &text).unwrap();
        let names = ["keep", "pref", "avoid", "plain"];
        let procs: Vec<ProcInfo> = adjs.iter().enumerate().map(|(i, adj)| ProcInfo {
            pid: 100 + i as i32,
            comm: names[i % 4].to_string(),
            state: 'S',
            flags: 0,
            starttime: i as u64,
            oom_score_adj: *adj,
            rss_kib: 1000 + i as u64,
            swap_kib: 0,
            attrs: Default::default(),
        }).collect();
        let ctx = RankContext { rules: &policy.rules, ..Default::default() };
        let ranked = rank(procs, &ctx);
        let mut last = i16::MAX;
        for r in &ranked {
            let raw = r.proc.oom_score_adj;
            match r.proc.comm.as_str() {
                "keep" => prop_assert_eq!(r.excluded, Some(Exclusion::Protected)),
                "pref" => prop_assert_eq!(r.proc.effective_adj, (raw + shift).min(1000)),
                "avoid" => prop_assert_eq!(r.proc.effective_adj, (raw - shift).max(-999)),
                _ => prop_assert_eq!(r.proc.effective_adj, raw),
            }
            if r.excluded.is_none() {
                prop_assert!(r.proc.effective_adj <= last);
                last = r.proc.effective_adj;
            }
        }
    }
}
