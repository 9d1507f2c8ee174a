//! [`FileStore`]: tokens in a JSON file, so that a CLI or a daemon keeps its session across
//! restarts (what `localStorage` is to a front end, for a process).
//!
//! A token file is a credential, so the store writes it the careful way: a temporary file in
//! the same directory, created readable by its owner only (mode 0600 on unix), written,
//! flushed to disk, then renamed over the old file. A crash or a full disk leaves either the
//! old file or the new one, never half of one, and the file is never readable by others, not
//! even for a moment. Errors name the path, never the contents.
//!
//! What the store refuses, and how:
//!
//! - Something other than a regular file at the path (a FIFO, a socket, a device, a
//!   directory; a symlink counts as what it points to): a [`Config`](ErrorKind::Config)
//!   error at once. It never opens a FIFO in a way that could block (the file type is checked
//!   with `symlink_metadata` first, the file opened non-blocking and checked again), so a
//!   misconfigured path cannot hang the refresh.
//! - A file that is not a token file (not JSON, a missing or mistyped field, more than
//!   64 KiB, a token with characters a request cannot carry such as a newline): a
//!   [`Decode`](ErrorKind::Decode) error naming the path. The file is left as it is, and a
//!   new login repairs it: `save` (what `TokenManager::set_tokens` calls) never reads the old
//!   file, so it overwrites it.
//! - Temporary files left behind by a writer that was killed mid-save
//!   (`.<name>.<pid>.<n>.tmp` beside the file) are removed by the next save: those of a
//!   process that no longer runs, and any older than a minute.

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::future::BoxFuture;
use serde::{Deserialize, Serialize};
use tokio::sync::{Mutex, OwnedMutexGuard};
use xhttp_core::{Error, ErrorKind};

use super::memory::stored_refresh_token;
use super::{StoredTokens, Swap, TokenStore};
use crate::Secret;

/// The largest token file read: 64 KiB, far above any real pair of tokens. A larger file is
/// not a token file.
const MAX_FILE_SIZE: u64 = 64 * 1024;

/// Makes temporary file names unique among the saves of this process.
static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// A temporary file older than this is a dead writer's, whatever its process id says: a
/// save writes a few hundred bytes and renames them in milliseconds.
const STALE_TEMP_AGE: Duration = Duration::from_secs(60);

/// Tokens in a JSON file:
/// `{"access_token": …, "refresh_token": …, "expires_at_unix_ms": …, "session": …}` (the
/// last three may be missing).
///
/// `save` and `swap` replace the file atomically (a temporary file, then a rename); loading a
/// missing file gives `None`; a file that is not a token file is an error of kind
/// [`Decode`](ErrorKind::Decode) naming the path. Other I/O failures are
/// [`Internal`](ErrorKind::Internal) errors with the `io::Error` as their cause.
///
/// `swap` runs under a lock of this `FileStore`, so it is a compare-and-swap among the users
/// of one `FileStore` value (share it in an `Arc`). It is **not** a lock between processes:
/// two processes sharing one file can still both refresh; give a fleet a store that locks
/// (such as Redis).
///
/// ```
/// use xhttp_auth::{FileStore, Secret, StoredTokens, TokenStore};
///
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// let dir = std::env::temp_dir().join(format!("xhttp-auth-doc-{}", std::process::id()));
/// std::fs::create_dir_all(&dir).unwrap();
/// let store = FileStore::new(dir.join("tokens.json"));
///
/// let tokens = StoredTokens::new(Secret::new("a1"), Some(Secret::new("r1")));
/// store.save(&tokens).await?;
/// assert_eq!(store.load().await?, Some(tokens));
/// assert!(!format!("{store:?}").contains("r1"));
///
/// store.clear().await?;
/// assert_eq!(store.load().await?, None);
/// # std::fs::remove_dir_all(&dir).unwrap();
/// # Ok::<(), xhttp_core::Error>(())
/// # }).unwrap();
/// ```
pub struct FileStore {
    path: Arc<Path>,
    /// Held by every write from start to end, inside the blocking task, so that a caller
    /// that gives up mid-write cannot let another write interleave.
    lock: Arc<Mutex<()>>,
}

impl FileStore {
    /// A store at `path`. Nothing is touched until the first call; the directory must exist.
    ///
    /// ```
    /// let store = xhttp_auth::FileStore::new("/var/lib/my-daemon/tokens.json");
    /// assert_eq!(store.path(), std::path::Path::new("/var/lib/my-daemon/tokens.json"));
    /// ```
    pub fn new(path: impl Into<PathBuf>) -> FileStore {
        FileStore {
            path: Arc::from(path.into()),
            lock: Arc::new(Mutex::new(())),
        }
    }

    /// The path of the token file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `io` on the blocking pool; with `locked`, under this store's lock.
    async fn blocking<T, F>(&self, locked: bool, io: F) -> Result<T, Error>
    where
        T: Send + 'static,
        F: FnOnce(&Path) -> Result<T, Error> + Send + 'static,
    {
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| {
            Error::config("the file token store runs on tokio: call it inside a tokio runtime")
        })?;
        let guard: Option<OwnedMutexGuard<()>> = if locked {
            Some(self.lock.clone().lock_owned().await)
        } else {
            None
        };
        let path = self.path.clone();
        runtime
            .spawn_blocking(move || {
                let result = io(&path);
                drop(guard);
                result
            })
            .await
            .map_err(|err| {
                Error::new(ErrorKind::Internal)
                    .with_message("the token file task failed")
                    .with_source(err)
            })?
    }
}

impl fmt::Debug for FileStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FileStore")
            .field("path", &self.path)
            .finish()
    }
}

impl TokenStore for FileStore {
    fn load(&self) -> BoxFuture<'_, Result<Option<StoredTokens>, Error>> {
        // A rename is atomic: a load without the lock sees the old file or the new one.
        Box::pin(self.blocking(false, read))
    }

    fn save<'a>(&'a self, tokens: &'a StoredTokens) -> BoxFuture<'a, Result<(), Error>> {
        let bytes = encode(tokens);
        Box::pin(async move {
            let bytes = bytes?;
            self.blocking(true, move |path| write(path, &bytes)).await
        })
    }

    fn swap<'a>(
        &'a self,
        expected: Option<&'a Secret>,
        new: &'a StoredTokens,
        _fence: Option<u64>,
    ) -> BoxFuture<'a, Result<Swap, Error>> {
        let expected = expected.cloned();
        let bytes = encode(new);
        Box::pin(async move {
            let bytes = bytes?;
            self.blocking(true, move |path| {
                let stored = read(path)?;
                if stored_refresh_token(&stored) != expected.as_ref() {
                    return Ok(Swap::Conflict(stored));
                }
                write(path, &bytes)?;
                Ok(Swap::Saved)
            })
            .await
        })
    }

    fn clear(&self) -> BoxFuture<'_, Result<(), Error>> {
        Box::pin(self.blocking(true, |path| match fs::remove_file(path) {
            Err(err) if err.kind() != io::ErrorKind::NotFound => Err(io_error("remove", path, err)),
            _ => Ok(()),
        }))
    }
}

/// The file's layout.
#[derive(Serialize, Deserialize)]
struct TokenFile {
    access_token: String,
    #[serde(default)]
    refresh_token: Option<String>,
    #[serde(default)]
    expires_at_unix_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    session: Option<String>,
}

fn encode(tokens: &StoredTokens) -> Result<Vec<u8>, Error> {
    let file = TokenFile {
        access_token: tokens.access_token.expose().to_owned(),
        refresh_token: tokens.refresh_token.as_ref().map(|t| t.expose().to_owned()),
        expires_at_unix_ms: tokens.expires_at.map(|at| {
            let since = at.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO);
            u64::try_from(since.as_millis()).unwrap_or(u64::MAX)
        }),
        session: tokens.session.clone(),
    };
    serde_json::to_vec(&file).map_err(|_| {
        Error::new(ErrorKind::Internal).with_message("could not encode the token file")
    })
}

/// Whether the path holds a regular file (following a symlink): `Ok(false)` when there is
/// nothing there, a `Config` error for a FIFO, a socket, a device or a directory.
fn check_file_type(path: &Path) -> Result<bool, Error> {
    let meta = match fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_symlink() => match fs::metadata(path) {
            Ok(target) => target,
            // A dangling symlink: nothing stored (a save replaces the link).
            Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(false),
            Err(err) => return Err(io_error("read", path, err)),
        },
        Ok(meta) => meta,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(err) => return Err(io_error("read", path, err)),
    };
    if !meta.file_type().is_file() {
        return Err(not_a_file(path));
    }
    Ok(true)
}

fn not_a_file(path: &Path) -> Error {
    Error::config(format!(
        "the token file path {} is not a regular file (a FIFO, socket, device or directory)",
        path.display()
    ))
}

fn read(path: &Path) -> Result<Option<StoredTokens>, Error> {
    if !check_file_type(path)? {
        return Ok(None);
    }
    let mut options = OpenOptions::new();
    options.read(true);
    #[cfg(unix)]
    {
        // Should the file be swapped for a FIFO after the check, opening it must not block
        // waiting for a writer.
        use std::os::unix::fs::OpenOptionsExt;
        options.custom_flags(libc::O_NONBLOCK);
    }
    let file = match options.open(path) {
        Ok(file) => file,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(err) => return Err(io_error("read", path, err)),
    };
    let is_file = file
        .metadata()
        .map_err(|err| io_error("read", path, err))?
        .is_file();
    if !is_file {
        return Err(not_a_file(path));
    }
    let mut bytes = Vec::new();
    file.take(MAX_FILE_SIZE + 1)
        .read_to_end(&mut bytes)
        .map_err(|err| io_error("read", path, err))?;
    if bytes.len() as u64 > MAX_FILE_SIZE {
        return Err(corrupt(path, "it is larger than 64 KiB"));
    }
    decode(&bytes, path).map(Some)
}

fn decode(bytes: &[u8], path: &Path) -> Result<StoredTokens, Error> {
    // serde's own message may quote the contents ("invalid type: string \"…\""): the
    // category and position only.
    let file: TokenFile = serde_json::from_slice(bytes)
        .map_err(|err| corrupt(path, &xhttp_core::json::describe_error(&err)))?;
    if file.access_token.is_empty() {
        return Err(corrupt(path, "its access_token is empty"));
    }
    let access_token = Secret::from(file.access_token);
    crate::token::check_access_token(&access_token).map_err(|why| corrupt(path, why))?;
    let refresh_token = file
        .refresh_token
        .filter(|t| !t.is_empty())
        .map(Secret::from);
    if let Some(refresh_token) = &refresh_token {
        crate::token::check_refresh_token(refresh_token).map_err(|why| corrupt(path, why))?;
    }
    let expires_at = match file.expires_at_unix_ms {
        None => None,
        Some(ms) => Some(
            UNIX_EPOCH
                .checked_add(Duration::from_millis(ms))
                .ok_or_else(|| corrupt(path, "expires_at_unix_ms is out of range"))?,
        ),
    };
    if let Some(session) = &file.session {
        super::check_session(session).map_err(|why| corrupt(path, why))?;
    }
    Ok(StoredTokens {
        access_token,
        refresh_token,
        expires_at,
        session: file.session,
    })
}

/// Replaces the file at `path` with `bytes`: temp file (0600), write, sync, rename.
fn write(path: &Path, bytes: &[u8]) -> Result<(), Error> {
    let Some(name) = path.file_name() else {
        return Err(Error::config(format!(
            "the token file path {} does not name a file",
            path.display()
        )));
    };
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    // A FIFO or a device is a misconfigured path: report it rather than rename over it.
    check_file_type(path)?;
    remove_stale_temps(dir, &name.to_string_lossy());
    let temp = dir.join(format!(
        ".{}.{}.{}.tmp",
        name.to_string_lossy(),
        std::process::id(),
        TEMP_COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let result = write_new(&temp, bytes).and_then(|()| fs::rename(&temp, path));
    if let Err(err) = result {
        let _ = fs::remove_file(&temp);
        return Err(io_error("write", path, err));
    }
    sync_dir(dir);
    Ok(())
}

/// Removes the temporary files of earlier saves that never finished (a writer killed between
/// creating and renaming). Best effort: a file that cannot be removed is left.
fn remove_stale_temps(dir: &Path, name: &str) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    let prefix = format!(".{name}.");
    for entry in entries.flatten() {
        let file_name = entry.file_name();
        let Some(rest) = file_name
            .to_str()
            .and_then(|n| n.strip_prefix(prefix.as_str()))
            .and_then(|n| n.strip_suffix(".tmp"))
        else {
            continue;
        };
        // `<pid>.<n>`
        let Some(pid) = rest
            .split_once('.')
            .filter(|(_, n)| n.bytes().all(|b| b.is_ascii_digit()) && !n.is_empty())
            .and_then(|(pid, _)| pid.parse::<u32>().ok())
        else {
            continue;
        };
        let age = entry
            .metadata()
            .ok()
            .and_then(|meta| meta.modified().ok())
            .and_then(|modified| SystemTime::now().duration_since(modified).ok())
            .unwrap_or(Duration::ZERO);
        if age > STALE_TEMP_AGE || !process_runs(pid) {
            let _ = fs::remove_file(entry.path());
        }
    }
}

/// Whether process `pid` still runs, where the system says so cheaply (`/proc` on Linux);
/// elsewhere every process is taken to run, and the age rule alone applies.
fn process_runs(pid: u32) -> bool {
    if pid == std::process::id() {
        return true;
    }
    #[cfg(target_os = "linux")]
    {
        Path::new("/proc").join(pid.to_string()).exists()
    }
    #[cfg(not(target_os = "linux"))]
    {
        true
    }
}

fn write_new(temp: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(temp)?;
    file.write_all(bytes)?;
    file.sync_all()
}

/// Makes the rename itself durable. Best effort: a directory that cannot be opened for
/// syncing still holds the new file.
fn sync_dir(dir: &Path) {
    #[cfg(unix)]
    if let Ok(dir) = File::open(dir) {
        let _ = dir.sync_all();
    }
    #[cfg(not(unix))]
    let _ = dir;
}

fn corrupt(path: &Path, why: &str) -> Error {
    Error::decode(format!(
        "the token file {} is not a token file: {why}",
        path.display()
    ))
}

fn io_error(action: &str, path: &Path, err: io::Error) -> Error {
    Error::new(ErrorKind::Internal)
        .with_message(format!(
            "could not {action} the token file {}",
            path.display()
        ))
        .with_source(err)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fresh directory under the system's temp dir, removed on drop.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(name: &str) -> TempDir {
            let dir = std::env::temp_dir().join(format!(
                "xhttp-auth-{name}-{}-{}",
                std::process::id(),
                TEMP_COUNTER.fetch_add(1, Ordering::Relaxed)
            ));
            fs::create_dir_all(&dir).unwrap();
            TempDir(dir)
        }

        fn entries(&self) -> Vec<String> {
            let mut names: Vec<String> = fs::read_dir(&self.0)
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            names.sort();
            names
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn tokens(access: &str, refresh: Option<&str>) -> StoredTokens {
        StoredTokens {
            access_token: Secret::new(access),
            refresh_token: refresh.map(Secret::new),
            expires_at: Some(UNIX_EPOCH + Duration::from_millis(1_700_000_000_123)),
            session: None,
        }
    }

    #[tokio::test]
    async fn tokens_round_trip_through_the_file() {
        let dir = TempDir::new("round-trip");
        let store = FileStore::new(dir.0.join("tokens.json"));
        assert_eq!(store.load().await.unwrap(), None);

        let saved = tokens("a1", Some("r1"));
        store.save(&saved).await.unwrap();
        assert_eq!(store.load().await.unwrap(), Some(saved));
        let text = fs::read_to_string(store.path()).unwrap();
        let json: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"access_token":"a1","refresh_token":"r1","expires_at_unix_ms":1_700_000_000_123u64})
        );

        let without = StoredTokens {
            access_token: Secret::new("a2"),
            refresh_token: None,
            expires_at: None,
            session: None,
        };
        store.save(&without).await.unwrap();
        assert_eq!(store.load().await.unwrap(), Some(without));

        // The login name round-trips; one that is not a name is a Decode error.
        let mut named = tokens("a3", Some("r3"));
        named.session = Some("login-42".to_owned());
        store.save(&named).await.unwrap();
        assert_eq!(store.load().await.unwrap(), Some(named));
        for bad in ["", "two words", &"x".repeat(129)] {
            let body = serde_json::json!({"access_token": "a4", "session": bad});
            fs::write(store.path(), body.to_string()).unwrap();
            let err = store.load().await.unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Decode, "{bad:?}");
        }
    }

    #[cfg(unix)]
    #[tokio::test]
    async fn the_file_is_readable_by_its_owner_only() {
        use std::os::unix::fs::PermissionsExt;
        let dir = TempDir::new("mode");
        let path = dir.0.join("tokens.json");
        // An older file with loose permissions is replaced, not rewritten in place.
        fs::write(&path, "{}").unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        let store = FileStore::new(&path);
        store.save(&tokens("a", Some("r"))).await.unwrap();
        let mode = fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "{mode:o}");
    }

    #[tokio::test]
    async fn saves_replace_the_file_and_leave_no_temporary_files() {
        let dir = TempDir::new("atomic");
        let store = Arc::new(FileStore::new(dir.0.join("tokens.json")));
        let mut tasks = Vec::new();
        for i in 0..20 {
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                let refresh = format!("r{i}");
                store
                    .save(&tokens(&format!("a{i}"), Some(&refresh)))
                    .await
                    .unwrap();
            }));
        }
        for task in tasks {
            task.await.unwrap();
        }
        assert_eq!(dir.entries(), ["tokens.json"]);
        // Whichever save came last, the file holds one whole pair.
        let loaded = store.load().await.unwrap().unwrap();
        let n = &loaded.access_token.expose()[1..];
        assert_eq!(loaded.refresh_token.unwrap().expose(), format!("r{n}"));
    }

    #[tokio::test]
    async fn a_failed_save_leaves_no_temporary_file_and_names_the_path() {
        let dir = TempDir::new("failed");
        // The target is a directory: refused as no regular file, before any temp file.
        let target = dir.0.join("tokens.json");
        fs::create_dir(&target).unwrap();
        fs::write(target.join("keep"), "x").unwrap();
        let store = FileStore::new(&target);
        let err = store
            .save(&tokens("SECRET-AT-123", None))
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Config);
        assert!(err.to_string().contains("tokens.json"), "{err}");
        assert!(!format!("{err} {err:?}").contains("SECRET-AT-123"));
        assert_eq!(dir.entries(), ["tokens.json"]);
    }

    #[tokio::test]
    async fn a_corrupt_file_is_a_decode_error_naming_the_path_not_the_contents() {
        let dir = TempDir::new("corrupt");
        let path = dir.0.join("tokens.json");
        let store = FileStore::new(&path);
        for contents in [
            "SECRET-RT-123 not json",
            r#"{"access_token": 5, "refresh_token": "SECRET-RT-123"}"#,
            r#"{"refresh_token": "SECRET-RT-123"}"#,
            r#"{"access_token": "SECRET-RT-123", "expires_at_unix_ms": "SECRET-RT-123"}"#,
            r#"{"access_token": "", "refresh_token": "SECRET-RT-123"}"#,
            r#"{"access_token": "SECRET-RT-123""#,
        ] {
            fs::write(&path, contents).unwrap();
            let err = store.load().await.unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Decode, "{contents}");
            let shown = format!("{err} {err:?}");
            assert!(shown.contains("tokens.json"), "{shown}");
            assert!(!shown.contains("SECRET-RT-123"), "{shown}");
        }
        fs::write(&path, vec![b' '; MAX_FILE_SIZE as usize + 1]).unwrap();
        assert_eq!(store.load().await.unwrap_err().kind(), ErrorKind::Decode);
    }

    /// Makes a FIFO with the system's `mkfifo`; `false` when the command is missing.
    #[cfg(unix)]
    fn mkfifo(path: &Path) -> bool {
        match std::process::Command::new("mkfifo").arg(path).status() {
            Ok(status) => status.success(),
            Err(_) => false,
        }
    }

    #[cfg(unix)]
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_fifo_at_the_path_is_a_config_error_not_a_hang() {
        let dir = TempDir::new("fifo");
        let path = dir.0.join("tokens.json");
        if !mkfifo(&path) {
            eprintln!("skipped: no mkfifo command");
            return;
        }
        let store = FileStore::new(&path);
        let bounded = Duration::from_secs(5);
        let load = tokio::time::timeout(bounded, store.load()).await;
        let err = load.expect("load must not hang on a FIFO").unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Config, "{err}");
        assert!(err.to_string().contains("tokens.json"), "{err}");
        let pair = tokens("a1", Some("r1"));
        let swap = tokio::time::timeout(bounded, store.swap(None, &pair, None));
        assert_eq!(swap.await.unwrap().unwrap_err().kind(), ErrorKind::Config);
        let save = tokio::time::timeout(bounded, store.save(&pair));
        assert_eq!(save.await.unwrap().unwrap_err().kind(), ErrorKind::Config);
        // Through a symlink too: the link counts as what it points to.
        let link = dir.0.join("link.json");
        std::os::unix::fs::symlink(&path, &link).unwrap();
        let load = tokio::time::timeout(bounded, FileStore::new(&link).load()).await;
        assert_eq!(load.unwrap().unwrap_err().kind(), ErrorKind::Config);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn a_fifo_opened_after_the_check_does_not_block() {
        // The race the type check cannot close: the read itself opens non-blocking.
        let dir = TempDir::new("fifo-race");
        let path = dir.0.join("tokens.json");
        if !mkfifo(&path) {
            return;
        }
        use std::os::unix::fs::OpenOptionsExt;
        let file = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&path)
            .unwrap();
        assert!(!file.metadata().unwrap().is_file());
    }

    #[tokio::test]
    async fn temp_files_of_a_killed_writer_are_removed_by_the_next_save() {
        let dir = TempDir::new("stale-temps");
        let path = dir.0.join("tokens.json");
        // A writer that died mid-save (no such process), one of a live writer that is old,
        // and one of a live writer in progress (this process, just now).
        let dead = dir.0.join(".tokens.json.999999999.0.tmp");
        let old = dir
            .0
            .join(format!(".tokens.json.{}.77.tmp", std::process::id()));
        let fresh = dir
            .0
            .join(format!(".tokens.json.{}.78.tmp", std::process::id()));
        let unrelated = dir.0.join(".other.json.999999999.0.tmp");
        for file in [&dead, &old, &fresh, &unrelated] {
            fs::write(file, r#"{"access_token":"SECRET-AT-half"#).unwrap();
        }
        let long_ago = SystemTime::now() - Duration::from_secs(3600);
        File::options()
            .write(true)
            .open(&old)
            .unwrap()
            .set_modified(long_ago)
            .unwrap();
        let store = FileStore::new(&path);
        store.save(&tokens("a1", Some("r1"))).await.unwrap();
        let left = dir.entries();
        assert_eq!(
            left,
            [
                ".other.json.999999999.0.tmp".to_string(),
                format!(".tokens.json.{}.78.tmp", std::process::id()),
                "tokens.json".to_string(),
            ]
        );
    }

    #[tokio::test]
    async fn a_corrupt_file_is_recovered_by_a_new_login() {
        let dir = TempDir::new("recover");
        let path = dir.0.join("tokens.json");
        fs::write(&path, "{\"access_token\": \"SECRET-AT-\nbroken\"}").unwrap();
        let store = FileStore::new(&path);
        let err = store.load().await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Decode);
        assert!(!format!("{err} {err:?}").contains("SECRET"), "{err:?}");
        // A swap refuses to overwrite what it cannot read ...
        assert_eq!(
            store
                .swap(None, &tokens("a1", Some("r1")), None)
                .await
                .unwrap_err()
                .kind(),
            ErrorKind::Decode
        );
        // ... a login (save) overwrites it, and the store works again.
        store.save(&tokens("a2", Some("r2"))).await.unwrap();
        assert_eq!(store.load().await.unwrap(), Some(tokens("a2", Some("r2"))));
    }

    #[tokio::test]
    async fn a_stored_token_no_header_can_carry_is_a_decode_error() {
        let dir = TempDir::new("bad-token");
        let path = dir.0.join("tokens.json");
        let store = FileStore::new(&path);
        for contents in [
            r#"{"access_token":"SECRET-AT\nX"}"#,
            r#"{"access_token":"SECRET AT"}"#,
            r#"{"access_token":"SECRET-AT\u0000"}"#,
            r#"{"access_token":"ok-token","refresh_token":"SECRET-RT\r\n"}"#,
        ] {
            fs::write(&path, contents).unwrap();
            let err = store.load().await.unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Decode, "{contents}");
            assert!(!format!("{err} {err:?}").contains("SECRET"), "{err:?}");
        }
    }

    #[test]
    fn calls_outside_a_tokio_runtime_are_config_errors() {
        let store = FileStore::new("/nonexistent/tokens.json");
        let err = futures_util::FutureExt::now_or_never(store.load())
            .expect("fails at once")
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Config);
    }

    #[tokio::test]
    async fn swap_is_a_compare_and_swap_on_the_refresh_token() {
        let dir = TempDir::new("swap");
        crate::store::contract::swap_is_a_compare_and_swap(&FileStore::new(
            dir.0.join("tokens.json"),
        ))
        .await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_swaps_from_one_token_store_exactly_one() {
        let dir = TempDir::new("swap-race");
        let store = Arc::new(FileStore::new(dir.0.join("tokens.json")));
        store.save(&tokens("a0", Some("r0"))).await.unwrap();
        let mut tasks = Vec::new();
        for i in 0..16 {
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                let refresh = format!("r{}", i + 1);
                store
                    .swap(
                        Some(&Secret::new("r0")),
                        &tokens(&format!("a{}", i + 1), Some(&refresh)),
                        None,
                    )
                    .await
                    .unwrap()
            }));
        }
        let mut saved = 0;
        for task in tasks {
            if task.await.unwrap() == Swap::Saved {
                saved += 1;
            }
        }
        assert_eq!(saved, 1);
    }

    #[tokio::test]
    async fn clear_removes_the_file_and_a_missing_file_is_fine() {
        let dir = TempDir::new("clear");
        let store = FileStore::new(dir.0.join("tokens.json"));
        store.clear().await.unwrap();
        store.save(&tokens("a", Some("r"))).await.unwrap();
        store.clear().await.unwrap();
        assert_eq!(store.load().await.unwrap(), None);
        assert!(dir.entries().is_empty());
    }

    #[test]
    fn debug_prints_the_path_only() {
        let store = FileStore::new("/tmp/tokens.json");
        assert_eq!(
            format!("{store:?}"),
            r#"FileStore { path: "/tmp/tokens.json" }"#
        );
    }
}
