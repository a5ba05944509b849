//! A test server, stopped on drop, in one of two forms:
//! - [`Server::start_in_process`]: the library's `run` on its own thread and actix system, on a
//!   listener bound to port 0 (no port race, no process). Each one has its own metrics registry;
//!   it logs nowhere (no tracing subscriber is installed).
//! - [`Server::start`]: the real binary as a child process, for tests that need one: signals,
//!   exit codes, `--dev`, the log it prints, an open-files limit, trace export.
//!
//! Both answer the same HTTP and WebSocket helpers. When a test panics, drop prints a process's
//! log so the failure can be diagnosed.

use std::collections::HashMap;
use std::fs::File;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use websocket_service::config::Settings;
use websocket_service::{open_files, Shutdown, ShutdownHandle};

use super::http::{read_reply, HttpReply};
use super::settings::TestSettings;
use super::sockets::WsClient;
use super::{free_port, wait_for, POLL, STARTUP_DEADLINE};

/// A running test server (see the module doc for the two forms).
pub struct Server {
    running: Running,
    port: u16,
    dir: tempfile::TempDir,
    http: awc::Client,
    settings: TestSettings,
    api_key: String,
}

/// How the server runs.
enum Running {
    /// The binary as a child process; `exit` once it has been reaped.
    Process {
        child: Child,
        exit: Option<ExitStatus>,
    },
    /// `websocket_service::run` on `thread`, stopped through `shutdown`.
    InProcess {
        shutdown: ShutdownHandle,
        thread: Option<JoinHandle<()>>,
    },
}

impl Server {
    /// Starts the server in this process on a listener bound to `127.0.0.1:0` and waits until
    /// `GET /healthz` answers 200. Settings load exactly as the binary loads them (the file, then
    /// the `WS__` variables of [`TestSettings::env`]); other variables have no effect here.
    pub async fn start_in_process(settings: TestSettings) -> Self {
        assert!(
            !settings.dev,
            "--dev needs a real process: use Server::start"
        );
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let port = listener.local_addr().expect("local_addr").port();
        let dir = write_settings(&settings, port);
        let loaded = load_settings(&settings, &dir.path().join("settings.toml"));
        let (handle, shutdown) = Shutdown::new();
        let thread = std::thread::Builder::new()
            .name(format!("server-{port}"))
            .spawn(move || serve_in_process(loaded, listener, shutdown))
            .expect("spawn the server thread");
        let running = Running::InProcess {
            shutdown: handle,
            thread: Some(thread),
        };
        Self::started(running, port, dir, settings).await
    }

    /// Writes the settings, starts the binary and waits until `GET /healthz` answers 200.
    pub async fn start(settings: TestSettings) -> Self {
        let port = free_port();
        let dir = write_settings(&settings, port);
        let mut command = Command::new(env!("CARGO_BIN_EXE_websocket-service"));
        command
            .arg("--config")
            .arg(dir.path().join("settings.toml"));
        if settings.dev {
            command.arg("--dev");
        }
        let child = spawn_logged(command, &settings, dir.path(), "spawn websocket-service");
        Self::started(Running::process(child), port, dir, settings).await
    }

    /// Like [`Server::start`], with the server started under the open-files limit `soft:hard`
    /// by `prlimit(1)` (util-linux), which execs it: the child's pid is the server's.
    pub async fn start_with_open_files(settings: TestSettings, soft: u64, hard: u64) -> Self {
        let port = free_port();
        let dir = write_settings(&settings, port);
        let mut command = Command::new("prlimit");
        command
            .arg(format!("--nofile={soft}:{hard}"))
            .arg("--")
            .arg(env!("CARGO_BIN_EXE_websocket-service"))
            .arg("--config")
            .arg(dir.path().join("settings.toml"));
        let child = spawn_logged(
            command,
            &settings,
            dir.path(),
            "spawn prlimit websocket-service",
        );
        Self::started(Running::process(child), port, dir, settings).await
    }

    /// Wraps a starting server and waits until it is healthy.
    async fn started(
        running: Running,
        port: u16,
        dir: tempfile::TempDir,
        settings: TestSettings,
    ) -> Self {
        let mut server = Self {
            running,
            port,
            dir,
            http: awc::Client::builder()
                .timeout(Duration::from_secs(5))
                .finish(),
            api_key: settings.get_str("api.publish_api_key").to_owned(),
            settings,
        };
        server.wait_healthy().await;
        server
    }

    async fn wait_healthy(&mut self) {
        let start = Instant::now();
        loop {
            if let Ok(reply) = self.try_get("/healthz").await {
                if reply.status == 200 {
                    return;
                }
            }
            if let Some(ended) = self.ended() {
                panic!(
                    "server {ended} before /healthz answered 200\n--- settings.toml ---\n{}\n--- log ---\n{}",
                    self.settings_toml(),
                    self.log_text()
                );
            }
            if start.elapsed() >= STARTUP_DEADLINE {
                panic!(
                    "server did not answer /healthz 200 within {STARTUP_DEADLINE:?}\n--- log ---\n{}",
                    self.log_text()
                );
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Says how the server ended, if it has.
    fn ended(&mut self) -> Option<String> {
        match &mut self.running {
            Running::Process { child, exit } => {
                let status = child.try_wait().ok().flatten()?;
                *exit = Some(status);
                Some(format!("exited with {status}"))
            }
            Running::InProcess { thread, .. } => thread
                .as_ref()
                .filter(|t| t.is_finished())
                .map(|_| "(in-process) stopped".to_owned()),
        }
    }

    /// The settings file as written.
    pub fn settings_toml(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("settings.toml")).unwrap_or_default()
    }

    /// Everything the server process printed (stdout and stderr) so far.
    pub fn log(&self) -> String {
        self.child();
        self.log_text()
    }

    /// The process's log, or a note that an in-process server logs nowhere.
    fn log_text(&self) -> String {
        match self.running {
            Running::Process { .. } => std::fs::read_to_string(self.log_path()).unwrap_or_default(),
            Running::InProcess { .. } => "(in-process server: no log)".to_owned(),
        }
    }

    /// Where the server's stdout and stderr go.
    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("server.log")
    }

    /// The temp directory of this server.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Its port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `http://127.0.0.1:PORT`.
    pub fn http_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The WebSocket URL without a token.
    pub fn ws_base(&self) -> String {
        let ws_path = self.settings.get_str("server.ws_path");
        format!("ws://127.0.0.1:{}{ws_path}", self.port)
    }

    /// The WebSocket URL with `?token=`.
    pub fn ws_url(&self, token: &str) -> String {
        format!("{}?token={token}", self.ws_base())
    }

    /// The child process (panics for an in-process server: the test needs [`Server::start`]).
    fn child(&self) -> &Child {
        match &self.running {
            Running::Process { child, .. } => child,
            Running::InProcess { .. } => {
                panic!("this needs a real process: start the server with Server::start")
            }
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child().id()
    }

    /// Sends SIGTERM.
    pub fn sigterm(&self) {
        self.signal("TERM");
    }

    /// Sends a signal by name (TERM, INT, …) with `kill(1)`.
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.pid().to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{name} {} failed", self.pid());
    }

    /// Waits for the process to exit, panicking after `deadline`.
    pub async fn wait_exit(&mut self, deadline: Duration) -> ExitStatus {
        let Running::Process { child, exit } = &mut self.running else {
            panic!("wait_exit needs a real process: start the server with Server::start");
        };
        if let Some(status) = *exit {
            return status;
        }
        let start = Instant::now();
        loop {
            if let Some(status) = child.try_wait().expect("try_wait") {
                *exit = Some(status);
                return status;
            }
            if start.elapsed() >= deadline {
                panic!("server did not exit within {deadline:?}");
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Triggers an in-process server's shutdown: the first call drains it as SIGTERM does, the
    /// next one ends it at once.
    pub fn trigger_shutdown(&self) {
        match &self.running {
            Running::InProcess { shutdown, .. } => shutdown.trigger(),
            Running::Process { .. } => panic!("a server process is stopped with a signal"),
        }
    }

    /// Waits until an in-process server's `run` has returned, panicking after `deadline`.
    pub async fn wait_stopped(&mut self, deadline: Duration) {
        let Running::InProcess { thread, .. } = &mut self.running else {
            panic!("a server process exits: use wait_exit");
        };
        let start = Instant::now();
        while thread.as_ref().is_some_and(|t| !t.is_finished()) {
            assert!(
                start.elapsed() < deadline,
                "server still running after {deadline:?}"
            );
            tokio::time::sleep(POLL).await;
        }
        if let Some(thread) = thread.take() {
            thread.join().expect("the server thread panicked");
        }
    }

    /// `GET path`, or the transport error.
    pub async fn try_get(&self, path: &str) -> Result<HttpReply, String> {
        let request = self.http.get(format!("{}{path}", self.http_url()));
        read_reply(request.send().await.map_err(|e| e.to_string())?).await
    }

    /// `GET path` (panics on a transport error).
    pub async fn get(&self, path: &str) -> HttpReply {
        self.try_get(path)
            .await
            .unwrap_or_else(|e| panic!("GET {path}: {e}"))
    }

    /// `GET path` with `headers` (panics on a transport error).
    pub async fn get_with_headers(&self, path: &str, headers: &[(&str, &str)]) -> HttpReply {
        let mut request = self.http.get(format!("{}{path}", self.http_url()));
        for (name, value) in headers {
            request = request.insert_header((*name, *value));
        }
        let response = request
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {path}: {e}"));
        read_reply(response)
            .await
            .unwrap_or_else(|e| panic!("GET {path}: {e}"))
    }

    /// `POST path` with `headers` and `body` (panics on a transport error).
    pub async fn post(&self, path: &str, headers: &[(&str, &str)], body: &str) -> HttpReply {
        let mut request = self.http.post(format!("{}{path}", self.http_url()));
        for (name, value) in headers {
            request = request.insert_header((*name, *value));
        }
        let response = request
            .send_body(body.to_owned())
            .await
            .unwrap_or_else(|e| panic!("POST {path}: {e}"));
        read_reply(response)
            .await
            .unwrap_or_else(|e| panic!("POST {path}: {e}"))
    }

    /// The API key [`Server::publish_api`] presents (the configured one unless changed).
    pub fn set_api_key(&mut self, key: impl Into<String>) {
        self.api_key = key.into();
    }

    /// `POST /api/v1/publish` with the API key; asserts 200 `{"published": users.len()}`.
    pub async fn publish_api(&self, users: &[&str], data: Value) -> HttpReply {
        let body = json!({ "user_ids": users, "data": data }).to_string();
        let reply = self
            .post(
                "/api/v1/publish",
                &[
                    ("X-API-Key", self.api_key.as_str()),
                    ("Content-Type", "application/json"),
                ],
                &body,
            )
            .await;
        assert_eq!(reply.status, 200, "publish API: {}", reply.text());
        assert_eq!(reply.json(), json!({ "published": users.len() }));
        reply
    }

    /// The value of one series in `/metrics`, e.g. `ws_connections_active` or
    /// `ws_connections_closed_total{code="4009"}` (labels as the exposition writes them).
    pub async fn metric(&self, series: &str) -> Option<f64> {
        let reply = self.get("/metrics").await;
        assert_eq!(reply.status, 200, "GET /metrics: {}", reply.text());
        reply.text().lines().find_map(|line| {
            let value = line.strip_prefix(series)?.strip_prefix(' ')?;
            value.trim().parse().ok()
        })
    }

    /// Waits until `GET /readyz` answers `status`.
    pub async fn wait_readyz(&self, status: u16, deadline: Duration) -> HttpReply {
        let what = format!("GET /readyz to answer {status}");
        wait_for(deadline, &what, || async {
            self.try_get("/readyz")
                .await
                .ok()
                .filter(|r| r.status == status)
        })
        .await
    }

    /// Connects with `?token=` and panics if the handshake fails.
    pub async fn connect(&self, token: &str) -> WsClient {
        WsClient::connect(&self.ws_url(token)).await
    }
}

impl Running {
    fn process(child: Child) -> Self {
        Running::Process { child, exit: None }
    }

    /// Ends the server at once: an in-process one by two shutdown triggers (the second skips the
    /// drain), a process the way an operator's double Ctrl-C does, so that it exits normally
    /// (and an instrumented build writes its coverage). Either is abandoned after a short grace.
    fn stop_quickly(&mut self) {
        match self {
            Running::Process { exit: Some(_), .. } => {}
            Running::Process { child, exit: None } => stop_process(child),
            Running::InProcess { shutdown, thread } => {
                shutdown.trigger();
                shutdown.trigger();
                if let Some(thread) = thread.take() {
                    join_within(thread, Duration::from_secs(2));
                }
            }
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.running.stop_quickly();
        if std::thread::panicking() {
            eprintln!(
                "--- server log ({}) ---\n{}\n--- end of server log ---",
                self.log_path().display(),
                self.log_text()
            );
        }
    }
}

/// A temp directory holding `settings.toml` for a server on `127.0.0.1:port`.
fn write_settings(settings: &TestSettings, port: u16) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir for server");
    let toml = settings.to_toml(&format!("127.0.0.1:{port}"));
    std::fs::write(dir.path().join("settings.toml"), toml).expect("write settings.toml");
    dir
}

/// Loads `path` as the binary does, with the `WS__` variables of `settings` as the environment.
fn load_settings(settings: &TestSettings, path: &Path) -> Settings {
    let env: HashMap<String, String> = settings
        .env
        .iter()
        .filter(|(key, _)| key.to_ascii_uppercase().starts_with("WS__"))
        .cloned()
        .collect();
    let mut loaded = Settings::load_from(Some(path), env)
        .and_then(|loaded| loaded.validate(false).map(|()| loaded))
        .unwrap_or_else(|e| panic!("invalid test settings: {e}\n{}", settings.to_toml("?")));
    open_files::fit_connections_to_limit(&mut loaded.limits);
    loaded
}

/// The body of an in-process server's thread: its own actix system running the library.
fn serve_in_process(settings: Settings, listener: TcpListener, shutdown: Shutdown) {
    let system = actix_web::rt::System::new();
    if let Err(error) = system.block_on(websocket_service::run(settings, listener, shutdown)) {
        eprintln!("in-process server failed: {error:#}");
    }
}

/// Starts `command` in `dir` with the server's environment (no inherited `WS__` variables, the
/// test's own ones added) and its stdout and stderr going to `server.log`.
fn spawn_logged(mut command: Command, settings: &TestSettings, dir: &Path, what: &str) -> Child {
    let log = File::create(dir.join("server.log")).expect("server log file");
    for (key, _) in std::env::vars().filter(|(key, _)| key.starts_with("WS__")) {
        command.env_remove(key);
    }
    command
        .envs(settings.env.iter().map(|(k, v)| (k, v)))
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::from(log.try_clone().expect("clone log handle")))
        .stderr(Stdio::from(log));
    command.spawn().expect(what)
}

/// Two SIGINTs, then SIGKILL if the process is still there after a short grace.
fn stop_process(child: &mut Child) {
    for _ in 0..2 {
        let _ = Command::new("kill")
            .arg("-INT")
            .arg(child.id().to_string())
            .status();
        std::thread::sleep(Duration::from_millis(20));
    }
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(2) {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// Joins `thread` if it ends within `grace`; otherwise leaves it behind.
fn join_within(thread: JoinHandle<()>, grace: Duration) {
    let start = Instant::now();
    while !thread.is_finished() && start.elapsed() < grace {
        std::thread::sleep(Duration::from_millis(10));
    }
    if thread.is_finished() {
        let _ = thread.join();
    }
}
