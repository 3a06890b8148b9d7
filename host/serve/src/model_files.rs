//! Files serve reads from a model's own folder (its warmup requests, its batching parameters).
//! The folder is the model author's, so a file there is opened beneath it with no symlink and no
//! magic link followed, without blocking on a FIFO, and only if it is a regular file.

use std::path::Path;

/// `relative` beneath `dir`; `None` where there is none.
pub fn open_beneath(dir: &Path, relative: &str) -> std::io::Result<Option<std::fs::File>> {
    use rustix::fs::{Mode, OFlags, ResolveFlags};
    let base = rustix::fs::open(
        dir,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    let file = match rustix::fs::openat2(
        &base,
        relative,
        OFlags::RDONLY | OFlags::NONBLOCK | OFlags::CLOEXEC | OFlags::NOCTTY,
        Mode::empty(),
        ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS,
    ) {
        Ok(file) => std::fs::File::from(file),
        Err(rustix::io::Errno::NOENT) => return Ok(None),
        Err(errno) => return Err(errno.into()),
    };
    if !file.metadata()?.is_file() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "not a regular file",
        ));
    }
    Ok(Some(file))
}

/// The text of `relative` beneath `dir`, at most `limit` bytes; `None` where there is none.
pub fn read_text(dir: &Path, relative: &str, limit: u64) -> std::io::Result<Option<String>> {
    use std::io::Read;
    let Some(file) = open_beneath(dir, relative)? else {
        return Ok(None);
    };
    let mut text = String::new();
    file.take(limit + 1).read_to_string(&mut text)?;
    if text.len() as u64 > limit {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("longer than {limit} bytes"),
        ));
    }
    Ok(Some(text))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_regular_files_beneath_the_folder_are_opened() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("f"), b"text").unwrap();
        std::os::unix::fs::symlink("/etc/passwd", dir.path().join("link")).unwrap();
        std::fs::create_dir(dir.path().join("d")).unwrap();
        assert_eq!(
            read_text(dir.path(), "f", 10).unwrap().as_deref(),
            Some("text")
        );
        assert!(read_text(dir.path(), "f", 3).is_err(), "past the limit");
        assert!(read_text(dir.path(), "none", 10).unwrap().is_none());
        assert!(
            open_beneath(dir.path(), "link").is_err(),
            "a symlink is not followed"
        );
        assert!(
            open_beneath(dir.path(), "../x").is_err(),
            "nothing above the folder"
        );
        assert!(
            open_beneath(dir.path(), "d").is_err(),
            "a folder is not a file"
        );
    }
}
