//! [`FileStore`]: tokens in a JSON file, so that a CLI or a daemon keeps its session across
//! restarts (the seeds' `localStorage`, for a process).
//!
//! A token file is a credential, so the store writes it the careful way: a temporary file in
//! the same directory, created readable by its owner only (mode 0600 on unix), written,
//! flushed to disk, then renamed over the old file. A crash or a full disk leaves either the
//! old file or the new one, never half of one, and the file is never readable by others, not
//! even for a moment. Errors name the path, never the contents.

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

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

/// Tokens in a JSON file: `{"access_token": …, "refresh_token": …, "expires_at_unix_ms": …}`.
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
/// let tokens = StoredTokens {
///     access_token: Secret::new("a1"),
///     refresh_token: Some(Secret::new("r1")),
///     expires_at: None,
/// };
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
        let guard: Option<OwnedMutexGuard<()>> = if locked {
            Some(self.lock.clone().lock_owned().await)
        } else {
            None
        };
        let path = self.path.clone();
        tokio::task::spawn_blocking(move || {
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
}

fn encode(tokens: &StoredTokens) -> Result<Vec<u8>, Error> {
    let file = TokenFile {
        access_token: tokens.access_token.expose().to_owned(),
        refresh_token: tokens.refresh_token.as_ref().map(|t| t.expose().to_owned()),
        expires_at_unix_ms: tokens.expires_at.map(|at| {
            let since = at.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO);
            u64::try_from(since.as_millis()).unwrap_or(u64::MAX)
        }),
    };
    serde_json::to_vec(&file).map_err(|_| {
        Error::new(ErrorKind::Internal).with_message("could not encode the token file")
    })
}

fn read(path: &Path) -> Result<Option<StoredTokens>, Error> {
    let file = match File::open(path) {
        Ok(file) => file,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(err) => return Err(io_error("read", path, err)),
    };
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
    let file: TokenFile = serde_json::from_slice(bytes).map_err(|err| {
        // serde's own message may quote the contents ("invalid type: string \"…\""): say
        // only what kind of problem it is and where.
        let what = match err.classify() {
            serde_json::error::Category::Syntax | serde_json::error::Category::Io => {
                "it is not valid JSON"
            }
            serde_json::error::Category::Eof => "it ends too early",
            serde_json::error::Category::Data => "a field is missing or has the wrong type",
        };
        corrupt(
            path,
            &format!("{what} (line {}, column {})", err.line(), err.column()),
        )
    })?;
    if file.access_token.is_empty() {
        return Err(corrupt(path, "its access_token is empty"));
    }
    let expires_at = match file.expires_at_unix_ms {
        None => None,
        Some(ms) => Some(
            UNIX_EPOCH
                .checked_add(Duration::from_millis(ms))
                .ok_or_else(|| corrupt(path, "expires_at_unix_ms is out of range"))?,
        ),
    };
    Ok(StoredTokens {
        access_token: Secret::from(file.access_token),
        refresh_token: file
            .refresh_token
            .filter(|t| !t.is_empty())
            .map(Secret::from),
        expires_at,
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
        };
        store.save(&without).await.unwrap();
        assert_eq!(store.load().await.unwrap(), Some(without));
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
        // The target is a directory: the rename fails after the temp file was written.
        let target = dir.0.join("tokens.json");
        fs::create_dir(&target).unwrap();
        fs::write(target.join("keep"), "x").unwrap();
        let store = FileStore::new(&target);
        let err = store
            .save(&tokens("SECRET-AT-123", None))
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Internal);
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
