//! The `tfsandbox` command's library part: the soak run and its leak census, which the command's
//! `soak` runs and `checks/` also counts leftovers with.

pub mod soak;
