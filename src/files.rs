//! Noticing that files changed, by content.
//!
//! Kubernetes updates mounted Secrets and ConfigMaps by swapping a `..data` symlink to a new
//! directory, not by writing the files in place, so inotify on the file sees nothing useful.
//! Reading the (small) files on an interval and comparing contents catches every kind of update:
//! in-place writes, renames and the kubelet's symlink swap.

use std::io;
use std::path::{Path, PathBuf};

/// Watches a set of files for content changes.
#[derive(Debug)]
pub struct FileWatch {
    paths: Vec<PathBuf>,
    last: Option<Vec<Vec<u8>>>,
}

impl FileWatch {
    /// Watches `paths`; the first [`FileWatch::changed`] reports their contents.
    pub fn new(paths: Vec<PathBuf>) -> Self {
        Self { paths, last: None }
    }

    /// Reads every file; returns their contents when any differs from the last call.
    pub fn changed(&mut self) -> io::Result<Option<Vec<Vec<u8>>>> {
        let contents = self
            .paths
            .iter()
            .map(|p| read(p))
            .collect::<io::Result<Vec<_>>>()?;
        if self.last.as_ref() == Some(&contents) {
            return Ok(None);
        }
        self.last = Some(contents.clone());
        Ok(Some(contents))
    }
}

fn read(path: &Path) -> io::Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_first_read_then_only_changes_including_a_symlink_swap() {
        let dir = tempfile::tempdir().expect("tempdir");
        let base = dir.path();
        // The kubelet's layout: file -> ..data/file, ..data -> ..generation
        std::fs::create_dir(base.join("..gen1")).expect("gen1");
        std::fs::write(base.join("..gen1/policy.yaml"), "one").expect("write");
        std::os::unix::fs::symlink("..gen1", base.join("..data")).expect("link");
        std::os::unix::fs::symlink("..data/policy.yaml", base.join("policy.yaml")).expect("link");

        let mut watch = FileWatch::new(vec![base.join("policy.yaml")]);
        assert_eq!(watch.changed().expect("read"), Some(vec![b"one".to_vec()]));
        assert_eq!(watch.changed().expect("read"), None);

        std::fs::create_dir(base.join("..gen2")).expect("gen2");
        std::fs::write(base.join("..gen2/policy.yaml"), "two").expect("write");
        std::os::unix::fs::symlink("..gen2", base.join("..data_tmp")).expect("link");
        std::fs::rename(base.join("..data_tmp"), base.join("..data")).expect("swap");
        assert_eq!(watch.changed().expect("read"), Some(vec![b"two".to_vec()]));
        assert_eq!(watch.changed().expect("read"), None);

        std::fs::remove_dir_all(base.join("..gen2")).expect("remove");
        assert!(
            watch.changed().is_err(),
            "a vanished file is an error, not a change"
        );
    }
}
