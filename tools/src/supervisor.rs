//! The supervisor behind `otedama standalone`: it starts each role as a
//! child process, restarts one that exits unexpectedly with exponential
//! backoff, forwards SIGINT/SIGTERM to every child, waits for them (SIGKILL
//! after a grace period) and exits cleanly.

use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

/// How to start one role.
#[derive(Debug, Clone)]
pub struct RoleSpec {
    pub name: String,
    pub program: PathBuf,
    pub args: Vec<String>,
}

/// Supervision settings.
#[derive(Debug, Clone)]
pub struct Policy {
    pub backoff_initial: Duration,
    pub backoff_max: Duration,
    pub healthy_after: Duration,
    pub shutdown_grace: Duration,
}

/// What happened to one role over the supervisor's life.
#[derive(Debug, Clone, Default)]
pub struct RoleReport {
    pub name: String,
    pub starts: u32,
    pub last_exit: Option<String>,
}

struct Role {
    spec: RoleSpec,
    child: Option<Child>,
    started_at: Instant,
    backoff: Duration,
    restart_at: Option<Instant>,
    report: RoleReport,
}

/// Signals the supervisor has received and not yet handled (0 = none).
#[derive(Clone, Default)]
pub struct SignalFlag(Arc<AtomicUsize>);

impl SignalFlag {
    /// Registers SIGINT and SIGTERM handlers that record the signal.
    pub fn install() -> Result<SignalFlag> {
        let flag = SignalFlag::default();
        for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
            signal_hook::flag::register_usize(sig, flag.0.clone(), sig as usize).context("installing signal handler")?;
        }
        Ok(flag)
    }

    /// The signal received, if any.
    pub fn get(&self) -> Option<i32> {
        match self.0.load(Ordering::Acquire) {
            0 => None,
            s => Some(s as i32),
        }
    }

    /// For tests: behave as if `sig` arrived.
    #[cfg(test)]
    pub fn raise(&self, sig: i32) {
        self.0.store(sig as usize, Ordering::Release);
    }
}

fn describe(status: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(c), _) => format!("exit code {c}"),
        (_, Some(s)) => format!("killed by signal {s}"),
        _ => "unknown status".into(),
    }
}

fn spawn(spec: &RoleSpec) -> std::io::Result<Child> {
    let mut cmd = Command::new(&spec.program);
    cmd.args(&spec.args);
    // SAFETY: prctl is async-signal-safe; it only asks the kernel to send
    // SIGTERM to the child if the supervisor dies, so no role outlives it.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd.spawn()
}

/// Runs `roles` until a signal arrives; returns what happened to each.
pub fn run(roles: Vec<RoleSpec>, policy: &Policy, signals: &SignalFlag) -> Result<Vec<RoleReport>> {
    let mut roles: Vec<Role> = roles
        .into_iter()
        .map(|spec| Role {
            report: RoleReport { name: spec.name.clone(), ..Default::default() },
            spec,
            child: None,
            started_at: Instant::now(),
            backoff: policy.backoff_initial,
            restart_at: Some(Instant::now()),
        })
        .collect();

    let stop_signal = loop {
        if let Some(sig) = signals.get() {
            break sig;
        }
        let now = Instant::now();
        for role in &mut roles {
            if let Some(child) = &mut role.child
                && let Some(status) = child.try_wait().context("waiting for a child")?
            {
                let ran = now - role.started_at;
                if ran >= policy.healthy_after {
                    role.backoff = policy.backoff_initial;
                }
                tracing::warn!(
                    role = %role.spec.name, status = %describe(status), ran_ms = ran.as_millis() as u64,
                    restart_in_ms = role.backoff.as_millis() as u64, "role exited; restarting"
                );
                role.report.last_exit = Some(describe(status));
                role.child = None;
                role.restart_at = Some(now + role.backoff);
                role.backoff = (role.backoff * 2).min(policy.backoff_max);
            }
            if role.child.is_none() && role.restart_at.is_some_and(|t| now >= t) {
                match spawn(&role.spec) {
                    Ok(child) => {
                        tracing::info!(role = %role.spec.name, pid = child.id(), "role started");
                        role.child = Some(child);
                        role.started_at = now;
                        role.restart_at = None;
                        role.report.starts += 1;
                    }
                    Err(e) => {
                        tracing::error!(role = %role.spec.name, error = %e, "cannot start role; retrying");
                        role.restart_at = Some(now + role.backoff);
                        role.backoff = (role.backoff * 2).min(policy.backoff_max);
                    }
                }
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    };

    tracing::info!(signal = stop_signal, "stopping: forwarding the signal to every role");
    for role in &roles {
        if let Some(child) = &role.child {
            // SAFETY: kill(2) on our own child's pid.
            unsafe { libc::kill(child.id() as i32, stop_signal) };
        }
    }
    let deadline = Instant::now() + policy.shutdown_grace;
    for role in &mut roles {
        let Some(child) = &mut role.child else { continue };
        let status = loop {
            if let Some(s) = child.try_wait()? {
                break s;
            }
            if Instant::now() >= deadline {
                tracing::error!(role = %role.spec.name, "role ignored the signal; killing it");
                child.kill()?;
                break child.wait()?;
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        tracing::info!(role = %role.spec.name, status = %describe(status), "role stopped");
        role.report.last_exit = Some(describe(status));
    }
    Ok(roles.into_iter().map(|r| r.report).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(name: &str, script: &str) -> RoleSpec {
        RoleSpec { name: name.into(), program: "/bin/sh".into(), args: vec!["-c".into(), script.into()] }
    }

    fn policy() -> Policy {
        Policy {
            backoff_initial: Duration::from_millis(50),
            backoff_max: Duration::from_millis(400),
            healthy_after: Duration::from_secs(60),
            shutdown_grace: Duration::from_secs(5),
        }
    }

    #[test]
    fn crashed_role_is_restarted_with_growing_backoff() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("starts");
        let script = format!("date +%s%N >> {}; exit 3", log.display());
        let signals = SignalFlag::default();
        let s2 = signals.clone();
        let stopper = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(1500));
            s2.raise(libc::SIGTERM);
        });
        let reports = run(vec![sh("crasher", &script)], &policy(), &signals).unwrap();
        stopper.join().unwrap();
        let starts: Vec<u128> = std::fs::read_to_string(&log).unwrap().lines().map(|l| l.parse().unwrap()).collect();
        // 50, 100, 200, 400, 400 ms ... => about 5 to 7 starts in 1.5 s.
        assert!((4..=9).contains(&starts.len()), "starts: {}", starts.len());
        assert_eq!(reports[0].starts as usize, starts.len());
        assert_eq!(reports[0].last_exit.as_deref(), Some("exit code 3"));
        let gaps: Vec<u128> = starts.windows(2).map(|w| (w[1] - w[0]) / 1_000_000).collect();
        assert!(gaps[0] >= 45 && gaps[2] >= 190, "backoff grows: {gaps:?}");
        assert!(gaps.iter().all(|g| *g < 700), "backoff is capped: {gaps:?}");
    }

    #[test]
    fn signal_is_forwarded_and_roles_exit_cleanly() {
        let dir = tempfile::tempdir().unwrap();
        let marker = dir.path().join("got-term");
        // The role traps SIGTERM, records it, and exits 0.
        let script = format!("trap 'echo term > {}; exit 0' TERM; while true; do sleep 0.05; done", marker.display());
        let signals = SignalFlag::default();
        let s2 = signals.clone();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(500));
            s2.raise(libc::SIGTERM);
        });
        let reports = run(vec![sh("a", &script), sh("b", &script)], &policy(), &signals).unwrap();
        assert_eq!(std::fs::read_to_string(&marker).unwrap().trim(), "term");
        for r in &reports {
            assert_eq!(r.starts, 1, "{r:?}");
            assert_eq!(r.last_exit.as_deref(), Some("exit code 0"), "{r:?}");
        }
    }

    #[test]
    fn a_role_that_ignores_the_signal_is_killed_after_the_grace_period() {
        let signals = SignalFlag::default();
        signals.raise(libc::SIGINT);
        // Already signalled: nothing starts, nothing to wait for.
        let r = run(vec![sh("x", "sleep 30")], &policy(), &signals).unwrap();
        assert_eq!(r[0].starts, 0);

        let signals = SignalFlag::default();
        let s2 = signals.clone();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(300));
            s2.raise(libc::SIGTERM);
        });
        let t = Instant::now();
        let p = Policy { shutdown_grace: Duration::from_millis(300), ..policy() };
        let r = run(vec![sh("stubborn", "trap '' TERM; while true; do sleep 0.05; done")], &p, &signals).unwrap();
        assert_eq!(r[0].last_exit.as_deref(), Some("killed by signal 9"));
        assert!(t.elapsed() < Duration::from_secs(3));
    }
}
