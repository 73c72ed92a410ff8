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

/// `process_madvise(2)` (Linux 5.10) with `MADV_PAGEOUT` (5.4) on address ranges of the
/// process behind `pidfd`. Returns the bytes the kernel processed: a short count is a
/// partial success (it stopped at a range it could not handle), not an error.
///
/// The ranges are addresses in the *target's* address space; they are passed to the kernel
/// as numbers and never dereferenced here. A range our iovecs cannot carry (above 4 GiB in
/// a 64-bit target when we are 32-bit) is `InvalidInput`, never truncated to another one.
pub fn process_madvise_pageout(pidfd: BorrowedFd<'_>, ranges: &[(u64, u64)]) -> io::Result<usize> {
    let iovec = |start: u64, len: u64| {
        let base = usize::try_from(start).ok()?;
        let len = usize::try_from(len).ok()?;
        // The last byte must be addressable too (the end may be one past usize::MAX).
        base.checked_add(len.saturating_sub(1))?;
        Some(libc::iovec {
            // An address in the target, never dereferenced here: no provenance.
            iov_base: std::ptr::without_provenance_mut(base),
            iov_len: len,
        })
    };
    let iov = ranges
        .iter()
        .map(|&(start, len)| {
            iovec(start, len).ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!(
                        "range {start:#x}+{len:#x} is beyond a {}-bit address space",
                        usize::BITS
                    ),
                )
            })
        })
        .collect::<io::Result<Vec<libc::iovec>>>()?;
    // SAFETY: `iov` is a live, properly aligned array of `iov.len()` iovecs for the duration
    // of the call; the kernel only reads it. The addresses inside are interpreted in the
    // target process (via the pidfd), not ours, so their values cannot corrupt our memory.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_process_madvise,
            pidfd.as_raw_fd(),
            iov.as_ptr(),
            iov.len(),
            libc::MADV_PAGEOUT,
            0u32,
        )
    };
    // A negative count is the error, in errno.
    usize::try_from(rc).map_err(|_| io::Error::last_os_error())
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

/// `pidfd_send_signal(2)` (5.1) exists: signal 0 to our own pidfd checks without sending.
pub fn has_pidfd_send_signal(own_pidfd: BorrowedFd<'_>) -> bool {
    // SAFETY: signal 0 with a null siginfo and no flags only checks permission; the fd is a
    // live pidfd of our own process.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            own_pidfd.as_raw_fd(),
            0i32,
            std::ptr::null::<libc::siginfo_t>(),
            0u32,
        )
    };
    rc == 0
}

/// `MADV_PAGEOUT` (5.4) is known to the kernel: advise one page of a fresh private mapping
/// of our own. EINVAL means the advice is unknown.
pub fn has_madv_pageout() -> bool {
    let len = rustix::param::page_size();
    // SAFETY: a fresh anonymous private mapping of one page at a kernel-chosen address; we
    // only advise and unmap it, never read or write through the pointer.
    unsafe {
        let p = libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        );
        if p == libc::MAP_FAILED {
            return false;
        }
        let ok = libc::madvise(p, len, libc::MADV_PAGEOUT) == 0;
        libc::munmap(p, len);
        ok
    }
}

/// SIGKILL by raw pid: **only** for kernels without pidfds (< 5.3), only when the policy
/// says `allow_pid_kill = true`, and only right after the caller re-checked the victim's
/// starttime. Everywhere else lowmemd signals through a pidfd, which cannot hit a recycled
/// pid; this can, in the window between that check and this call.
pub fn kill_by_pid_unpinned(pid: i32) -> io::Result<()> {
    if pid <= 1 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "refusing pid <= 1",
        ));
    }
    // SAFETY: kill(2) takes two integers and touches no memory of ours.
    let rc = unsafe { libc::kill(pid, libc::SIGKILL) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Takes ownership of a descriptor a service manager handed this process (Android init's
/// `ANDROID_SOCKET_*`, systemd's `LISTEN_FDS`), after checking that it is open. Call once
/// per number, at start-up, before anything else could have opened or closed it.
pub fn adopt_inherited_fd(fd: i32) -> io::Result<std::os::fd::OwnedFd> {
    use std::os::fd::FromRawFd;
    // Our own stdio are never a service manager's socket.
    if fd <= 2 {
        return Err(io::Error::from_raw_os_error(libc::EBADF));
    }
    // SAFETY: fcntl(F_GETFD) only reads the descriptor table entry of an integer; it is
    // sound for any value, open or not.
    if unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the descriptor is open (F_GETFD succeeded) and was passed to this process by
    // its service manager for this purpose; nothing else in lowmemd owns it or closes it,
    // so the OwnedFd is its only owner.
    Ok(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) })
}

/// The descriptors above stdio that a service manager meant for us: systemd's
/// `LISTEN_FDS` (from 3 on, when `LISTEN_PID` is ours) and Android init's
/// `ANDROID_SOCKET_lmkd`. Everything else open above 2 at start-up was left open by
/// mistake by whatever started lowmemd.
pub fn fds_meant_for_us(
    listen_pid: Option<&str>,
    listen_fds: Option<&str>,
    android_lmkd: Option<&str>,
    me: u32,
) -> Vec<i32> {
    let mut keep = Vec::new();
    if listen_pid.and_then(|p| p.trim().parse::<u32>().ok()) == Some(me) {
        let n = listen_fds.and_then(|n| n.trim().parse::<i32>().ok());
        // systemd's SD_LISTEN_FDS_START; a count beyond any fd limit is not believed.
        keep.extend((3..).take(n.unwrap_or(0).clamp(0, 1 << 16) as usize));
    }
    keep.extend(android_lmkd.and_then(|n| n.trim().parse::<i32>().ok()));
    keep.sort_unstable();
    keep.dedup();
    keep
}

/// Closes every descriptor above 2 but `keep`: what an init script, a shell or a
/// supervisor left open would otherwise stay open in lowmemd for its lifetime and reach
/// every hook it runs. Returns how many were closed. Call it first thing in `main`,
/// before any thread, logger or file exists.
pub fn close_inherited_fds(keep: &[i32]) -> io::Result<usize> {
    let open: Vec<i32> = std::fs::read_dir("/proc/self/fd")?
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .collect();
    // The directory's own descriptor was among them and is closed now: closing that
    // number again below is EBADF, which is ignored.
    let mut closed = 0;
    for fd in open.into_iter().filter(|fd| *fd > 2 && !keep.contains(fd)) {
        // SAFETY: at start-up nothing in this process owns a descriptor above 2: std opens
        // none before `main`, and the caller runs before any file, socket or thread of
        // ours exists, so no OwnedFd or File can be left holding a closed number. close(2)
        // takes an integer and touches no memory of ours.
        if unsafe { libc::close(fd) } == 0 {
            closed += 1;
        }
    }
    Ok(closed)
}

/// Makes `cmd`'s child drop the ambient capabilities it would inherit: under the shipped
/// systemd unit lowmemd runs as a dynamic user with CAP_KILL, CAP_SYS_PTRACE and others in
/// its ambient set, which a non-root program keeps across execve. A hook must not get them.
/// Kernels before 4.3 have no ambient set (EINVAL): nothing to drop there.
pub fn drop_ambient_caps_on_exec(cmd: &mut std::process::Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: the closure runs in the forked child before execve, where only
    // async-signal-safe calls are allowed: it makes one prctl(2) call with integer
    // arguments, allocates nothing and touches no lock.
    unsafe {
        cmd.pre_exec(|| {
            let rc = libc::prctl(
                libc::PR_CAP_AMBIENT,
                libc::PR_CAP_AMBIENT_CLEAR_ALL,
                0,
                0,
                0,
            );
            if rc != 0 && io::Error::last_os_error().raw_os_error() != Some(libc::EINVAL) {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// Puts the calling thread (alone) in SCHED_FIFO at `priority`, or with `None` back in
/// SCHED_OTHER. The raw syscall: rustix has none, and musl's sched_setscheduler() only
/// says ENOSYS (POSIX means the process, Linux the thread).
pub fn set_thread_fifo(priority: Option<i32>) -> io::Result<()> {
    let (policy, prio) = match priority {
        Some(p) => (libc::SCHED_FIFO, p),
        None => (libc::SCHED_OTHER, 0),
    };
    // The kernel's struct sched_param: the priority alone (C libraries add fields).
    let param: libc::c_int = prio;
    // SAFETY: pid 0 is the calling thread; `param` is a valid int that outlives the call,
    // which only reads it.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_sched_setscheduler,
            0 as libc::pid_t,
            policy,
            &param as *const libc::c_int,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Whether the calling thread is in SCHED_FIFO.
pub fn thread_is_fifo() -> bool {
    // SAFETY: sched_getscheduler(0) only reads the calling thread's policy.
    let policy = unsafe { libc::syscall(libc::SYS_sched_getscheduler, 0 as libc::pid_t) };
    policy == libc::SCHED_FIFO as libc::c_long
}

/// Caps glibc's malloc at one arena. By default every thread that allocates gets an arena
/// of its own (a 64 MiB reservation whose touched pages mlockall then pins); lowmemd's
/// threads allocate little and rarely at the same time, so they share the main one. Call
/// it before the first thread starts. A no-op on other C libraries (musl has no arenas).
pub fn single_malloc_arena() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt(3) only sets a tuning parameter of the allocator; it takes integers
    // and touches no memory of ours. A refused value (0 returned) leaves the default.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
    }
}

#[cfg(test)]
mod tests {
    use super::fds_meant_for_us;

    #[test]
    fn only_descriptors_passed_to_this_very_process_are_kept() {
        assert_eq!(fds_meant_for_us(Some("42"), Some("2"), None, 42), [3, 4]);
        assert!(fds_meant_for_us(Some("41"), Some("2"), None, 42).is_empty());
        assert!(fds_meant_for_us(None, Some("2"), None, 42).is_empty());
        assert!(fds_meant_for_us(Some("42"), Some("-1"), None, 42).is_empty());
        assert_eq!(fds_meant_for_us(None, None, Some("9"), 42), [9]);
        assert_eq!(fds_meant_for_us(Some("42"), Some("1"), Some("3"), 42), [3]);
    }
}
