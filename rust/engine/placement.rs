//! Where I/O worker threads run: an optional CPU list, applied round robin
//! with `sched_setaffinity` as each I/O worker starts (the admin worker is
//! never pinned). Empty: no pinning, the scheduler places them.

use super::EngineError;

/// Checks that every CPU of `cpus` is one this process may run on.
pub(super) fn check(cpus: &[usize]) -> Result<(), EngineError> {
    let allowed = allowed()?;
    for &c in cpus {
        if !allowed.contains(&c) {
            return Err(EngineError::Config(format!(
                "CPU {c} is not in this process's affinity mask {allowed:?}"
            )));
        }
    }
    Ok(())
}

/// The CPUs this process may run on.
fn allowed() -> Result<Vec<usize>, EngineError> {
    // SAFETY: cpu_set_t is plain data; all-zero is a valid (empty) set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a live cpu_set_t of the size passed; pid 0 is this thread.
    let rc =
        unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) };
    if rc != 0 {
        return Err(EngineError::Config(format!(
            "sched_getaffinity failed: {}",
            std::io::Error::last_os_error()
        )));
    }
    let max = usize::try_from(libc::CPU_SETSIZE).unwrap_or(1024);
    // SAFETY: CPU_ISSET reads `set` at an index below CPU_SETSIZE.
    Ok((0..max)
        .filter(|&c| unsafe { libc::CPU_ISSET(c, &set) })
        .collect())
}

/// The CPU of I/O worker `io` (0-based), if the list names any.
pub(super) fn cpu_of(cpus: &[usize], io: usize) -> Option<usize> {
    cpus.get(io.checked_rem(cpus.len())?).copied()
}

/// Pins the calling thread to `cpu`. A failure (the mask changed since
/// [`check`]) leaves the thread where the scheduler puts it.
pub(super) fn pin_current(cpu: usize) -> bool {
    if cpu >= usize::try_from(libc::CPU_SETSIZE).unwrap_or(1024) {
        return false;
    }
    // SAFETY: as in allowed(); CPU_SET writes `set` below CPU_SETSIZE.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: cpu < CPU_SETSIZE, checked above.
    unsafe { libc::CPU_SET(cpu, &mut set) };
    // SAFETY: `set` is a live cpu_set_t of the size passed; pid 0 is this thread.
    unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) == 0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_robin_and_checks() {
        assert_eq!(cpu_of(&[], 3), None);
        assert_eq!(cpu_of(&[1], 3), Some(1));
        assert_eq!(cpu_of(&[0, 1], 3), Some(1));
        assert_eq!(cpu_of(&[0, 1], 2), Some(0));
        let ok = allowed().unwrap();
        assert!(!ok.is_empty());
        assert!(check(&ok).is_ok());
        assert!(check(&[100_000]).is_err());
    }

    #[test]
    fn pins_this_thread() {
        let cpu = allowed().unwrap()[0];
        std::thread::spawn(move || {
            assert!(pin_current(cpu));
            assert_eq!(allowed().unwrap(), vec![cpu]);
        })
        .join()
        .unwrap();
    }
}
