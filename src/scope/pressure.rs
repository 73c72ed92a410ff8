//! PSI pressure files: `/proc/pressure/memory` and a cgroup's `memory.pressure`, two lines
//! `some avg10=0.12 avg60=0.05 avg300=0.01 total=391926` and the same for `full`.
//!
//! Our own parser rather than procfs-core's, which sliced each line from byte 5 unchecked
//! and panicked on a bare `some` or a character across byte 5 (found by fuzzing), and read
//! `NaN` and `inf` as averages.

/// One line: the 10 s average (percent of time stalled) and the stall so far.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Stall {
    pub avg10: f64,
    pub total_us: u64,
}

/// Both lines of a pressure file.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Pressure {
    pub some: Stall,
    pub full: Stall,
}

/// `None` unless both lines are there with an `avg10` in 0..=100 and a `total`.
pub fn parse(text: &[u8]) -> Option<Pressure> {
    let text = std::str::from_utf8(text).ok()?;
    let (mut some, mut full) = (None, None);
    for line in text.lines() {
        let (kind, fields) = line.split_once(' ')?;
        let slot = match kind {
            "some" => &mut some,
            "full" => &mut full,
            _ => return None,
        };
        let (mut avg10, mut total_us) = (None, None);
        for (key, value) in fields.split_whitespace().filter_map(|f| f.split_once('=')) {
            match key {
                "avg10" => {
                    avg10 = value
                        .parse::<f64>()
                        .ok()
                        .filter(|a| (0.0..=100.0).contains(a))
                }
                "total" => total_us = value.parse::<u64>().ok(),
                _ => {}
            }
        }
        *slot = Some(Stall {
            avg10: avg10?,
            total_us: total_us?,
        });
    }
    Some(Pressure {
        some: some?,
        full: full?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_lines_are_read() {
        let p = parse(
            b"some avg10=4.50 avg60=0.91 avg300=0.00 total=681245\nfull avg10=2.10 avg60=0.12 avg300=0.00 total=391926\n",
        )
        .unwrap();
        assert_eq!(p.some.avg10, 4.5);
        assert_eq!((p.some.total_us, p.full.total_us), (681_245, 391_926));
        assert_eq!(p.full.avg10, 2.1);
    }

    /// Found by fuzzing (fuzz/fuzz_targets/pressure.rs): procfs-core sliced each line from
    /// byte 5 unchecked and panicked on a bare `some` (or a character across byte 5).
    #[test]
    fn short_or_odd_pressure_files_are_none_not_a_panic() {
        for bad in [
            &b"some"[..],
            b"full",
            b"some\nfull",
            b"some\xc3\xa9avg10=1",
            b"",
            b"\xff",
            b"some avg10=NaN total=1\nfull avg10=0.00 total=1\n",
            b"some avg10=inf total=1\nfull avg10=0.00 total=1\n",
            b"some avg10=1.00 total=1\n",
        ] {
            assert!(parse(bad).is_none(), "{:?}", String::from_utf8_lossy(bad));
        }
    }
}
