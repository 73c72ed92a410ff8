//! `[[hook]]`: programs run after an action, to tell someone (a desktop notification, a
//! chat message, a ticket). The policy only describes them; `report::hooks` runs them on a
//! thread of their own, never on the kill path.

use serde::Serialize;

/// What a hook follows. The strings are a public interface (`LOWMEMD_EVENT`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum HookOn {
    /// A kill, after its exit was confirmed or its deadline passed (not in a dry run).
    Kill,
    /// A page-out, after it was measured (not in a dry run).
    Pageout,
    /// A level started holding.
    Level,
    /// An app was frozen (and its memory paged out), after it was measured (not in a dry
    /// run).
    Freeze,
}

impl HookOn {
    pub fn as_str(self) -> &'static str {
        match self {
            HookOn::Kill => "kill",
            HookOn::Pageout => "pageout",
            HookOn::Level => "level",
            HookOn::Freeze => "freeze",
        }
    }
}

/// The account a hook runs as, resolved from /etc/passwd when the policy is loaded.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct HookUser {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct Hook {
    /// The hook's `name`, or `hook[N]` (1-based position in the file).
    pub name: String,
    /// Line in the policy file.
    pub line: usize,
    pub on: HookOn,
    /// The program (an absolute path) and its arguments; no shell.
    pub exec: Vec<String>,
    /// Killed (SIGKILL through a pidfd) when still running this long after it started.
    pub timeout_ms: u64,
    /// At most this many starts in any 60 s; more are skipped (and said once a minute).
    pub max_per_minute: u32,
    /// `None`: `nobody` when lowmemd runs as root, else lowmemd's own user.
    pub user: Option<HookUser>,
}
