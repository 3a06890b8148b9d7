//! Reading other processes' facts from /proc.

/// Field `number` of `/proc/<pid>/stat`, numbered as proc(5) numbers them (4: the parent's pid,
/// 22: the start time in clock ticks after boot), for fields after the command name.
pub fn stat_field(pid: u32, number: usize) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces and parentheses; fields resume after the last ')'.
    stat.rsplit_once(')')?
        .1
        .split_whitespace()
        .nth(number.checked_sub(3)?)?
        .parse()
        .ok()
}
