//! Process resource limits, and the connection caps both listeners count against.

pub mod connections;

/// Raises the soft limit on open files to the hard limit, so that the server's own connection
/// caps, not a default soft limit of often 1024, bound how many clients it serves at once.
/// Returns the new soft limit.
#[cfg(target_os = "linux")]
pub fn raise_nofile_limit() -> std::io::Result<u64> {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE)?;
    if soft < hard {
        setrlimit(Resource::RLIMIT_NOFILE, hard, hard)?;
    }
    tracing::info!(limit = hard, "open file limit");
    Ok(hard)
}
