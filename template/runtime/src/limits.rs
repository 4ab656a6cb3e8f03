//! The process's open-file limit, raised at start from its soft value to its hard one: each
//! connection is a file descriptor, and a soft limit of 1024 (a common default) would turn
//! a burst of clients into refused connections long before the memory limit is near.

/// What [`raise_open_files`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Raised {
    /// From the soft limit to the hard one.
    To {
        from: libc::rlim_t,
        to: libc::rlim_t,
    },
    /// The soft limit is the hard one already.
    AlreadyHighest(libc::rlim_t),
}

/// Raises the soft `RLIMIT_NOFILE` to the hard one.
pub(crate) fn raise_open_files() -> std::io::Result<Raised> {
    let mut limit = open_files_limit()?;
    let from = limit.rlim_cur;
    if from >= limit.rlim_max {
        return Ok(Raised::AlreadyHighest(from));
    }
    limit.rlim_cur = limit.rlim_max;
    // SAFETY: setrlimit(2) reads the struct it is given, which lives on this stack.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(Raised::To {
        from,
        to: limit.rlim_max,
    })
}

/// The soft `RLIMIT_NOFILE`, as raised (or not) at start; `None` when unknown or unlimited.
pub(crate) fn open_files() -> Option<libc::rlim_t> {
    let soft = open_files_limit().ok()?.rlim_cur;
    (soft != libc::RLIM_INFINITY).then_some(soft)
}

fn open_files_limit() -> std::io::Result<libc::rlimit> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit(2) writes into the struct it is given, which lives on this stack.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(limit)
}
