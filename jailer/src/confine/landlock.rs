//! Landlock: read what the root holds, write only /tmp and /dev/null, execute only the loader, no
//! TCP, no signals or abstract sockets beyond the sandbox.

use ::landlock::{
    Access, AccessFs, AccessNet, PathBeneath, PathFd, Ruleset, RulesetAttr, RulesetCreatedAttr,
    RulesetStatus, Scope, ABI,
};

use crate::error::{JailerError, Result};
use crate::plan::{Plan, Weaker};

/// Applies the rules to this thread (and the worker it becomes); returns what was enforced.
pub fn restrict(plan: &Plan) -> Result<String> {
    let abi = ABI::V6;
    let path = |p: &str| {
        PathFd::new(p).map_err(|source| JailerError::LandlockPath {
            path: p.to_string(),
            source,
        })
    };
    let read = AccessFs::from_read(abi);
    let loader = plan.command[0].to_string_lossy();
    let mut ruleset = Ruleset::default()
        .handle_access(AccessFs::from_all(abi))?
        .handle_access(AccessNet::from_all(abi))?
        .scope(Scope::from_all(abi))?
        .create()?
        .add_rule(PathBeneath::new(path("/")?, read & !AccessFs::Execute))?
        .add_rule(PathBeneath::new(
            path(&loader)?,
            AccessFs::Execute | AccessFs::ReadFile,
        ))?
        .add_rule(PathBeneath::new(
            path("/tmp")?,
            AccessFs::from_all(abi) & !AccessFs::Execute,
        ))?
        .add_rule(PathBeneath::new(
            path("/dev/null")?,
            AccessFs::ReadFile | AccessFs::WriteFile,
        ))?;
    // GPU nodes: opened read-write and driven by ioctl (Landlock ABI 5 filters device ioctls).
    for device in &plan.devices {
        ruleset = ruleset.add_rule(PathBeneath::new(
            path(&device.to_string_lossy())?,
            AccessFs::ReadFile | AccessFs::WriteFile | AccessFs::IoctlDev,
        ))?;
    }
    let status = ruleset.restrict_self()?;
    let enforced = match status.ruleset {
        RulesetStatus::FullyEnforced => "fully enforced",
        RulesetStatus::PartiallyEnforced => "partially enforced",
        RulesetStatus::NotEnforced => "not enforced",
    };
    if status.ruleset != RulesetStatus::FullyEnforced && !plan.weaker.contains(&Weaker::Landlock) {
        return Err(JailerError::LandlockWeak {
            enforced,
            abi: format!("{abi:?}"),
        });
    }
    Ok(format!("{enforced} (ABI {abi:?})"))
}
