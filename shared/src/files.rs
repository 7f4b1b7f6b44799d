//! Replacing a small file that a node rewrites again and again (a participant's `state.json` several times a
//! round, its witness's `witness-checkpoint.note` once a round) so that a reader, or the node after a crash,
//! always finds either the old or the new content whole.
//!
//! The usual way, write a temporary file and rename it over the old one, allocates a fresh inode for every
//! write and frees the old one. On ext4 without a journal (this project's CI machines) allocating an inode
//! scans past every inode freed in the last few seconds (`recently_deleted` in fs/ext4/ialloc.c), so a
//! federation of many nodes on one disk (`fedistill bench scale` at 100 participants) spent a third of
//! both cores there. [`replace`] keeps a spare file beside the target instead, `.NAME.prev`: it writes the
//! new content into the spare and then swaps the two names in one atomic `renameat2(RENAME_EXCHANGE)`, so the
//! target holds the new content, the spare the previous one, and no inode is created or freed after the
//! first write. Where the exchange is not available (another OS, a file system without it, the first write)
//! it falls back to the plain rename, which gives the same guarantee.

use std::io::Write;
use std::path::{Path, PathBuf};

/// Whether [`replace`] waits for the new content to reach the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// fsync the new content before it takes the name, then the directory: survives power loss.
    Durable,
    /// Atomic for readers and against the process dying, not against the machine losing power.
    Cached,
}

/// The spare beside `path` that [`replace`] writes into: `.NAME.prev`, which holds the previous content
/// once a second write has happened.
pub fn spare_path(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.prev"))
}

/// Replaces the content of `path` with `bytes` atomically (see the module documentation).
pub fn replace(path: &Path, bytes: &[u8], durability: Durability) -> std::io::Result<()> {
    let spare = spare_path(path);
    {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&spare)?;
        f.write_all(bytes)?;
        if durability == Durability::Durable {
            f.sync_all()?;
        }
    }
    if !exchange(&spare, path)? {
        std::fs::rename(&spare, path)?;
    }
    if durability == Durability::Durable {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            // Best effort: not every platform can fsync a directory.
            if let Ok(d) = std::fs::File::open(parent) {
                let _ = d.sync_all();
            }
        }
    }
    Ok(())
}

/// Swaps the names `a` and `b`; `Ok(false)` where that cannot be done here (no `b` yet, or no exchange on
/// this file system or OS), for the caller to rename instead.
#[cfg(target_os = "linux")]
fn exchange(a: &Path, b: &Path) -> std::io::Result<bool> {
    use rustix::fs::{renameat_with, RenameFlags, CWD};
    use rustix::io::Errno;
    match renameat_with(CWD, a, CWD, b, RenameFlags::EXCHANGE) {
        Ok(()) => Ok(true),
        Err(Errno::NOENT | Errno::INVAL | Errno::NOSYS | Errno::OPNOTSUPP) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

#[cfg(not(target_os = "linux"))]
fn exchange(_a: &Path, _b: &Path) -> std::io::Result<bool> {
    Ok(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(unix)]
    fn inode(path: &Path) -> u64 {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(path).expect("metadata").ino()
    }

    #[test]
    fn each_write_replaces_the_content_and_keeps_the_previous_one_in_the_spare() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("state.json");
        for (i, durability) in [Durability::Cached, Durability::Durable, Durability::Cached]
            .into_iter()
            .enumerate()
        {
            let body = format!("version {i}").repeat(100 - 30 * i);
            replace(&path, body.as_bytes(), durability).expect("replace");
            assert_eq!(std::fs::read_to_string(&path).expect("read"), body);
            if i > 0 {
                let previous = format!("version {}", i - 1).repeat(100 - 30 * (i - 1));
                assert_eq!(std::fs::read_to_string(spare_path(&path)).expect("spare"), previous);
            }
        }
        let names: Vec<String> = std::fs::read_dir(dir.path())
            .expect("list")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names.len(), 2, "only the file and its spare: {names:?}");
    }

    /// After the first two writes the same two inodes take turns: nothing is allocated or freed.
    #[cfg(target_os = "linux")]
    #[test]
    fn later_writes_allocate_no_inode() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("witness-checkpoint.note");
        replace(&path, b"one", Durability::Durable).expect("first");
        replace(&path, b"two", Durability::Durable).expect("second");
        let pair = [inode(&path), inode(&spare_path(&path))];
        assert_ne!(pair[0], pair[1]);
        for i in 0..5 {
            replace(&path, format!("write {i}").as_bytes(), Durability::Cached).expect("write");
            let now = [inode(&path), inode(&spare_path(&path))];
            assert_eq!(now, [pair[1 - i % 2], pair[i % 2]], "write {i}");
        }
        assert_eq!(std::fs::read(&path).expect("read"), b"write 4");
    }

    #[test]
    fn a_missing_directory_is_an_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("absent").join("state.json");
        assert!(replace(&path, b"x", Durability::Cached).is_err());
        assert!(!path.exists());
    }
}
