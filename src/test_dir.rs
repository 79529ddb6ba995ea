//! A scratch directory for unit tests that touch the file system: fresh,
//! owner-only, named after the test and this process, removed on drop.

use std::fs;
use std::path::{Path, PathBuf};

pub struct TestDir {
    path: PathBuf,
}

impl TestDir {
    pub fn new(name: &str) -> TestDir {
        let path =
            std::env::temp_dir().join(format!("sockvisor-unit-{}-{name}", std::process::id()));
        let _ = fs::remove_dir_all(&path);
        crate::paths::ensure_private_dir(&path).unwrap();
        TestDir { path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn join(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.path);
    }
}
