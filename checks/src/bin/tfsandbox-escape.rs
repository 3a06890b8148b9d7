//! `tfsandbox-escape --runtime process|docker|gvisor`: runs every escape attempt in that runtime's
//! sandbox and prints how each ended, then `escape <runtime>: N/M denied`. Exits 1 if any got out.

use tfsandbox::RuntimeKind;
use tfsandbox_checks::escape::all_attempts;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let runtime = match args
        .iter()
        .position(|a| a == "--runtime")
        .and_then(|i| args.get(i + 1))
        .map(String::as_str)
    {
        Some("docker") => RuntimeKind::Docker,
        Some("gvisor") => RuntimeKind::Gvisor,
        Some("process") | None => RuntimeKind::Process,
        Some(other) => {
            eprintln!("unknown runtime '{other}': process, docker or gvisor");
            return std::process::ExitCode::from(2);
        }
    };
    let name = format!("{runtime:?}").to_lowercase();
    let attempts = all_attempts(runtime).await;
    for a in &attempts {
        println!(
            "{:<8} {:<34} {}",
            if a.denied { "denied" } else { "ESCAPED" },
            a.attempt,
            a.detail
        );
    }
    let denied = attempts.iter().filter(|a| a.denied).count();
    println!("escape {name}: {denied}/{} denied", attempts.len());
    if denied == attempts.len() && !attempts.is_empty() {
        std::process::ExitCode::SUCCESS
    } else {
        std::process::ExitCode::FAILURE
    }
}
