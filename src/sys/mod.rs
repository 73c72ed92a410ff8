//! Raw system calls that rustix does not wrap. Every `unsafe` block of the crate lives here;
//! callers get safe functions over `BorrowedFd`, never a raw fd.
#![allow(unsafe_code)]

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};

/// `process_mrelease(2)` (Linux 5.15): reap the address space of a process that is already
/// dying, in the caller's context, instead of waiting for the victim to be scheduled.
///
/// `ESRCH` means the mm is already gone, which is what we wanted: it is reported as `Ok`.
pub fn process_mrelease(pidfd: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: the syscall takes an fd and a flags word (must be 0); it reads no user memory.
    // `pidfd` is a live borrowed descriptor for the duration of the call.
    let rc = unsafe { libc::syscall(libc::SYS_process_mrelease, pidfd.as_raw_fd(), 0u32) };
    if rc == 0 {
        return Ok(());
    }
    let err = io::Error::last_os_error();
    if err.raw_os_error() == Some(libc::ESRCH) {
        Ok(())
    } else {
        Err(err)
    }
}

/// Whether the kernel implements syscall `nr`, asked without side effects: the call is made
/// with an invalid fd (-1), so a kernel that has it answers `EBADF` and one that lacks it
/// answers `ENOSYS`. Only for syscalls whose first argument is an fd and that validate it
/// before doing anything.
fn syscall_exists_fd_first(nr: libc::c_long) -> bool {
    // SAFETY: every syscall probed here takes an fd first and fails with EBADF on -1 before
    // touching any pointer argument; the remaining arguments are zero (null pointers, zero
    // lengths), which the kernel never dereferences once the fd lookup failed.
    let rc = unsafe { libc::syscall(nr, -1i32, 0usize, 0usize, 0usize, 0usize) };
    rc == 0 || io::Error::last_os_error().raw_os_error() != Some(libc::ENOSYS)
}

/// `process_mrelease(2)` is implemented by the running kernel (5.15+).
pub fn has_process_mrelease() -> bool {
    syscall_exists_fd_first(libc::SYS_process_mrelease)
}

/// `process_madvise(2)` is implemented by the running kernel (5.10+).
pub fn has_process_madvise() -> bool {
    syscall_exists_fd_first(libc::SYS_process_madvise)
}
