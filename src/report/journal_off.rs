//! A build without the `journald` feature (boards: BusyBox, OpenRC, Android init): records
//! go to stderr as `lowmemd[level]: message`, which journald also takes, without the
//! LOWMEMD_* fields.

use log::Level;

pub enum Journal {}

pub fn connected() -> Option<Journal> {
    None
}

impl Journal {
    pub fn write(&self, _level: Level, _message: &str, _fields: &[(String, String)]) {
        match *self {}
    }
}
