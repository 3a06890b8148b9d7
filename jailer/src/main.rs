//! tfsandbox-jailer: confines a worker before a single instruction of it runs, then execs it.
//!
//! The host starts it with a [`Plan`] on the command line (`Plan::to_args`); what happens then is
//! told in the library's `confine` module. Where the kernel lacks a feature it fails, naming it,
//! unless the host allowed that one weaker.

use std::process::ExitCode;

use tfsandbox_jailer::confine;
use tfsandbox_jailer::plan::{Plan, FAILED};

fn main() -> ExitCode {
    let error = match Plan::parse(std::env::args_os().skip(1)) {
        Ok(plan) => match confine::run(&plan) {
            Ok(never) => match never {},
            Err(error) => error,
        },
        Err(error) => error.into(),
    };
    eprintln!("tfsandbox-jailer: {error}");
    ExitCode::from(FAILED)
}
