//! Lets one sandbox's own uid read the model folders it mounts, and nobody else.
//!
//! A docker sandbox runs as a uid of its own, which is in no group and owns nothing, so it reads
//! a model only through the files' "other" bits. Where those do not let it (a model in a private
//! `0700` folder, files `0600`), it is granted read (and search, for folders) by one POSIX ACL
//! entry naming that uid on each such file, removed again when the container is gone, and by the
//! next start when its host died first. We chose that over:
//! - adding the files' group to the container (`group_add`): no help for `0700`, and it would let
//!   the worker read with that group's rights;
//! - running as the invoking user: the worker would then share a uid with the user's own
//!   processes, which is what its own uid is for.
//!
//! The ACL entry adds no right for anyone but that uid: the mask it needs is only ever raised to
//! read (and search), and the owning group's own entry stays as it was. Files already readable by
//! others are left alone. Entries are added and removed under one lock per process; two host
//! processes changing one file's ACL at the same instant may lose one of the two entries, and
//! that sandbox then fails to load with a permission error naming the file.

use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use rustix::fs::XattrFlags;
use rustix::io::Errno;

const ACL_XATTR: &str = "system.posix_acl_access";
const ACL_VERSION: u32 = 2;
const USER_OBJ: u16 = 0x01;
const USER: u16 = 0x02;
const GROUP_OBJ: u16 = 0x04;
const GROUP: u16 = 0x08;
const MASK: u16 = 0x10;
const OTHER: u16 = 0x20;
const NO_ID: u32 = u32::MAX;
const READ: u16 = 4;
const SEARCH: u16 = 1;

/// Read-modify-write of ACLs by this process, one at a time.
static ACLS: Mutex<()> = Mutex::new(());

#[derive(Debug, thiserror::Error)]
pub enum AccessError {
    #[error(
        "{}: not readable by the sandbox's uid {uid}, and granting it read with an ACL failed: \
         {source} (make it readable by others, or run tfsandbox as its owner)",
        .path.display()
    )]
    Grant {
        path: PathBuf,
        uid: u32,
        source: io::Error,
    },
    #[error("{}: {source}", .path.display())]
    Walk { path: PathBuf, source: io::Error },
}

/// The entries added for one uid; removed when dropped.
#[derive(Debug)]
pub struct Grants {
    uid: u32,
    paths: Vec<PathBuf>,
}

impl Grants {
    /// How many files and folders got an entry.
    pub fn len(&self) -> usize {
        self.paths.len()
    }

    pub fn is_empty(&self) -> bool {
        self.paths.is_empty()
    }
}

impl Drop for Grants {
    fn drop(&mut self) {
        for path in &self.paths {
            if let Err(error) = change(path, |acl| remove_user(acl, self.uid)) {
                tracing::warn!(path = %path.display(), uid = self.uid, %error, "could not remove a model ACL entry");
            }
        }
    }
}

/// Grants `uid` read on every file (and search on every folder) under `roots` that others may
/// not read, on the same file system as its root (the mounts are not recursive).
pub fn grant<'a>(
    uid: u32,
    roots: impl IntoIterator<Item = &'a Path>,
) -> Result<Grants, AccessError> {
    let mut grants = Grants {
        uid,
        paths: Vec::new(),
    };
    for root in roots {
        for (path, is_dir, mode) in walk(root)? {
            let needed = if is_dir { READ | SEARCH } else { READ };
            if mode as u16 & needed == needed {
                continue;
            }
            change(&path, |acl| add_user(acl, uid, needed)).map_err(|source| {
                AccessError::Grant {
                    path: path.clone(),
                    uid,
                    source,
                }
            })?;
            grants.paths.push(path);
        }
    }
    Ok(grants)
}

/// Removes any entry for `uid` under `roots`: what a host that died left behind.
pub fn revoke_all<'a>(uid: u32, roots: impl IntoIterator<Item = &'a Path>) {
    for root in roots {
        let Ok(items) = walk(root) else { continue };
        for (path, ..) in items {
            if let Err(error) = change(&path, |acl| remove_user(acl, uid)) {
                tracing::debug!(path = %path.display(), uid, %error, "could not remove a stale model ACL entry");
            }
        }
    }
}

/// (path, is a folder, permission bits) of every folder and regular file under `root`, itself
/// included; symbolic links are not followed.
fn walk(root: &Path) -> Result<Vec<(PathBuf, bool, u32)>, AccessError> {
    let bad = |path: &Path| {
        let path = path.to_path_buf();
        move |source| AccessError::Walk { path, source }
    };
    let device = std::fs::symlink_metadata(root).map_err(bad(root))?.dev();
    let mut found = Vec::new();
    let mut pending = vec![root.to_path_buf()];
    while let Some(path) = pending.pop() {
        let metadata = std::fs::symlink_metadata(&path).map_err(bad(&path))?;
        if metadata.dev() != device {
            continue;
        }
        if metadata.is_dir() {
            for entry in std::fs::read_dir(&path).map_err(bad(&path))? {
                pending.push(entry.map_err(bad(&path))?.path());
            }
        } else if !metadata.is_file() {
            continue;
        }
        found.push((path, metadata.is_dir(), metadata.mode() & 0o7777));
    }
    Ok(found)
}

/// One ACL entry: (tag, permissions, id).
type Entry = (u16, u16, u32);

/// Reads `path`'s access ACL (its mode bits where it has none), lets `edit` change it, and
/// writes it back if it changed.
fn change(path: &Path, edit: impl FnOnce(&mut Vec<Entry>)) -> io::Result<()> {
    let _one_at_a_time = ACLS.lock().unwrap_or_else(|e| e.into_inner());
    let mut acl = read(path)?;
    let before = acl.clone();
    edit(&mut acl);
    if acl == before {
        return Ok(());
    }
    acl.sort_by_key(|&(tag, _, id)| (tag, id));
    let mut bytes = ACL_VERSION.to_le_bytes().to_vec();
    for (tag, perm, id) in acl {
        bytes.extend(tag.to_le_bytes());
        bytes.extend(perm.to_le_bytes());
        bytes.extend(id.to_le_bytes());
    }
    // An ACL of the three base entries alone is stored by the kernel as mode bits.
    rustix::fs::lsetxattr(path, ACL_XATTR, &bytes, XattrFlags::empty())?;
    Ok(())
}

fn read(path: &Path) -> io::Result<Vec<Entry>> {
    let mut buffer = vec![0u8; 4 + 8 * 64];
    let length = match rustix::fs::lgetxattr(path, ACL_XATTR, &mut buffer[..]) {
        Ok(length) => length,
        Err(Errno::NODATA) => {
            let mode = std::fs::symlink_metadata(path)?.mode() as u16;
            return Ok(vec![
                (USER_OBJ, (mode >> 6) & 7, NO_ID),
                (GROUP_OBJ, (mode >> 3) & 7, NO_ID),
                (OTHER, mode & 7, NO_ID),
            ]);
        }
        Err(error) => return Err(error.into()),
    };
    let bytes = &buffer[..length];
    if bytes.len() < 4 || u32::from_le_bytes(bytes[..4].try_into().expect("4 bytes")) != ACL_VERSION
    {
        return Err(io::Error::other("an ACL in an unknown format"));
    }
    Ok(bytes[4..]
        .chunks_exact(8)
        .map(|e| {
            (
                u16::from_le_bytes([e[0], e[1]]),
                u16::from_le_bytes([e[2], e[3]]),
                u32::from_le_bytes([e[4], e[5], e[6], e[7]]),
            )
        })
        .collect())
}

fn add_user(acl: &mut Vec<Entry>, uid: u32, perm: u16) {
    acl.retain(|&(tag, _, id)| !(tag == USER && id == uid));
    acl.push((USER, perm, uid));
    match acl.iter_mut().find(|(tag, ..)| *tag == MASK) {
        Some(mask) => mask.1 |= perm,
        None => {
            // The mask a minimal ACL gets: what the owning group had, plus the new entry's.
            let group = acl
                .iter()
                .find(|(tag, ..)| *tag == GROUP_OBJ)
                .map_or(0, |e| e.1);
            acl.push((MASK, group | perm, NO_ID));
        }
    }
}

fn remove_user(acl: &mut Vec<Entry>, uid: u32) {
    acl.retain(|&(tag, _, id)| !(tag == USER && id == uid));
    if !acl.iter().any(|(tag, ..)| *tag == USER || *tag == GROUP) {
        // Back to the mode bits, with the group's own permissions (not the mask's).
        acl.retain(|(tag, ..)| *tag != MASK);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entry_comes_and_goes_leaving_the_acl_as_it_was() {
        let base = vec![
            (USER_OBJ, 7, NO_ID),
            (GROUP_OBJ, 0, NO_ID),
            (OTHER, 0, NO_ID),
        ];
        let mut acl = base.clone();
        add_user(&mut acl, 1_900_000_001, READ | SEARCH);
        assert!(acl.contains(&(USER, 5, 1_900_000_001)));
        assert!(acl.contains(&(MASK, 5, NO_ID)));
        assert!(
            acl.contains(&(GROUP_OBJ, 0, NO_ID)),
            "the group gains nothing"
        );
        add_user(&mut acl, 1_900_000_002, READ);
        remove_user(&mut acl, 1_900_000_001);
        assert!(
            acl.contains(&(MASK, 5, NO_ID)),
            "another entry still needs the mask"
        );
        remove_user(&mut acl, 1_900_000_002);
        assert_eq!(acl, base);
    }
}
