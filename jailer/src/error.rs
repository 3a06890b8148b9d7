//! What can go wrong while confining a worker: every error names what was being done, the path
//! where one was involved, and the errno.

use std::path::PathBuf;

use crate::plan::PlanError;
use crate::seccomp::PolicyError;

#[derive(Debug, thiserror::Error)]
pub enum JailerError {
    #[error(transparent)]
    Plan(#[from] PlanError),
    #[error("{what}: {source}")]
    Sys {
        what: &'static str,
        source: std::io::Error,
    },
    #[error("{what} {}: {source}", .path.display())]
    Path {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{what}: asked for {wanted}, still {got}")]
    Credentials {
        what: &'static str,
        wanted: u32,
        got: u32,
    },
    #[error("handshake: {0}")]
    Handshake(String),
    #[error("the parent is gone")]
    ParentGone,
    #[error("landlock: {0}")]
    Landlock(#[from] landlock::RulesetError),
    #[error("landlock {path}: {source}")]
    LandlockPath {
        path: String,
        source: landlock::PathFdError,
    },
    #[error(
        "landlock is {enforced} on this kernel (ABI {abi} asked); allow it weaker to run anyway"
    )]
    LandlockWeak { enforced: &'static str, abi: String },
    #[error(transparent)]
    Policy(#[from] PolicyError),
    #[error("seccomp: {0}")]
    Seccomp(#[from] seccompiler::Error),
    #[error("exec {}: {source}", .path.display())]
    Exec {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("an argument or variable holds a NUL byte: {0:?}")]
    Nul(String),
}

impl JailerError {
    /// For a failed system call with no path involved.
    pub fn sys(what: &'static str) -> impl FnOnce(rustix::io::Errno) -> JailerError {
        move |errno| JailerError::Sys {
            what,
            source: errno.into(),
        }
    }

    /// For a failed system call on `path`.
    pub fn path(
        what: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(rustix::io::Errno) -> JailerError {
        let path = path.into();
        move |errno| JailerError::Path {
            what,
            path,
            source: errno.into(),
        }
    }

    /// For a failed std::fs call on `path`.
    pub fn io(
        what: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(std::io::Error) -> JailerError {
        let path = path.into();
        move |source| JailerError::Path { what, path, source }
    }
}

pub type Result<T, E = JailerError> = std::result::Result<T, E>;
