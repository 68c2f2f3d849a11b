//! Files written so that nothing the user had is lost: through a temporary file in the same
//! folder, flushed to disk, then renamed over the target.

use crate::{BertError, Result};
use std::io::Write;
use std::path::{Path, PathBuf};

/// The temporary name beside `path` (same folder, so the rename is atomic).
fn tmp_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    name.push(format!(".tmp{}-{n}", std::process::id()));
    path.with_file_name(name)
}

/// Writes `path` by calling `fill` on a buffered temporary file, then renaming it into place.
/// On any error the temporary file is removed and `path` is untouched.
pub fn write_atomic_with(
    path: &Path,
    fill: impl FnOnce(&mut dyn Write) -> std::io::Result<()>,
) -> Result<()> {
    let tmp = tmp_path(path);
    let io_err = |p: &Path, e: std::io::Error| BertError::Io(format!("{}: {e}", p.display()));
    let result = (|| -> std::io::Result<()> {
        let f = std::fs::File::create(&tmp)?;
        let mut w = std::io::BufWriter::with_capacity(1 << 20, f);
        fill(&mut w)?;
        let f = w.into_inner().map_err(|e| e.into_error())?;
        f.sync_all()?;
        Ok(())
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(io_err(path, e));
    }
    std::fs::rename(&tmp, path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        io_err(path, e)
    })?;
    fault_point("file-written");
    Ok(())
}

/// [`write_atomic_with`] for bytes already in memory.
pub fn write_atomic(path: &Path, contents: &[u8]) -> Result<()> {
    write_atomic_with(path, |w| w.write_all(contents))
}

/// Fault injection for the crash tests: `BERT_FAULT=NAME` (or `NAME@K`, the K-th time that
/// point is reached, counting from 1) aborts the process at the named point, as `kill -9`
/// would there. The points: `file-written` (after each file [`write_atomic_with`] renames into
/// place: inside a checkpoint being written, one of its files), `staged-synced` (all written and flushed, before the switch), `staged-switched` (the new folder
/// in place, the old not yet removed).
pub fn fault_point(name: &str) {
    static SPEC: std::sync::OnceLock<Option<(String, u64)>> = std::sync::OnceLock::new();
    static HITS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let spec = SPEC.get_or_init(|| {
        let s = std::env::var("BERT_FAULT").ok()?;
        Some(match s.split_once('@') {
            Some((n, k)) => (n.to_string(), k.parse().unwrap_or(1)),
            None => (s, 1),
        })
    });
    if let Some((n, k)) = spec {
        if n == name && HITS.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1 == *k {
            eprintln!("bert: BERT_FAULT: aborting at {name} (hit {k})");
            std::process::abort();
        }
    }
}

fn io_error(p: &Path, e: std::io::Error) -> BertError {
    BertError::Io(format!("{}: {e}", p.display()))
}

/// Flushes a folder's entry list to disk (so that a rename inside it survives a power cut).
pub fn sync_dir(dir: &Path) -> Result<()> {
    #[cfg(unix)]
    std::fs::File::open(dir)
        .and_then(|f| f.sync_all())
        .map_err(|e| io_error(dir, e))?;
    let _ = dir;
    Ok(())
}

/// The prefix of the staging folders beside `target`: `.NAME.staged-`.
fn staged_prefix(target: &Path) -> String {
    format!(
        ".{}.staged-",
        target.file_name().unwrap_or_default().to_string_lossy()
    )
}

/// A folder built aside and switched in whole: its files are written into a fresh sibling
/// folder (`.NAME.staged-PID-N`), flushed to disk with the folder, and [`StagedDir::commit`]
/// puts it in place of `target` by one atomic exchange of the two names (Linux `renameat2`
/// with `RENAME_EXCHANGE`; elsewhere, or where the file system lacks it, two renames). A reader
/// of `target` sees the old set or the new one, never a mixture: a checkpoint killed while
/// being written is the previous checkpoint. Dropped uncommitted, the staging folder is removed.
pub struct StagedDir {
    staged: PathBuf,
    target: PathBuf,
    done: bool,
}

impl StagedDir {
    /// A fresh staging folder for `target` (whose parent must exist). Leftovers of earlier,
    /// killed writers are removed first ([`clean_staged`]).
    pub fn new(target: &Path) -> Result<Self> {
        clean_staged(target)?;
        static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let staged = target.with_file_name(format!(
            "{}{}-{n}",
            staged_prefix(target),
            std::process::id()
        ));
        std::fs::create_dir(&staged).map_err(|e| io_error(&staged, e))?;
        Ok(StagedDir {
            staged,
            target: target.to_path_buf(),
            done: false,
        })
    }

    /// Where to write the new set's files.
    pub fn path(&self) -> &Path {
        &self.staged
    }

    /// Flushes every file and the folder, then switches the staged folder in for `target`;
    /// the old folder (if any) is removed after the switch.
    pub fn commit(mut self) -> Result<()> {
        let entries = std::fs::read_dir(&self.staged).map_err(|e| io_error(&self.staged, e))?;
        for e in entries {
            let p = e.map_err(|e| io_error(&self.staged, e))?.path();
            if p.is_file() {
                std::fs::File::open(&p)
                    .and_then(|f| f.sync_all())
                    .map_err(|e| io_error(&p, e))?;
            }
        }
        sync_dir(&self.staged)?;
        fault_point("staged-synced");
        let parent = self
            .target
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."))
            .to_path_buf();
        if self.target.exists() {
            exchange(&self.staged, &self.target)?;
            fault_point("staged-switched");
            // The staging name now holds the old folder.
            std::fs::remove_dir_all(&self.staged).map_err(|e| io_error(&self.staged, e))?;
        } else {
            std::fs::rename(&self.staged, &self.target).map_err(|e| io_error(&self.target, e))?;
        }
        self.done = true;
        sync_dir(&parent)
    }
}

impl Drop for StagedDir {
    fn drop(&mut self) {
        if !self.done {
            let _ = std::fs::remove_dir_all(&self.staged);
        }
    }
}

/// Swaps the names `a` and `b` atomically where the system can.
fn exchange(a: &Path, b: &Path) -> Result<()> {
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::ffi::OsStrExt;
        let c = |p: &Path| std::ffi::CString::new(p.as_os_str().as_bytes()).unwrap();
        let (ca, cb) = (c(a), c(b));
        // SAFETY: two NUL-terminated paths; renameat2 only reads them.
        let r = unsafe {
            libc::renameat2(
                libc::AT_FDCWD,
                ca.as_ptr(),
                libc::AT_FDCWD,
                cb.as_ptr(),
                libc::RENAME_EXCHANGE,
            )
        };
        if r == 0 {
            return Ok(());
        }
        let e = std::io::Error::last_os_error();
        if !matches!(e.raw_os_error(), Some(libc::EINVAL) | Some(libc::ENOSYS)) {
            return Err(io_error(b, e));
        }
    }
    // Two renames: between them `b` is absent and its old contents sit at `b.old`, which
    // [`clean_staged`] puts back if the process dies there.
    let old = b.with_file_name(format!(
        "{}old",
        staged_prefix(b).trim_end_matches("staged-")
    ));
    std::fs::rename(b, &old).map_err(|e| io_error(b, e))?;
    std::fs::rename(a, b).map_err(|e| io_error(b, e))?;
    std::fs::rename(&old, a).map_err(|e| io_error(a, e))
}

/// Removes the staging folders a killed writer left beside `target` (those whose process is
/// gone), and restores `target` if a two-rename switch was cut between its renames.
pub fn clean_staged(target: &Path) -> Result<()> {
    let parent = match target.parent().filter(|p| !p.as_os_str().is_empty()) {
        Some(p) => p.to_path_buf(),
        None => PathBuf::from("."),
    };
    let prefix = staged_prefix(target);
    let old = target.with_file_name(format!("{}old", prefix.trim_end_matches("staged-")));
    if old.exists() && !target.exists() {
        std::fs::rename(&old, target).map_err(|e| io_error(target, e))?;
    }
    let Ok(entries) = std::fs::read_dir(&parent) else {
        return Ok(());
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().to_string();
        let Some(rest) = name.strip_prefix(&prefix) else {
            continue;
        };
        let pid: u32 = rest
            .split('-')
            .next()
            .and_then(|p| p.parse().ok())
            .unwrap_or(0);
        let alive = pid == std::process::id()
            || (cfg!(target_os = "linux") && Path::new(&format!("/proc/{pid}")).exists());
        if !alive {
            std::fs::remove_dir_all(e.path()).map_err(|err| io_error(&e.path(), err))?;
        }
    }
    Ok(())
}

/// Removes temporary files (`NAME.tmpPID-N`, from [`write_atomic_with`]) that killed writers
/// left in `dir`.
pub fn clean_tmp_files(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().to_string();
        let Some((_, rest)) = name.rsplit_once(".tmp") else {
            continue;
        };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        let alive = pid == std::process::id()
            || (cfg!(target_os = "linux") && Path::new(&format!("/proc/{pid}")).exists());
        if !alive && e.path().is_file() {
            let _ = std::fs::remove_file(e.path());
        }
    }
}
