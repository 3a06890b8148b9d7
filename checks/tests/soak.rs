//! The soak command, briefly: sandboxes started, stopped, dropped and crashed in turn leave no
//! process, container, fd or temp folder behind. (`tfsandbox soak --cycles 1000` is the long run.)

use std::process::Command;

use tfsandbox::RuntimeKind;
use tfsandbox_checks::{each_runtime, fixture};

async fn a_short_soak_leaks_nothing(runtime: RuntimeKind) {
    let cli = tfsandbox_checks::tfsandbox();
    let name = match runtime {
        RuntimeKind::Process => "process",
        RuntimeKind::Docker => "docker",
        RuntimeKind::Gvisor => "gvisor",
    };
    let output = Command::new(cli)
        .args(["soak", "--cycles", "16", "--runtime", name, "--model"])
        .arg(fixture("half_plus_two"))
        .output()
        .expect("tfsandbox soak runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    println!("{stdout}");
    let last = stdout.lines().last().unwrap_or_default();
    let expected = format!(
        "soak {name}: 16 cycles, leaked processes 0, containers 0, fds 0, host RSS growth "
    );
    assert!(last.starts_with(&expected), "{last}");
    assert!(
        stdout.contains("temp dirs left 0, cgroups left 0, runsc state left 0"),
        "{stdout}"
    );
}

each_runtime!(a_short_soak_leaks_nothing);
