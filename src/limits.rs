//! Process resource limits raised at start-up, for the core's and the edge's listeners alike.

/// Raises the soft limit on open files (`RLIMIT_NOFILE`) to the hard limit: every connection
/// holds a file descriptor, and the usual soft default (1024) runs out long before memory or
/// CPU do. Returns the soft limit in force afterwards (0 when it cannot be read) and logs it.
#[cfg(target_os = "linux")]
pub fn raise_nofile_limit() -> u64 {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (soft, hard) = match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok(limits) => limits,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the open-file limit");
            return 0;
        }
    };
    if soft >= hard {
        tracing::info!(limit = soft, "open-file limit");
        return soft;
    }
    match setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
        Ok(()) => {
            tracing::info!(from = soft, to = hard, "raised the open-file limit");
            hard
        }
        Err(e) => {
            tracing::warn!(limit = soft, hard, error = %e, "cannot raise the open-file limit");
            soft
        }
    }
}

/// Elsewhere the limit is left as the platform set it (0: unknown).
#[cfg(not(target_os = "linux"))]
pub fn raise_nofile_limit() -> u64 {
    tracing::info!("the open-file limit is left as it is on this platform");
    0
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    /// Each test runs in its own process (nextest), so lowering this one's limit is harmless.
    #[test]
    fn the_soft_limit_is_raised_to_the_hard_limit() {
        use nix::sys::resource::{Resource, getrlimit, setrlimit};
        let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE).expect("getrlimit");
        setrlimit(Resource::RLIMIT_NOFILE, hard.min(256), hard).expect("lowering the soft limit");
        assert_eq!(raise_nofile_limit(), hard);
        assert_eq!(
            getrlimit(Resource::RLIMIT_NOFILE).expect("getrlimit"),
            (hard, hard)
        );
    }
}
