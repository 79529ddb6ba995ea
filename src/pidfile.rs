//! `--pidfile`: sockvisor's pid, written atomically at start and removed at
//! exit. The pid never changes across upgrades, so the file stays true.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

#[derive(Debug)]
pub struct PidFile {
    path: PathBuf,
    contents: String,
}

impl PidFile {
    /// Writes `<pid>\n` to a temporary file beside `path` and renames it
    /// into place, so a reader never sees a partial file.
    pub fn write(path: &Path, pid: u32) -> io::Result<PidFile> {
        let contents = format!("{pid}\n");
        let mut temp = path.as_os_str().to_owned();
        temp.push(".tmp");
        fs::write(&temp, &contents)?;
        fs::rename(&temp, path)?;
        Ok(PidFile {
            path: path.to_path_buf(),
            contents,
        })
    }
}

impl Drop for PidFile {
    fn drop(&mut self) {
        // Leave it alone if somebody else has written it since.
        if fs::read_to_string(&self.path).is_ok_and(|c| c == self.contents) {
            let _ = fs::remove_file(&self.path);
        }
    }
}
