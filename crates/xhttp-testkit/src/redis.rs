//! A real `redis-server` on a free loopback port, for tests of the Redis token store.
//!
//! The server runs with no persistence in a temporary directory and is killed when the
//! handle drops. It can be frozen ([`RedisServer::pause`], `SIGSTOP`: connections stay open
//! and nothing answers, a slow Redis at its worst) and thawed, and stopped for good
//! ([`RedisServer::stop`]: an unreachable Redis).
//!
//! When there is no `redis-server` on the `PATH`, the first start installs Debian's
//! package with `apt-get` if the process runs as root (as CI and a fresh machine's tests do),
//! unless [`NO_INSTALL_ENV`] is set; otherwise it fails saying what to install.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The environment variable naming the server binary (default `redis-server` on the `PATH`;
/// `valkey-server` works too).
pub const REDIS_SERVER_ENV: &str = "XHTTP_REDIS_SERVER";

/// Set to anything, keeps [`RedisServer::start`] from installing a missing `redis-server`.
pub const NO_INSTALL_ENV: &str = "XHTTP_NO_INSTALL";

/// Installs Debian's `redis-server` when `binary` is the default and cannot be found, once
/// per process; the outcome of that one attempt for every caller.
fn ensure_installed(binary: &str) -> Result<(), String> {
    static ATTEMPT: std::sync::OnceLock<Result<(), String>> = std::sync::OnceLock::new();
    let found = |name: &str| {
        Command::new(name)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok()
    };
    if found(binary) {
        return Ok(());
    }
    let missing = format!(
        "cannot run {binary}: install Redis (apt-get install redis-server; .ci/run does) or \
         set {REDIS_SERVER_ENV}"
    );
    if binary != "redis-server" || std::env::var_os(NO_INSTALL_ENV).is_some() {
        return Err(missing);
    }
    ATTEMPT
        .get_or_init(|| {
            let root = Command::new("id")
                .arg("-u")
                .output()
                .is_ok_and(|out| out.stdout.starts_with(b"0"));
            if !root || !found("apt-get") {
                return Err(missing.clone());
            }
            eprintln!("xhttp-testkit: installing redis-server with apt-get (tests need one)");
            let install = || {
                Command::new("apt-get")
                    .args(["install", "-y", "--no-install-recommends"])
                    .args(["-o", "DPkg::Lock::Timeout=300", "redis-server"])
                    .env("DEBIAN_FRONTEND", "noninteractive")
                    .stdout(Stdio::null())
                    .status()
                    .is_ok_and(|status| status.success())
            };
            let updated = || {
                Command::new("apt-get")
                    .args(["update", "-o", "DPkg::Lock::Timeout=300"])
                    .stdout(Stdio::null())
                    .status()
                    .is_ok_and(|status| status.success())
            };
            if install() || (updated() && install()) {
                Ok(())
            } else {
                Err(format!("{missing} (apt-get install redis-server failed)"))
            }
        })
        .clone()
}

/// A `redis-server` child process on `127.0.0.1`.
///
/// ```no_run
/// let redis = xhttp_testkit::RedisServer::start().expect("redis-server is installed");
/// println!("{}", redis.url());
/// ```
pub struct RedisServer {
    child: Option<Child>,
    addr: SocketAddr,
    password: Option<String>,
    /// The certificate chain and key of a TLS-only server.
    tls: Option<(PathBuf, PathBuf)>,
    dir: PathBuf,
}

impl RedisServer {
    /// Starts a server with no password. Fails with a message saying what to install when
    /// there is no server binary, or with the server's own words when it does not start.
    pub fn start() -> Result<RedisServer, String> {
        RedisServer::start_with(None)
    }

    /// Starts a server that requires `password` (`AUTH`), when given.
    pub fn start_with(password: Option<&str>) -> Result<RedisServer, String> {
        RedisServer::launch(password, None)
    }

    /// Starts a server that speaks TLS only, with this certificate chain and key (PEM
    /// files), not asking clients for certificates; [`url`](Self::url) is then `rediss://`.
    pub fn start_tls(cert: &std::path::Path, key: &std::path::Path) -> Result<RedisServer, String> {
        RedisServer::launch(None, Some((cert, key)))
    }

    fn launch(
        password: Option<&str>,
        tls: Option<(&std::path::Path, &std::path::Path)>,
    ) -> Result<RedisServer, String> {
        let binary = std::env::var(REDIS_SERVER_ENV).unwrap_or_else(|_| "redis-server".into());
        ensure_installed(&binary)?;
        let mut last = String::new();
        // A port found free may be taken before the server binds it: try a few.
        for _ in 0..5 {
            let port = TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .map_err(|err| format!("no free loopback port: {err}"))?
                .port();
            let dir =
                std::env::temp_dir().join(format!("xhttp-redis-{}-{port}", std::process::id()));
            std::fs::create_dir_all(&dir).map_err(|err| format!("temp dir: {err}"))?;
            let mut server = RedisServer {
                child: None,
                addr: SocketAddr::from(([127, 0, 0, 1], port)),
                password: password.map(str::to_owned),
                tls: tls.map(|(cert, key)| (cert.to_path_buf(), key.to_path_buf())),
                dir,
            };
            match server.spawn(&binary) {
                Ok(()) => return Ok(server),
                Err(err) => last = err,
            }
        }
        Err(last)
    }

    /// Kills the server and starts it again on the same port with the same settings and
    /// nothing stored (there is no persistence): a Redis restarted, or failed over to an
    /// empty one.
    pub fn restart(&mut self) -> Result<(), String> {
        self.stop();
        let binary = std::env::var(REDIS_SERVER_ENV).unwrap_or_else(|_| "redis-server".into());
        self.spawn(&binary)
    }

    /// Starts the server process on this handle's port and waits until it answers.
    fn spawn(&mut self, binary: &str) -> Result<(), String> {
        let port = self.addr.port().to_string();
        let port_flag = if self.tls.is_some() {
            "--tls-port"
        } else {
            "--port"
        };
        let mut command = Command::new(binary);
        command
            .args(["--bind", "127.0.0.1", port_flag, &port])
            .args(["--save", "", "--appendonly", "no", "--protected-mode", "no"])
            .args(["--daemonize", "no", "--loglevel", "warning"])
            .arg("--dir")
            .arg(&self.dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        if let Some(password) = &self.password {
            command.args(["--requirepass", password]);
        }
        if let Some((cert, key)) = &self.tls {
            command
                .args(["--port", "0", "--tls-auth-clients", "no", "--tls-cert-file"])
                .arg(cert)
                .arg("--tls-key-file")
                .arg(key);
        }
        let child = command.spawn().map_err(|err| {
            format!(
                "cannot run {binary} ({err}): install Redis (apt-get install redis-server; \
                 .ci/run does) or set {REDIS_SERVER_ENV}"
            )
        })?;
        self.child = Some(child);
        self.wait_ready(Duration::from_secs(10))
    }

    /// Waits until the server answers `PING`, or says why it did not.
    fn wait_ready(&mut self, within: Duration) -> Result<(), String> {
        let until = Instant::now() + within;
        loop {
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    let mut stderr = String::new();
                    if let Some(mut pipe) = child.stderr.take() {
                        let _ = pipe.read_to_string(&mut stderr);
                    }
                    return Err(format!("redis-server exited ({status}): {stderr}"));
                }
            }
            if self.ping().is_ok() {
                return Ok(());
            }
            if Instant::now() > until {
                return Err(format!("redis-server on {} did not answer PING", self.addr));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// One `PING` over a fresh connection (after `AUTH` when there is a password). A TLS
    /// server is only checked to accept connections.
    pub fn ping(&self) -> Result<(), String> {
        if self.tls.is_some() {
            return TcpStream::connect_timeout(&self.addr, Duration::from_millis(500))
                .map(drop)
                .map_err(|err| err.to_string());
        }
        let mut stream = TcpStream::connect_timeout(&self.addr, Duration::from_millis(500))
            .map_err(|err| err.to_string())?;
        stream
            .set_read_timeout(Some(Duration::from_millis(500)))
            .map_err(|err| err.to_string())?;
        let mut request = String::new();
        if let Some(password) = &self.password {
            request.push_str(&format!(
                "*2\r\n$4\r\nAUTH\r\n${}\r\n{password}\r\n",
                password.len()
            ));
        }
        request.push_str("*1\r\n$4\r\nPING\r\n");
        stream
            .write_all(request.as_bytes())
            .map_err(|err| err.to_string())?;
        let mut answer = Vec::new();
        let mut buf = [0u8; 64];
        while !String::from_utf8_lossy(&answer).contains("PONG") {
            let n = stream.read(&mut buf).map_err(|err| err.to_string())?;
            if n == 0 {
                return Err("closed before PONG".into());
            }
            answer.extend_from_slice(&buf[..n]);
            if answer.starts_with(b"-") {
                return Err(String::from_utf8_lossy(&answer).into_owned());
            }
        }
        Ok(())
    }

    /// `redis://127.0.0.1:<port>` (`rediss://` for TLS), with the password when there is
    /// one.
    pub fn url(&self) -> String {
        let scheme = if self.tls.is_some() {
            "rediss"
        } else {
            "redis"
        };
        match &self.password {
            Some(password) => format!("{scheme}://:{password}@{}", self.addr),
            None => format!("{scheme}://{}", self.addr),
        }
    }

    /// The server's address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Freezes the server (`SIGSTOP`): it keeps its connections and answers nothing.
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    /// Thaws a frozen server (`SIGCONT`).
    pub fn resume(&self) {
        self.signal("-CONT");
    }

    /// Kills the server: later connections are refused.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn signal(&self, signal: &str) {
        if let Some(child) = &self.child {
            let _ = Command::new("kill")
                .args([signal, &child.id().to_string()])
                .status();
        }
    }
}

impl std::fmt::Debug for RedisServer {
    // The password is a secret even in tests.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisServer")
            .field("addr", &self.addr)
            .field("running", &self.child.is_some())
            .finish_non_exhaustive()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.resume();
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
