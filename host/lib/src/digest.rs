//! The digest of a model folder: what was loaded, as a sha256 anyone can compute again.
//!
//! The folder is walked without following any symlink; its entries are taken in the byte order
//! of their paths relative to the folder (`/`-separated), and each adds one record to the hash:
//!
//! - a regular file: `f`, its path's length (u64, little endian), the path, its length in bytes
//!   (u64, little endian), then its bytes;
//! - a symlink: `l`, the path's length and the path, then the length and bytes of its target as
//!   written (it is recorded by name and target, never followed);
//! - anything else (socket, fifo, device): `o`, the path's length and the path;
//! - a directory adds no record of its own (an empty one leaves no trace); its entries do.
//!
//! The walk is bounded: past [`MAX_ENTRIES`] entries or [`MAX_DEPTH`] levels it fails.

use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// The most entries a model folder may hold for its digest.
pub const MAX_ENTRIES: usize = 100_000;
/// The deepest a model folder may nest.
pub const MAX_DEPTH: usize = 64;

/// A folder's digest and what it covered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FolderDigest {
    /// `sha256:` and the hex digest.
    pub sha256: String,
    /// Regular files hashed, and their bytes.
    pub files: u64,
    pub bytes: u64,
    /// Symlinks and special files, recorded by name (not followed).
    pub not_files: Vec<String>,
}

enum Kind {
    File,
    Symlink(PathBuf),
    Other,
}

/// The digest of `dir`, as the module describes it.
pub fn folder(dir: &Path) -> io::Result<FolderDigest> {
    let mut entries: Vec<(Vec<u8>, PathBuf, Kind)> = Vec::new();
    walk(dir, Vec::new(), 0, &mut entries)?;
    entries.sort_by(|a, b| a.0.cmp(&b.0));
    let mut hash = Sha256::new();
    let mut digest = FolderDigest {
        sha256: String::new(),
        files: 0,
        bytes: 0,
        not_files: Vec::new(),
    };
    let mut buf = vec![0u8; 64 * 1024];
    for (relative, full, kind) in entries {
        let record = |hash: &mut Sha256, tag: &[u8]| {
            hash.update(tag);
            hash.update((relative.len() as u64).to_le_bytes());
            hash.update(&relative);
        };
        match kind {
            Kind::File => {
                let mut file = std::fs::File::open(&full)?;
                let len = file.metadata()?.len();
                record(&mut hash, b"f");
                hash.update(len.to_le_bytes());
                // Exactly `len` bytes: a file that changes while read is an error, not a guess.
                let mut left = len;
                while left > 0 {
                    let want = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
                    let n = file.read(&mut buf[..want])?;
                    if n == 0 {
                        return Err(io::Error::other(format!(
                            "{} shrank while it was read",
                            full.display()
                        )));
                    }
                    hash.update(&buf[..n]);
                    left -= n as u64;
                }
                digest.files += 1;
                digest.bytes += len;
            }
            Kind::Symlink(target) => {
                record(&mut hash, b"l");
                let target = target.as_os_str().as_bytes();
                hash.update((target.len() as u64).to_le_bytes());
                hash.update(target);
                digest
                    .not_files
                    .push(String::from_utf8_lossy(&relative).into_owned());
            }
            Kind::Other => {
                record(&mut hash, b"o");
                digest
                    .not_files
                    .push(String::from_utf8_lossy(&relative).into_owned());
            }
        }
    }
    digest.sha256 = format!("sha256:{}", hex::encode(hash.finalize()));
    Ok(digest)
}

fn walk(
    dir: &Path,
    prefix: Vec<u8>,
    depth: usize,
    entries: &mut Vec<(Vec<u8>, PathBuf, Kind)>,
) -> io::Result<()> {
    if depth > MAX_DEPTH {
        return Err(io::Error::other(format!(
            "{} nests more than {MAX_DEPTH} folders deep",
            dir.display()
        )));
    }
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let mut relative = prefix.clone();
        if !relative.is_empty() {
            relative.push(b'/');
        }
        relative.extend_from_slice(entry.file_name().as_bytes());
        let path = entry.path();
        // Never followed: the entry itself.
        let kind = entry.file_type()?;
        if kind.is_dir() {
            walk(&path, relative, depth + 1, entries)?;
            continue;
        }
        let kind = if kind.is_file() {
            Kind::File
        } else if kind.is_symlink() {
            Kind::Symlink(std::fs::read_link(&path)?)
        } else {
            Kind::Other
        };
        entries.push((relative, path, kind));
        if entries.len() > MAX_ENTRIES {
            return Err(io::Error::other(format!(
                "more than {MAX_ENTRIES} entries under the model folder"
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The digest by hand, from the definition, for files given in order.
    fn by_hand(records: &[(&str, Option<&[u8]>)]) -> String {
        let mut hash = Sha256::new();
        for (path, content) in records {
            match content {
                Some(bytes) => {
                    hash.update(b"f");
                    hash.update((path.len() as u64).to_le_bytes());
                    hash.update(path.as_bytes());
                    hash.update((bytes.len() as u64).to_le_bytes());
                    hash.update(bytes);
                }
                None => {
                    hash.update(b"l");
                    hash.update((path.len() as u64).to_le_bytes());
                    hash.update(path.as_bytes());
                    hash.update(6u64.to_le_bytes());
                    hash.update(b"/etc/x");
                }
            }
        }
        format!("sha256:{}", hex::encode(hash.finalize()))
    }

    #[test]
    fn files_in_path_order_with_lengths_and_symlinks_by_name() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("variables")).unwrap();
        std::fs::create_dir_all(dir.path().join("empty")).unwrap();
        std::fs::write(dir.path().join("saved_model.pb"), b"graph").unwrap();
        std::fs::write(dir.path().join("variables/variables.index"), b"ix").unwrap();
        std::fs::write(dir.path().join("a.txt"), b"").unwrap();
        std::os::unix::fs::symlink("/etc/x", dir.path().join("link")).unwrap();
        let digest = folder(dir.path()).unwrap();
        // Byte order: "a.txt" < "link" < "saved_model.pb" < "variables/variables.index".
        let expected = by_hand(&[
            ("a.txt", Some(b"")),
            ("link", None),
            ("saved_model.pb", Some(b"graph")),
            ("variables/variables.index", Some(b"ix")),
        ]);
        assert_eq!(digest.sha256, expected);
        assert_eq!((digest.files, digest.bytes), (3, 7));
        assert_eq!(digest.not_files, vec!["link".to_string()]);
    }

    #[test]
    fn moving_bytes_between_files_changes_it() {
        let one = tempfile::tempdir().unwrap();
        std::fs::write(one.path().join("a"), b"xy").unwrap();
        std::fs::write(one.path().join("b"), b"z").unwrap();
        let two = tempfile::tempdir().unwrap();
        std::fs::write(two.path().join("a"), b"x").unwrap();
        std::fs::write(two.path().join("b"), b"yz").unwrap();
        assert_ne!(folder(one.path()).unwrap(), folder(two.path()).unwrap());
    }
}
