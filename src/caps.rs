//! What the running kernel and our privileges allow, probed once at start-up. A missing
//! feature disables its path with one clear message here, never an error per cycle.

use std::os::fd::AsFd;

use rustix::process::{PidfdFlags, getpid, pidfd_open};
use serde::Serialize;

use crate::scope::swap::{self, SwapDevice};

/// Capability bits (include/uapi/linux/capability.h).
pub const CAP_KILL: u32 = 5;
pub const CAP_IPC_LOCK: u32 = 14;
pub const CAP_SYS_PTRACE: u32 = 19;
pub const CAP_SYS_NICE: u32 = 23;
pub const CAP_SYS_RESOURCE: u32 = 24;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KernelCaps {
    pub kernel_release: String,
    /// /proc/pressure/memory exists (4.20+, not booted with psi=0).
    pub psi: bool,
    /// pidfd_open (5.3+) and pidfd_send_signal (5.1+): the kill path needs both.
    pub pidfd: bool,
    /// MADV_PAGEOUT (5.4+).
    pub madv_pageout: bool,
    /// process_mrelease (5.15+).
    pub process_mrelease: bool,
    /// process_madvise (5.10+).
    pub process_madvise: bool,
    /// Effective capability set of lowmemd.
    pub cap_eff: u64,
    /// Active swap devices and files.
    pub swaps: Vec<SwapDevice>,
}

impl KernelCaps {
    /// A kernel with every feature and no capabilities, for unit tests of what reads caps.
    #[cfg(test)]
    pub(crate) fn everything() -> Self {
        KernelCaps {
            kernel_release: "test".into(),
            psi: true,
            pidfd: true,
            madv_pageout: true,
            process_mrelease: true,
            process_madvise: true,
            cap_eff: 0,
            swaps: Vec::new(),
        }
    }

    pub fn probe() -> Self {
        let kernel_release = rustix::system::uname()
            .release()
            .to_string_lossy()
            .into_owned();
        KernelCaps {
            kernel_release,
            psi: std::path::Path::new("/proc/pressure/memory").exists(),
            pidfd: pidfd_open(getpid(), PidfdFlags::empty())
                .is_ok_and(|fd| crate::sys::has_pidfd_send_signal(fd.as_fd())),
            madv_pageout: crate::sys::has_madv_pageout(),
            process_mrelease: crate::sys::has_process_mrelease(),
            process_madvise: crate::sys::has_process_madvise(),
            cap_eff: std::fs::read_to_string("/proc/self/status")
                .ok()
                .and_then(|s| parse_cap_eff(&s))
                .unwrap_or(0),
            swaps: swap::devices(),
        }
    }

    /// Features that can be switched off to try lowmemd's fallbacks (`--pretend-missing`).
    pub const FEATURES: [&'static str; 5] = [
        "psi",
        "pidfd",
        "process_mrelease",
        "process_madvise",
        "madv_pageout",
    ];

    /// Behaves as if the kernel lacked `features` (for testing the fallbacks on a kernel
    /// that has everything).
    pub fn pretend_missing(&mut self, features: &[String]) -> Result<(), String> {
        for f in features {
            match f.as_str() {
                "psi" => self.psi = false,
                "pidfd" => self.pidfd = false,
                "process_mrelease" => self.process_mrelease = false,
                "process_madvise" => self.process_madvise = false,
                "madv_pageout" => self.madv_pageout = false,
                other => {
                    return Err(format!(
                        "unknown feature {other:?}: use {}",
                        Self::FEATURES.join(", ")
                    ));
                }
            }
        }
        Ok(())
    }

    /// The fallbacks in force, in words, each said once at start-up.
    pub fn fallbacks(&self, allow_pid_kill: bool) -> Vec<String> {
        let mut out = Vec::new();
        if !self.psi {
            out.push("no PSI (kernel < 4.20 or psi=0): polling memory watermarks only; PSI conditions never fire".to_string());
        }
        if !self.pidfd {
            out.push(if allow_pid_kill {
                "no pidfds (kernel < 5.3): the policy allows kills by pid, each after a starttime re-check (a recycled pid can still be hit in the gap)".to_string()
            } else {
                "no pidfds (kernel < 5.3): lowmemd will not kill (set allow_pid_kill = true in the policy to kill by pid after a starttime re-check)".to_string()
            });
        }
        if !self.process_mrelease {
            out.push("no process_mrelease (kernel < 5.15): a victim frees its memory itself; lowmemd waits for its exit".to_string());
        }
        if let Some(why) = self.pageout_unavailable() {
            out.push(format!("page-out tier off: {why}"));
        }
        out
    }

    /// Why the page-out tier cannot work here, if it cannot.
    pub fn pageout_unavailable(&self) -> Option<String> {
        if !self.pidfd {
            Some("process_madvise needs a pidfd (Linux 5.3+)".into())
        } else if !self.madv_pageout {
            Some(format!(
                "kernel {} lacks MADV_PAGEOUT (Linux 5.4+)",
                self.kernel_release
            ))
        } else if !self.process_madvise {
            Some(format!(
                "kernel {} lacks process_madvise (Linux 5.10+)",
                self.kernel_release
            ))
        } else if !self.has_cap(CAP_SYS_NICE) {
            Some("process_madvise needs CAP_SYS_NICE".into())
        } else {
            None
        }
    }

    /// "none", or each device with its kind and use.
    pub fn swap_summary(&self) -> String {
        if self.swaps.is_empty() {
            return "none".into();
        }
        self.swaps
            .iter()
            .map(|d| {
                format!(
                    "{} ({}, {} MiB, {} MiB used)",
                    d.name,
                    if d.zram { "zram" } else { "disk" },
                    d.size_kib / 1024,
                    d.used_kib / 1024
                )
            })
            .collect::<Vec<_>>()
            .join(", ")
    }

    pub fn has_cap(&self, cap: u32) -> bool {
        self.cap_eff & (1 << cap) != 0
    }

    /// One line for the start-up log.
    pub fn summary(&self) -> String {
        let yn = |b: bool| if b { "yes" } else { "no" };
        format!(
            "kernel {}: psi={} pidfd={} process_mrelease={} process_madvise={} CAP_KILL={} CAP_SYS_NICE={} CAP_SYS_RESOURCE={}; swap: {}",
            self.kernel_release,
            yn(self.psi),
            yn(self.pidfd),
            yn(self.process_mrelease),
            yn(self.process_madvise),
            yn(self.has_cap(CAP_KILL)),
            yn(self.has_cap(CAP_SYS_NICE)),
            yn(self.has_cap(CAP_SYS_RESOURCE)),
            self.swap_summary(),
        )
    }
}

/// `CapEff:` of a `status` file, a hex mask.
pub fn parse_cap_eff(status: &str) -> Option<u64> {
    let line = status.lines().find_map(|l| l.strip_prefix("CapEff:"))?;
    u64::from_str_radix(line.trim(), 16).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cap_eff_is_a_hex_mask() {
        let s = "Name:\tx\nCapEff:\t000001ffffffffff\n";
        let c = parse_cap_eff(s).unwrap();
        let caps = KernelCaps {
            kernel_release: String::new(),
            psi: true,
            pidfd: true,
            madv_pageout: true,
            process_mrelease: true,
            process_madvise: true,
            cap_eff: c,
            swaps: Vec::new(),
        };
        assert!(caps.has_cap(CAP_KILL));
        assert_eq!(
            parse_cap_eff("CapEff:\t0000000000000020\n"),
            Some(1 << CAP_KILL)
        );
        assert_eq!(parse_cap_eff("CapEff:\tzz\n"), None);
    }

    #[test]
    fn pretending_a_feature_away_switches_its_fallback_on() {
        let mut c = KernelCaps::probe();
        c.cap_eff = u64::MAX;
        c.pretend_missing(&["pidfd".into(), "psi".into()]).unwrap();
        let f = c.fallbacks(false);
        assert!(f.iter().any(|l| l.contains("will not kill")), "{f:?}");
        assert!(f.iter().any(|l| l.contains("watermarks only")), "{f:?}");
        assert!(c.pageout_unavailable().unwrap().contains("pidfd"));
        assert!(
            c.pretend_missing(&["warp".into()])
                .unwrap_err()
                .contains("unknown feature")
        );
    }
}
