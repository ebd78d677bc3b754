//! Where a resumable upload's state is kept between runs.
//!
//! By default one file per upload in the per-user state folder (`$XDG_STATE_HOME/resumable`,
//! else `~/.local/state/resumable`), named by a SHA-256 of what identifies the upload: the
//! protocol, the file's absolute path, size and modification time, and the URL. The file holds
//! the session URI, a bearer capability, so it is written with mode 0600 in a 0700 folder,
//! atomically (temporary file, then rename), and removed when the upload succeeds.
//!
//! It is saved before every request and after every response. The rename alone makes each save
//! survive a killed process. Flushing to the disk (fsync) costs milliseconds: for GCS, whose
//! resume asks the server what it holds, it is done at most once a second (after a power loss
//! the state may be a chunk behind the server, and the resume goes on from what the server
//! holds); for TON, media and compliance, which cannot ask, every save is flushed.
//!
//! A state records what it is for: the protocol, the destination (a SHA-256 of the URL, which
//! may hold a signature, and the URL without its query for messages) and the input's
//! fingerprint; a state used for anything else is refused. While an upload runs, a lock file
//! beside the state (`<state>.lock`, holding the pid) keeps a second run off it.

use std::fs;
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use resumable_core::SavedState;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

/// The saved state of one upload.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Saved {
    /// Format version; a file of another version is ignored.
    pub version: u32,
    /// Which protocol the state is for ("gcs", "ton", "media", "compliance"); the same as the
    /// tag of `state`, kept for files written before it was a tag.
    pub protocol: String,
    /// Where the upload goes. States written before this field existed have none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destination: Option<Destination>,
    /// The core's resume state, under the protocol's name.
    #[serde(flatten)]
    pub state: SavedState,
}

impl Saved {
    /// A state of the current version; what it is for is filled in when it is saved.
    pub fn new(state: SavedState) -> Self {
        Saved {
            version: VERSION,
            protocol: state.protocol().to_owned(),
            destination: None,
            state,
        }
    }
}

/// Where an upload goes, as a state records it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Destination {
    /// SHA-256 (hex) of what identifies the destination: the URL as given, and any option that
    /// changes where the bytes go.
    pub digest: String,
    /// The URL without its query or user information, for messages.
    pub shown: String,
}

impl Destination {
    /// The destination `key` (the URL and options), shown as `url` without its query.
    pub fn new(key: &str, url: &str) -> Self {
        let digest = Sha256::digest(key.as_bytes());
        Destination {
            digest: digest.iter().map(|b| format!("{b:02x}")).collect(),
            shown: crate::run::redact_query(url),
        }
    }
}

/// The current format version.
pub const VERSION: u32 = 1;

/// The per-user state folder: `$XDG_STATE_HOME/resumable`, else `~/.local/state/resumable`.
pub fn folder() -> io::Result<PathBuf> {
    let base = std::env::var_os("XDG_STATE_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .or_else(|| dirs::home_dir().map(|h| h.join(".local").join("state")))
        .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no home folder for the state"))?;
    Ok(base.join("resumable"))
}

/// The default state file for an upload identified by `key` (protocol, path, size, mtime, URL).
pub fn default_path(key: &str) -> io::Result<PathBuf> {
    let digest = Sha256::digest(key.as_bytes());
    let name: String = digest.iter().take(16).map(|b| format!("{b:02x}")).collect();
    Ok(folder()?.join(format!("{name}.json")))
}

/// Whether another run holds the state at `state` now.
pub fn in_use(state: &Path) -> bool {
    let mut name = state.as_os_str().to_owned();
    name.push(".lock");
    Path::new(&name).exists() && matches!(Lock::acquire(state), Err(LockError::InUse(_)))
}

/// Reads a saved state; `Ok(None)` when there is none or it is of another version.
pub fn load(path: &Path) -> io::Result<Option<Saved>> {
    let text = match fs::read(path) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    match serde_json::from_slice::<Saved>(&text) {
        Ok(saved) if saved.version == VERSION => Ok(Some(saved)),
        Ok(_) => Ok(None),
        Err(e) => Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("the state file is not valid: {e}"),
        )),
    }
}

/// How often a save is also flushed to the disk.
const SYNC_EVERY: Duration = Duration::from_secs(1);

/// When a save was last flushed to the disk (one process, one upload at a time).
static LAST_SYNC: Mutex<Option<Instant>> = Mutex::new(None);

/// Writes the state atomically with owner-only permissions; flushes it to the disk when
/// `durable`, else when the last flush is more than a second old.
pub fn save(path: &Path, saved: &Saved, durable: bool) -> io::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        create_private_dir(dir)?;
    }
    let text = serde_json::to_vec_pretty(saved).map_err(io::Error::other)?;
    let tmp = path.with_extension("json.tmp");
    {
        let mut file = private_file(&tmp)?;
        file.write_all(&text)?;
        let mut last = LAST_SYNC.lock().unwrap_or_else(|e| e.into_inner());
        if durable || last.is_none_or(|t| t.elapsed() >= SYNC_EVERY) {
            file.sync_all()?;
            *last = Some(Instant::now());
        }
    }
    fs::rename(&tmp, path)?;
    if durable {
        // The rename itself is durable only once the folder is flushed.
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            fs::File::open(dir)?.sync_all()?;
        }
    }
    Ok(())
}

/// A lock on a state file for the length of one run: `<state>.lock`, locked by the operating
/// system (released when the process ends, however it ends) and holding the owner's pid.
#[derive(Debug)]
pub struct Lock {
    _file: fs::File,
    path: PathBuf,
}

/// Why a state file could not be locked.
#[derive(Debug)]
pub enum LockError {
    /// Another run holds it; its pid, when the lock file says.
    InUse(Option<u32>),
    /// The lock file could not be created or locked.
    Io(io::Error),
}

impl Lock {
    /// Locks the state at `state` (creating its folder and the lock file when needed), without
    /// waiting.
    pub fn acquire(state: &Path) -> Result<Lock, LockError> {
        if let Some(dir) = state.parent().filter(|d| !d.as_os_str().is_empty()) {
            create_private_dir(dir).map_err(LockError::Io)?;
        }
        let mut name = state.as_os_str().to_owned();
        name.push(".lock");
        let path = PathBuf::from(name);
        let mut file = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(LockError::Io)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => {
                let mut text = String::new();
                let _ = io::Read::read_to_string(&mut file, &mut text);
                return Err(LockError::InUse(text.trim().parse().ok()));
            }
            Err(fs::TryLockError::Error(e)) => return Err(LockError::Io(e)),
        }
        file.set_len(0).map_err(LockError::Io)?;
        write!(file, "{}", std::process::id()).map_err(LockError::Io)?;
        Ok(Lock { _file: file, path })
    }

    /// Removes the lock file (after success, with the state); the lock itself goes with the
    /// process.
    pub fn remove(&self) {
        let _ = fs::remove_file(&self.path);
    }
}

/// Removes the state (after success, or when it can no longer be resumed).
pub fn remove(path: &Path) {
    let _ = fs::remove_file(path);
}

#[cfg(unix)]
fn private_file(path: &Path) -> io::Result<fs::File> {
    use std::os::unix::fs::OpenOptionsExt as _;
    fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
}

#[cfg(not(unix))]
fn private_file(path: &Path) -> io::Result<fs::File> {
    fs::File::create(path)
}

#[cfg(unix)]
fn create_private_dir(dir: &Path) -> io::Result<()> {
    use std::os::unix::fs::DirBuilderExt as _;
    if dir.is_dir() {
        return Ok(());
    }
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

#[cfg(not(unix))]
fn create_private_dir(dir: &Path) -> io::Result<()> {
    fs::create_dir_all(dir)
}

#[cfg(test)]
mod tests {
    use super::*;
    use resumable_core::SessionUri;
    use resumable_core::gcs::ResumeState;

    fn saved() -> Saved {
        Saved::new(SavedState::Gcs(ResumeState {
            session: SessionUri::parse("http://127.0.0.1:1/s?upload_id=x").unwrap(),
            total: Some(10),
            persisted: 4,
            sent: Some(8),
            crc32c: None,
            fingerprint: "f".into(),
            foreign: false,
        }))
    }

    // A state file written before the state was a tagged value reads the same: the protocol's
    // state under its name, beside the protocol field.
    #[test]
    fn the_state_file_format_is_unchanged() {
        let text = serde_json::to_value(saved()).unwrap();
        assert_eq!(text["protocol"], "gcs");
        assert_eq!(text["gcs"]["persisted"], 4);
        assert_eq!(text["gcs"]["sent"], 8);
        let old = r#"{"version":1,"protocol":"ton","ton":{"location":"http://127.0.0.1:1/t/1",
            "total":10,"persisted":4,"sent":4,"min_chunk":1,"max_chunk":4,"expires":null,
            "fingerprint":"f"}}"#;
        match serde_json::from_str::<Saved>(old) {
            Ok(Saved {
                state: SavedState::Ton(ton),
                ..
            }) => assert_eq!(ton.persisted, 4),
            other => panic!("an older TON state did not read: {other:?}"),
        }
    }

    #[test]
    fn state_round_trips_with_owner_only_permissions() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub").join("s.json");
        assert_eq!(load(&path).unwrap(), None);
        save(&path, &saved(), false).unwrap();
        assert_eq!(load(&path).unwrap(), Some(saved()));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
        }
        remove(&path);
        assert_eq!(load(&path).unwrap(), None);
    }

    #[test]
    fn default_path_depends_on_every_part_of_the_key() {
        let a = default_path("gcs|/a|10|1|http://x").unwrap();
        let b = default_path("gcs|/a|10|2|http://x").unwrap();
        assert_ne!(a, b);
        assert!(a.to_string_lossy().contains("resumable"));
    }

    #[test]
    fn a_second_lock_on_a_state_names_the_holder() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.json");
        let held = Lock::acquire(&path).unwrap();
        match Lock::acquire(&path) {
            Err(LockError::InUse(pid)) => assert_eq!(pid, Some(std::process::id())),
            other => panic!("expected in use, got {other:?}"),
        }
        drop(held);
        assert!(Lock::acquire(&path).is_ok(), "released with its holder");
    }

    #[test]
    fn a_corrupt_state_is_an_error_not_a_fresh_start() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.json");
        fs::write(&path, b"{not json").unwrap();
        assert_eq!(load(&path).unwrap_err().kind(), io::ErrorKind::InvalidData);
    }
}
