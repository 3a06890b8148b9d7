//! One module per subcommand of `tfsandbox`, and the flags they share.

pub mod bench;
pub mod image;
pub mod inspect;
pub mod run;
pub mod sandbox;
pub mod scan;
pub mod serve;
mod serve_flags;
pub mod soak;

/// Waits for SIGTERM or SIGINT and names it.
pub async fn interrupted() -> &'static str {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut terminate), Ok(mut interrupt)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = terminate.recv() => "SIGTERM",
        _ = interrupt.recv() => "SIGINT",
    }
}
