//! `resumable sessions`: the resume states kept in the per-user state folder (not those given
//! with `--state PATH`), what each is for and how far it came; `--forget ID` and `--prune`
//! remove them.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use clap::Args;
use resumable_core::SavedState;
use resumable_core::compliance::SavedPhase;

use crate::Failure;
use crate::output::print_result;
use crate::run::{unix_now, usage};
use crate::size::human;
use crate::state::{self, Saved};

/// States older than this are pruned whatever their protocol: no service in this tool keeps
/// an unfinished upload longer (a GCS session lives a week).
const MAX_AGE: Duration = Duration::from_secs(7 * 24 * 3600);

/// Arguments of `resumable sessions`.
#[derive(Args, Debug)]
pub struct SessionsArgs {
    /// Remove the saved state whose id starts with ID (at least 4 characters). The upload on
    /// the server is left as it is: to end it there, run the upload again with --cancel.
    #[arg(long, value_name = "ID", conflicts_with = "prune")]
    forget: Option<String>,
    /// Remove every saved state that can no longer be resumed: expired, or older than a week.
    #[arg(long)]
    prune: bool,
    /// Print the list as one JSON array on stdout.
    #[arg(long)]
    json: bool,
}

/// One state file of the folder.
struct Entry {
    id: String,
    path: PathBuf,
    age: Duration,
    saved: Option<Saved>,
}

impl Entry {
    /// What the state is for and how far it came; `None` for a file that could not be read.
    fn progress(&self) -> Option<(u64, Option<u64>)> {
        Some(match &self.saved.as_ref()?.state {
            SavedState::Gcs(s) => (s.persisted, s.total),
            SavedState::Ton(s) => (s.persisted, Some(s.total)),
            SavedState::Media(s) => (s.next_offset, Some(s.total)),
            SavedState::Compliance(s) => match (&s.phase, &s.gcs) {
                (SavedPhase::Poll, _) => (s.total.unwrap_or(0), s.total),
                (_, Some(g)) => (g.persisted, s.total),
                (_, None) => (0, s.total),
            },
            SavedState::S3(s) => (s.parts.iter().map(|p| p.size).sum(), Some(s.total)),
            SavedState::Tus(s) => (s.persisted, s.total),
            #[allow(unreachable_patterns)]
            _ => return None,
        })
    }

    /// Whether the state can no longer be resumed: its own expiry passed, or it is older than
    /// [`MAX_AGE`], or it cannot be read.
    fn stale(&self) -> bool {
        let Some(saved) = &self.saved else {
            return true;
        };
        let now = unix_now();
        let past = |date: &Option<String>| {
            date.as_deref()
                .and_then(|d| httpdate::parse_http_date(d).ok())
                .and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
                .is_some_and(|t| t.as_secs() <= now)
        };
        self.age > MAX_AGE
            || match &saved.state {
                SavedState::Ton(s) => past(&s.expires),
                SavedState::Media(s) => s.is_expired(now),
                SavedState::Tus(s) => past(&s.expires),
                _ => false,
            }
    }

    fn destination(&self) -> String {
        self.saved
            .as_ref()
            .and_then(|s| s.destination.as_ref())
            .map_or_else(|| "(unknown)".to_owned(), |d| d.shown.clone())
    }

    fn protocol(&self) -> &str {
        self.saved
            .as_ref()
            .map_or("(unreadable)", |s| s.protocol.as_str())
    }
}

fn entries(folder: &Path) -> Result<Vec<Entry>, Failure> {
    let read = match fs::read_dir(folder) {
        Ok(read) => read,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(usage(format!("cannot read {}: {e}", folder.display()))),
    };
    let mut list = Vec::new();
    for entry in read.flatten() {
        let path = entry.path();
        if path.extension().is_none_or(|e| e != "json") {
            continue;
        }
        let Some(id) = path.file_stem().map(|s| s.to_string_lossy().into_owned()) else {
            continue;
        };
        let age = entry
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .unwrap_or_default();
        let saved = state::load(&path).ok().flatten();
        list.push(Entry {
            id,
            path,
            age,
            saved,
        });
    }
    list.sort_by_key(|e| e.age);
    Ok(list)
}

fn age_in_words(age: Duration) -> String {
    let s = age.as_secs();
    match s {
        0..60 => format!("{s} s"),
        60..3600 => format!("{} min", s / 60),
        3600..86_400 => format!("{} h", s / 3600),
        _ => format!("{} days", s / 86_400),
    }
}

/// Runs `resumable sessions`.
pub fn run(args: SessionsArgs) -> Result<(), Failure> {
    let folder = state::folder().map_err(|e| usage(format!("no state folder: {e}")))?;
    let list = entries(&folder)?;
    if let Some(prefix) = &args.forget {
        if prefix.len() < 4 {
            return Err(usage("--forget needs at least 4 characters of the id"));
        }
        let matching: Vec<&Entry> = list.iter().filter(|e| e.id.starts_with(prefix)).collect();
        let entry = match matching.as_slice() {
            [one] => *one,
            [] => {
                return Err(usage(format!(
                    "no saved upload has an id starting {prefix}"
                )));
            }
            _ => {
                return Err(usage(format!(
                    "several saved uploads have ids starting {prefix}"
                )));
            }
        };
        if state::in_use(&entry.path) {
            return Err(usage(format!("{} is in use by a running upload", entry.id)));
        }
        remove(&entry.path);
        return print_result(&format!("forgot {} ({})", entry.id, entry.destination()));
    }
    if args.prune {
        let mut removed = 0;
        for entry in list.iter().filter(|e| e.stale() && !state::in_use(&e.path)) {
            remove(&entry.path);
            eprintln!("removed {} ({})", entry.id, entry.destination());
            removed += 1;
        }
        return print_result(&format!(
            "removed {removed} of {} saved uploads",
            list.len()
        ));
    }
    if args.json {
        let items: Vec<_> = list
            .iter()
            .map(|e| {
                let (held, total) = e.progress().unzip();
                serde_json::json!({
                    "id": e.id,
                    "protocol": e.protocol(),
                    "destination": e.destination(),
                    "bytes_persisted": held,
                    "total": total.flatten(),
                    "age_seconds": e.age.as_secs(),
                    "in_use": state::in_use(&e.path),
                    "stale": e.stale(),
                    "state_file": e.path.display().to_string(),
                })
            })
            .collect();
        return print_result(&serde_json::Value::Array(items).to_string());
    }
    if list.is_empty() {
        return print_result(&format!("no saved uploads in {}", folder.display()));
    }
    let mut text = String::new();
    for e in &list {
        let progress = match e.progress() {
            Some((held, Some(total))) => format!("{} of {}", human(held), human(total)),
            Some((held, None)) => format!("{} of a stream", human(held)),
            None => "-".to_owned(),
        };
        let mut flags = String::new();
        if state::in_use(&e.path) {
            flags.push_str(", in use");
        }
        if e.stale() {
            flags.push_str(", stale");
        }
        text.push_str(&format!(
            "{}  {:<10} {}  {progress}, {} old{flags}\n",
            &e.id[..e.id.len().min(12)],
            e.protocol(),
            e.destination(),
            age_in_words(e.age),
        ));
    }
    print_result(text.trim_end())
}

/// Removes a state file and its lock file.
fn remove(path: &Path) {
    state::remove(path);
    let mut lock = path.as_os_str().to_owned();
    lock.push(".lock");
    let _ = fs::remove_file(PathBuf::from(lock));
}
