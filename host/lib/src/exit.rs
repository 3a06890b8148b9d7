//! How a worker ended, as every runtime reports it: typed, so callers need not read text, and
//! printed as the host has always printed it ("exit status: 1", "signal: 9 (SIGKILL)", ...).

use std::fmt;

/// A worker's end.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize)]
pub struct WorkerExit {
    /// Its exit code, when it exited.
    pub code: Option<i32>,
    /// The signal that ended it, when one did.
    pub signal: Option<i32>,
    /// Killed for want of memory at the sandbox's bound (the engine's report with docker, the
    /// cgroup's count with the process runtime).
    pub oom: bool,
    /// Why the host killed it, when the host did.
    pub killed_because: Option<String>,
    /// Why neither code nor signal is known (a wait that failed or was lost).
    pub unknown: Option<String>,
}

impl WorkerExit {
    pub fn code(code: i32) -> WorkerExit {
        WorkerExit {
            code: Some(code),
            ..WorkerExit::default()
        }
    }

    pub fn signal(signal: i32) -> WorkerExit {
        WorkerExit {
            signal: Some(signal),
            ..WorkerExit::default()
        }
    }

    pub fn unknown(why: impl fmt::Display) -> WorkerExit {
        WorkerExit {
            unknown: Some(why.to_string()),
            ..WorkerExit::default()
        }
    }

    /// A wait status's exit code or signal.
    pub fn from_status(status: std::process::ExitStatus) -> WorkerExit {
        use std::os::unix::process::ExitStatusExt;
        match (status.code(), status.signal()) {
            (Some(code), _) => WorkerExit::code(code),
            (None, Some(signal)) => WorkerExit::signal(signal),
            (None, None) => WorkerExit::unknown(status),
        }
    }

    /// An exit code as an engine or a shell reports it: past 128, the signal that ended it.
    pub fn from_shell_code(code: i64) -> WorkerExit {
        match i32::try_from(code) {
            Ok(code) if code > 128 => WorkerExit::signal(code - 128),
            Ok(code) => WorkerExit::code(code),
            Err(_) => WorkerExit::unknown(format!("exit code {code}")),
        }
    }

    pub fn killed_because(mut self, reason: impl Into<String>) -> WorkerExit {
        self.killed_because = Some(reason.into());
        self
    }
}

/// Linux's signal names, by number, as the wait status prints them.
const SIGNALS: [&str; 31] = [
    "SIGHUP",
    "SIGINT",
    "SIGQUIT",
    "SIGILL",
    "SIGTRAP",
    "SIGABRT",
    "SIGBUS",
    "SIGFPE",
    "SIGKILL",
    "SIGUSR1",
    "SIGSEGV",
    "SIGUSR2",
    "SIGPIPE",
    "SIGALRM",
    "SIGTERM",
    "SIGSTKFLT",
    "SIGCHLD",
    "SIGCONT",
    "SIGSTOP",
    "SIGTSTP",
    "SIGTTIN",
    "SIGTTOU",
    "SIGURG",
    "SIGXCPU",
    "SIGXFSZ",
    "SIGVTALRM",
    "SIGPROF",
    "SIGWINCH",
    "SIGIO",
    "SIGPWR",
    "SIGSYS",
];

impl fmt::Display for WorkerExit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.code, self.signal, &self.unknown) {
            (Some(code), _, _) => write!(f, "exit status: {code}")?,
            (None, Some(signal), _) => {
                let name = usize::try_from(signal - 1)
                    .ok()
                    .and_then(|i| SIGNALS.get(i))
                    .unwrap_or(&"signal");
                write!(f, "signal: {signal} ({name})")?
            }
            (None, None, Some(why)) => write!(f, "unknown status: {why}")?,
            (None, None, None) => f.write_str("unknown status")?,
        }
        if self.oom {
            f.write_str(", out of memory: killed at the sandbox's memory limit")?;
        }
        if let Some(reason) = &self.killed_because {
            write!(f, ", killed by the host: {reason}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn it_prints_as_the_wait_status_does() {
        use std::os::unix::process::ExitStatusExt;
        for raw in [0, 1 << 8, 9, 31, 6] {
            let status = std::process::ExitStatus::from_raw(raw);
            assert_eq!(
                WorkerExit::from_status(status).to_string(),
                status.to_string()
            );
        }
    }

    #[test]
    fn an_engine_code_past_128_is_a_signal_and_the_extras_follow() {
        let exit = WorkerExit::from_shell_code(137);
        assert_eq!(exit.signal, Some(9));
        let exit = WorkerExit { oom: true, ..exit }.killed_because("the sandbox was dropped");
        assert_eq!(
            exit.to_string(),
            "signal: 9 (SIGKILL), out of memory: killed at the sandbox's memory limit, killed by the host: the sandbox was dropped"
        );
    }
}
