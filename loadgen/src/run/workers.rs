//! The worker processes: how the sockets are split into slices of at most
//! `--max-sockets-per-worker`, starting one `loadgen --worker` per slice with its spec on stdin,
//! reading its events from stdout into [`Shared`], and telling every worker to finish.
//! Workers are killed when the parent drops them, and exit by themselves when its pipe closes.

use std::path::Path;
use std::process::Stdio;

use anyhow::{anyhow, Context as _};
use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::process::{Child, ChildStdin, ChildStdout};

use super::config::Config;
use super::shared::SharedRef;
use crate::protocol::{Command, Event, WorkerSpec};

/// How the sockets are split between worker processes.
pub(super) struct WorkerPlan {
    /// Users × sockets per user.
    pub(super) total_sockets: u64,
    /// Users in each worker (the last may have fewer).
    users_per_worker: u64,
    /// Worker processes.
    pub(super) count: usize,
    /// Connects in flight in each worker.
    per_worker_concurrency: usize,
}

impl WorkerPlan {
    /// Splits `cfg.users` so that no worker holds more than `--max-sockets-per-worker` sockets.
    pub(super) fn new(cfg: &Config) -> Self {
        let users_per_worker = (cfg.max_sockets_per_worker / cfg.sockets_per_user).max(1);
        let count = cfg.users.div_ceil(users_per_worker) as usize;
        Self {
            total_sockets: cfg.users * cfg.sockets_per_user,
            users_per_worker,
            count,
            per_worker_concurrency: cfg.connect_concurrency.div_ceil(count).max(1),
        }
    }

    /// The spec of worker `id`: its users, sockets and share of the connect concurrency.
    pub(super) fn spec(&self, cfg: &Config, id: usize, epoch_us: u64) -> WorkerSpec {
        let user_start = id as u64 * self.users_per_worker;
        let user_end = (user_start + self.users_per_worker).min(cfg.users);
        WorkerSpec {
            id,
            url: cfg.url.clone(),
            secret: cfg.secret.clone(),
            token_ttl_s: cfg.token_ttl_s,
            user_prefix: cfg.user_prefix.clone(),
            user_start,
            user_end,
            sockets_per_user: cfg.sockets_per_user,
            socket_offset: user_start * cfg.sockets_per_user,
            connect_concurrency: self.per_worker_concurrency,
            connect_timeout_ms: cfg.connect_timeout_s * 1000,
            src_addrs: cfg.src_addrs.clone(),
            epoch_us,
            bin_us: cfg.bin_ms * 1000,
            latency_from_seq: u64::from(cfg.verify),
            max_run_ms: cfg.max_run_s * 1000,
            v2: cfg.v2,
        }
    }
}

/// A running worker process (killed on drop).
pub(super) struct Worker {
    _child: Child,
    stdin: ChildStdin,
    pub(super) pid: Option<u32>,
}

/// Starts `loadgen --worker` (`exe`), sends it `spec` and reads its events into `shared`.
pub(super) async fn spawn_worker(
    exe: &Path,
    spec: WorkerSpec,
    shared: SharedRef,
) -> anyhow::Result<Worker> {
    let id = spec.id;
    let mut child = tokio::process::Command::new(exe)
        .arg("--worker")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting worker {id} ({})", exe.display()))?;
    let mut stdin = child
        .stdin
        .take()
        .ok_or_else(|| anyhow!("worker {id}: no stdin"))?;
    let stdout = child
        .stdout
        .take()
        .ok_or_else(|| anyhow!("worker {id}: no stdout"))?;
    let line = serde_json::to_string(&spec).context("serialising a worker spec")? + "\n";
    stdin
        .write_all(line.as_bytes())
        .await
        .with_context(|| format!("sending the spec to worker {id}"))?;
    stdin.flush().await.context("flushing a worker's stdin")?;
    tokio::task::spawn_local(read_events(id, stdout, shared));
    Ok(Worker {
        pid: child.id(),
        _child: child,
        stdin,
    })
}

/// Records worker `id`'s ticks, final report and failures until its stdout closes.
async fn read_events(id: usize, stdout: ChildStdout, shared: SharedRef) {
    let mut lines = BufReader::new(stdout).lines();
    loop {
        match lines.next_line().await {
            Ok(Some(line)) => match serde_json::from_str::<Event>(&line) {
                Ok(Event::Tick(t)) => shared.borrow_mut().ticks[id] = t,
                Ok(Event::Final(f)) => shared.borrow_mut().finals[id] = Some(*f),
                Ok(Event::Fatal { error }) => {
                    shared.borrow_mut().fatal = Some(format!("worker {id}: {error}"));
                }
                Err(e) => {
                    shared.borrow_mut().fatal =
                        Some(format!("worker {id}: bad line {line:?}: {e}"));
                }
            },
            Ok(None) | Err(_) => {
                shared.borrow_mut().exited[id] = true;
                return;
            }
        }
    }
}

/// Sends `command` to every worker.
pub(super) async fn send_all(workers: &mut [Worker], command: &Command) -> anyhow::Result<()> {
    let line = serde_json::to_string(command).context("serialising a command")? + "\n";
    for w in workers {
        w.stdin
            .write_all(line.as_bytes())
            .await
            .context("writing to a worker")?;
        w.stdin.flush().await.context("writing to a worker")?;
    }
    Ok(())
}
