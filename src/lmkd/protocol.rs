//! lmkd's control protocol, as AOSP clients (`lmkd.h`, `liblmkd_utils`) speak it: one
//! SOCK_SEQPACKET packet per message, a sequence of 32-bit big-endian integers, the first
//! the command. Pure parsing and encoding over bytes, so every hostile packet is a unit
//! test.

/// The longest packet a client sends: LMK_PROCS_PRIO with 3 records (1 + 12 ints).
pub const MAX_INTS: usize = 13;
pub const MAX_PACKET: usize = MAX_INTS * 4;
/// At most this many (minfree, adj) pairs in LMK_TARGET.
pub const MAX_TARGETS: usize = 6;
/// At most this many records in LMK_PROCS_PRIO.
pub const MAX_PROCS_PRIO: usize = 3;

pub const LMK_TARGET: i32 = 0;
pub const LMK_PROCPRIO: i32 = 1;
pub const LMK_PROCREMOVE: i32 = 2;
pub const LMK_PROCPURGE: i32 = 3;
pub const LMK_GETKILLCNT: i32 = 4;
pub const LMK_SUBSCRIBE: i32 = 5;
pub const LMK_PROCKILL: i32 = 6;
pub const LMK_UPDATE_PROPS: i32 = 7;
pub const LMK_STAT_KILL_OCCURRED: i32 = 8;
pub const LMK_START_MONITORING: i32 = 9;
pub const LMK_BOOT_COMPLETED: i32 = 10;
pub const LMK_PROCS_PRIO: i32 = 11;

/// lmkd's `kill_reasons::LOW_MEM`: what a memory-shortage kill reports to statsd.
pub const KILL_REASON_LOW_MEM: i32 = 8;
/// lmkd's `MAX_TASKNAME_LEN`: process names are cut to one less, plus a NUL.
const MAX_TASKNAME_LEN: usize = 128;

/// The event kinds of LMK_SUBSCRIBE.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// LMK_PROCKILL after each kill.
    Kill,
    /// LMK_STAT_KILL_OCCURRED after each kill.
    Stat,
}

/// Process type of LMK_PROCPRIO (an optional 4th field; absent means app).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProcType {
    App,
    Service,
}

/// One LMK_PROCPRIO record, as sent (validated against the process later).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Prio {
    pub pid: i32,
    pub uid: u32,
    pub adj: i32,
    pub ptype: ProcType,
}

/// One (minfree, adj) pair of LMK_TARGET.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Target {
    pub minfree_pages: u32,
    pub adj: i16,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Target(Vec<Target>),
    ProcPrio(Prio),
    ProcsPrio(Vec<Prio>),
    ProcRemove { pid: i32 },
    ProcPurge,
    GetKillCnt { min_adj: i32, max_adj: i32 },
    Subscribe(Event),
    UpdateProps,
    StartMonitoring,
    BootCompleted,
}

impl Command {
    /// The `cmd` label of `lowmemd_lmkd_commands_total`.
    pub fn label(&self) -> &'static str {
        match self {
            Command::Target(_) => "target",
            Command::ProcPrio(_) => "procprio",
            Command::ProcsPrio(_) => "procs_prio",
            Command::ProcRemove { .. } => "procremove",
            Command::ProcPurge => "procpurge",
            Command::GetKillCnt { .. } => "getkillcnt",
            Command::Subscribe(_) => "subscribe",
            Command::UpdateProps => "update_props",
            Command::StartMonitoring => "start_monitoring",
            Command::BootCompleted => "boot_completed",
        }
    }

    pub const LABELS: [&'static str; 10] = [
        "target",
        "procprio",
        "procs_prio",
        "procremove",
        "procpurge",
        "getkillcnt",
        "subscribe",
        "update_props",
        "start_monitoring",
        "boot_completed",
    ];
}

/// A packet that is not a valid command. The `why()` strings are the `why` label of
/// `lowmemd_lmkd_rejected_total`, a public interface.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    #[error("packet of {0} bytes: shorter than one command")]
    Short(usize),
    #[error("packet of {0} bytes: longer than lmkd's {MAX_PACKET}")]
    TooLong(usize),
    #[error("packet of {0} bytes: not a whole number of 32-bit integers")]
    Ragged(usize),
    #[error("unknown command {0}")]
    UnknownCommand(i32),
    #[error("command {cmd} with {got} fields after it: {want}")]
    FieldCount {
        cmd: i32,
        got: usize,
        want: &'static str,
    },
    #[error("command {cmd}: oom_score_adj {adj} is outside -1000..=1000")]
    AdjRange { cmd: i32, adj: i32 },
    #[error("LMK_SUBSCRIBE to unknown event type {0}")]
    UnknownEvent(i32),
    #[error("LMK_PROCPRIO: unknown process type {0}")]
    UnknownProcType(i32),
    #[error("LMK_TARGET: minfree {0} pages is negative")]
    NegativeMinfree(i32),
    #[error("command {cmd}: pid {pid} is not a process id")]
    BadPid { cmd: i32, pid: i32 },
}

impl ProtocolError {
    pub fn why(&self) -> &'static str {
        match self {
            ProtocolError::Short(_) => "short_packet",
            ProtocolError::TooLong(_) => "long_packet",
            ProtocolError::Ragged(_) => "ragged_packet",
            ProtocolError::UnknownCommand(_) => "unknown_command",
            ProtocolError::FieldCount { .. } => "field_count",
            ProtocolError::AdjRange { .. } => "adj_range",
            ProtocolError::UnknownEvent(_)
            | ProtocolError::UnknownProcType(_)
            | ProtocolError::NegativeMinfree(_)
            | ProtocolError::BadPid { .. } => "bad_field",
        }
    }

    pub const WHYS: [&'static str; 7] = [
        "short_packet",
        "long_packet",
        "ragged_packet",
        "unknown_command",
        "field_count",
        "adj_range",
        "bad_field",
    ];
}

/// The packet's integers. `len` is the packet's real length (recv with MSG_TRUNC), which
/// may exceed the bytes read.
pub fn words(bytes: &[u8], len: usize) -> Result<Vec<i32>, ProtocolError> {
    if len > MAX_PACKET {
        return Err(ProtocolError::TooLong(len));
    }
    if len < 4 {
        return Err(ProtocolError::Short(len));
    }
    if len % 4 != 0 {
        return Err(ProtocolError::Ragged(len));
    }
    Ok(bytes[..len]
        .chunks_exact(4)
        .map(|w| i32::from_be_bytes([w[0], w[1], w[2], w[3]]))
        .collect())
}

fn adj(cmd: i32, v: i32) -> Result<i16, ProtocolError> {
    if (-1000..=1000).contains(&v) {
        Ok(v as i16)
    } else {
        Err(ProtocolError::AdjRange { cmd, adj: v })
    }
}

fn prio(cmd: i32, f: &[i32]) -> Result<Prio, ProtocolError> {
    let ptype = match f.get(3) {
        None | Some(0) => ProcType::App,
        Some(1) => ProcType::Service,
        Some(&t) => return Err(ProtocolError::UnknownProcType(t)),
    };
    if f[0] <= 0 {
        return Err(ProtocolError::BadPid { cmd, pid: f[0] });
    }
    adj(cmd, f[2])?;
    Ok(Prio {
        pid: f[0],
        // A uid travels as the bits of an int (AID values fit; -1 would be nobody's).
        uid: f[1] as u32,
        adj: f[2],
        ptype,
    })
}

/// Parses one packet of `len` bytes (`bytes` holds at least `min(len, MAX_PACKET)` of them).
pub fn parse(bytes: &[u8], len: usize) -> Result<Command, ProtocolError> {
    let w = words(bytes, len)?;
    let (cmd, f) = (w[0], &w[1..]);
    let count = |ok: bool, want: &'static str| {
        if ok {
            Ok(())
        } else {
            Err(ProtocolError::FieldCount {
                cmd,
                got: f.len(),
                want,
            })
        }
    };
    match cmd {
        LMK_TARGET => {
            count(
                !f.is_empty() && f.len() % 2 == 0 && f.len() <= 2 * MAX_TARGETS,
                "1 to 6 (minfree, adj) pairs",
            )?;
            let mut t = Vec::with_capacity(f.len() / 2);
            for p in f.chunks_exact(2) {
                if p[0] < 0 {
                    return Err(ProtocolError::NegativeMinfree(p[0]));
                }
                t.push(Target {
                    minfree_pages: p[0] as u32,
                    adj: adj(cmd, p[1])?,
                });
            }
            Ok(Command::Target(t))
        }
        LMK_PROCPRIO => {
            count(f.len() == 3 || f.len() == 4, "pid, uid, adj [, ptype]")?;
            Ok(Command::ProcPrio(prio(cmd, f)?))
        }
        LMK_PROCS_PRIO => {
            count(
                !f.is_empty() && f.len() % 4 == 0 && f.len() <= 4 * MAX_PROCS_PRIO,
                "1 to 3 (pid, uid, adj, ptype) records",
            )?;
            let recs = f.chunks_exact(4).map(|r| prio(cmd, r));
            Ok(Command::ProcsPrio(recs.collect::<Result<_, _>>()?))
        }
        LMK_PROCREMOVE => {
            count(f.len() == 1, "pid")?;
            if f[0] <= 0 {
                return Err(ProtocolError::BadPid { cmd, pid: f[0] });
            }
            Ok(Command::ProcRemove { pid: f[0] })
        }
        LMK_PROCPURGE => count(f.is_empty(), "none").map(|()| Command::ProcPurge),
        LMK_GETKILLCNT => {
            count(f.len() == 2, "min_adj, max_adj")?;
            Ok(Command::GetKillCnt {
                min_adj: f[0],
                max_adj: f[1],
            })
        }
        LMK_SUBSCRIBE => {
            count(f.len() == 1, "event type")?;
            match f[0] {
                0 => Ok(Command::Subscribe(Event::Kill)),
                1 => Ok(Command::Subscribe(Event::Stat)),
                e => Err(ProtocolError::UnknownEvent(e)),
            }
        }
        LMK_UPDATE_PROPS => count(f.is_empty(), "none").map(|()| Command::UpdateProps),
        LMK_START_MONITORING => count(f.is_empty(), "none").map(|()| Command::StartMonitoring),
        LMK_BOOT_COMPLETED => count(f.is_empty(), "none").map(|()| Command::BootCompleted),
        other => Err(ProtocolError::UnknownCommand(other)),
    }
}

pub fn encode(words: &[i32]) -> Vec<u8> {
    words.iter().flat_map(|w| w.to_be_bytes()).collect()
}

/// LMK_PROCKILL: `[6, pid, uid]`.
pub fn prockill(pid: i32, uid: u32) -> Vec<u8> {
    encode(&[LMK_PROCKILL, pid, uid as i32])
}

/// What LMK_STAT_KILL_OCCURRED reports of one kill.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KillStat<'a> {
    pub pgfault: i64,
    pub pgmajfault: i64,
    pub rss_bytes: i64,
    pub cache_bytes: i64,
    pub swap_bytes: i64,
    pub start_time_ns: i64,
    /// -1 when the victim was not registered (its uid is not known).
    pub uid: i32,
    pub oom_score: i32,
    pub min_oom_score: i32,
    pub free_mem_kib: i64,
    pub free_swap_kib: i64,
    pub kill_reason: i32,
    pub thrashing: i32,
    pub max_thrashing: i32,
    pub taskname: &'a str,
}

/// LMK_STAT_KILL_OCCURRED in the layout of lmkd's statsd packet: the command, six 64-bit
/// memory figures (-1 for one not measured), eight 32-bit fields, then the name as a 16-bit
/// length, its bytes and a NUL (Java's `DataInput.readUTF` framing).
pub fn kill_stat(s: &KillStat<'_>) -> Vec<u8> {
    let mut p = Vec::with_capacity(4 + 6 * 8 + 8 * 4 + 2 + MAX_TASKNAME_LEN);
    p.extend(LMK_STAT_KILL_OCCURRED.to_be_bytes());
    for v in [
        s.pgfault,
        s.pgmajfault,
        s.rss_bytes,
        s.cache_bytes,
        s.swap_bytes,
        s.start_time_ns,
    ] {
        p.extend(v.to_be_bytes());
    }
    for v in [
        s.uid,
        s.oom_score,
        s.min_oom_score,
        s.free_mem_kib.clamp(0, i32::MAX as i64) as i32,
        s.free_swap_kib.clamp(0, i32::MAX as i64) as i32,
        s.kill_reason,
        s.thrashing,
        s.max_thrashing,
    ] {
        p.extend(v.to_be_bytes());
    }
    let mut name = s.taskname.as_bytes();
    name = &name[..name.len().min(MAX_TASKNAME_LEN - 1)];
    p.extend((name.len() as u16).to_be_bytes());
    p.extend(name);
    p.push(0);
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes(w: &[i32]) -> Vec<u8> {
        encode(w)
    }

    fn p(w: &[i32]) -> Result<Command, ProtocolError> {
        let b = bytes(w);
        parse(&b, b.len())
    }

    #[test]
    fn big_endian_on_the_wire() {
        assert_eq!(
            bytes(&[LMK_PROCPRIO, 0x0102_0304]),
            [0, 0, 0, 1, 1, 2, 3, 4]
        );
        assert_eq!(
            parse(&[0, 0, 0, 2, 0, 0, 0x30, 0x39], 8),
            Ok(Command::ProcRemove { pid: 12345 })
        );
    }

    #[test]
    fn every_command() {
        assert_eq!(
            p(&[0, 18432, 900, 23040, 950]),
            Ok(Command::Target(vec![
                Target {
                    minfree_pages: 18432,
                    adj: 900
                },
                Target {
                    minfree_pages: 23040,
                    adj: 950
                }
            ]))
        );
        let prio = Prio {
            pid: 77,
            uid: 10_001,
            adj: 900,
            ptype: ProcType::App,
        };
        assert_eq!(p(&[1, 77, 10_001, 900]), Ok(Command::ProcPrio(prio)));
        assert_eq!(
            p(&[1, 77, 10_001, 900, 1]),
            Ok(Command::ProcPrio(Prio {
                ptype: ProcType::Service,
                ..prio
            }))
        );
        assert_eq!(
            p(&[11, 77, 10_001, 900, 0, 78, 10_002, 0, 0]),
            Ok(Command::ProcsPrio(vec![
                prio,
                Prio {
                    pid: 78,
                    uid: 10_002,
                    adj: 0,
                    ptype: ProcType::App
                }
            ]))
        );
        assert_eq!(p(&[2, 77]), Ok(Command::ProcRemove { pid: 77 }));
        assert_eq!(p(&[3]), Ok(Command::ProcPurge));
        assert_eq!(
            p(&[4, 0, 1000]),
            Ok(Command::GetKillCnt {
                min_adj: 0,
                max_adj: 1000
            })
        );
        assert_eq!(p(&[5, 0]), Ok(Command::Subscribe(Event::Kill)));
        assert_eq!(p(&[5, 1]), Ok(Command::Subscribe(Event::Stat)));
        assert_eq!(p(&[7]), Ok(Command::UpdateProps));
        assert_eq!(p(&[9]), Ok(Command::StartMonitoring));
        assert_eq!(p(&[10]), Ok(Command::BootCompleted));
    }

    #[test]
    fn the_longest_packet_is_13_ints_and_one_more_is_refused() {
        let mut w = vec![11];
        for i in 0..3 {
            w.extend([100 + i, 0, 0, 0]);
        }
        assert!(p(&w).is_ok());
        let long = bytes(&[11; 14]);
        assert_eq!(parse(&long, long.len()), Err(ProtocolError::TooLong(56)));
        // A packet longer than the buffer: recv(MSG_TRUNC) tells the real length.
        assert_eq!(parse(&long[..52], 4096), Err(ProtocolError::TooLong(4096)));
    }

    #[test]
    fn hostile_packets() {
        assert_eq!(parse(&[], 0), Err(ProtocolError::Short(0)));
        assert_eq!(parse(&[0, 0, 1], 3), Err(ProtocolError::Short(3)));
        assert_eq!(parse(&[0, 0, 0, 3, 9], 5), Err(ProtocolError::Ragged(5)));
        assert_eq!(p(&[12]), Err(ProtocolError::UnknownCommand(12)));
        assert_eq!(p(&[-1]), Err(ProtocolError::UnknownCommand(-1)));
        assert_eq!(p(&[6, 1, 2]), Err(ProtocolError::UnknownCommand(6)));
        assert_eq!(p(&[8]), Err(ProtocolError::UnknownCommand(8)));
        for bad in [
            &[0][..],
            &[0, 100],
            &[0, 1, 2, 3],
            &[1, 77, 0],
            &[1, 77, 0, 0, 0, 0],
            &[11, 77, 0, 0],
            &[11],
            &[2],
            &[2, 1, 2],
            &[3, 0],
            &[4, 0],
            &[5],
            &[7, 1],
            &[9, 9],
            &[10, 0],
        ] {
            assert!(
                matches!(p(bad), Err(ProtocolError::FieldCount { .. })),
                "{bad:?}: {:?}",
                p(bad)
            );
        }
        assert_eq!(
            p(&[1, 77, 0, 1001]),
            Err(ProtocolError::AdjRange { cmd: 1, adj: 1001 })
        );
        assert_eq!(
            p(&[1, 77, 0, i32::MIN]),
            Err(ProtocolError::AdjRange {
                cmd: 1,
                adj: i32::MIN
            })
        );
        assert_eq!(
            p(&[0, 100, -1001]),
            Err(ProtocolError::AdjRange { cmd: 0, adj: -1001 })
        );
        assert_eq!(p(&[0, -5, 900]), Err(ProtocolError::NegativeMinfree(-5)));
        assert_eq!(p(&[1, 77, 0, 0, 2]), Err(ProtocolError::UnknownProcType(2)));
        assert_eq!(
            p(&[1, 0, 0, 0]),
            Err(ProtocolError::BadPid { cmd: 1, pid: 0 })
        );
        assert_eq!(p(&[2, -3]), Err(ProtocolError::BadPid { cmd: 2, pid: -3 }));
        assert_eq!(p(&[5, 2]), Err(ProtocolError::UnknownEvent(2)));
        // One bad record spoils the batch: nothing of it is applied.
        assert!(p(&[11, 77, 0, 0, 0, 78, 0, 5000, 0]).is_err());
    }

    #[test]
    fn replies_and_notifications() {
        assert_eq!(prockill(1234, 10_057), bytes(&[6, 1234, 10_057]));
        let s = KillStat {
            pgfault: -1,
            pgmajfault: -1,
            rss_bytes: 1 << 20,
            cache_bytes: -1,
            swap_bytes: 0,
            start_time_ns: -1,
            uid: 10_057,
            oom_score: 900,
            min_oom_score: 800,
            free_mem_kib: 1024,
            free_swap_kib: 0,
            kill_reason: KILL_REASON_LOW_MEM,
            thrashing: 0,
            max_thrashing: 0,
            taskname: "app",
        };
        let b = kill_stat(&s);
        assert_eq!(b.len(), 4 + 48 + 32 + 2 + 3 + 1);
        assert_eq!(&b[..4], &[0, 0, 0, 8]);
        assert_eq!(&b[20..28], &(1i64 << 20).to_be_bytes());
        assert_eq!(&b[52..56], &10_057i32.to_be_bytes());
        assert_eq!(&b[84..], &[0, 3, b'a', b'p', b'p', 0]);
        let long = "x".repeat(300);
        let b = kill_stat(&KillStat {
            taskname: &long,
            ..s
        });
        assert_eq!(b.len(), 4 + 48 + 32 + 2 + 127 + 1);
    }
}
