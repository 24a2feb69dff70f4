//! A background thread that publishes a status and stops on request: the
//! shape of the projection and of the engine link.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

pub struct Worker<S> {
    status: Arc<Mutex<S>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl<S: Default + Clone + Send + 'static> Worker<S> {
    /// Runs `body(status, stop)` on a thread named `name`; `body` returns
    /// once `stop` is set.
    pub fn spawn(name: &str, body: impl FnOnce(Arc<Mutex<S>>, Arc<AtomicBool>) + Send + 'static) -> std::io::Result<Worker<S>> {
        let status = Arc::new(Mutex::new(S::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (status, stop) = (status.clone(), stop.clone());
            std::thread::Builder::new().name(name.into()).spawn(move || body(status, stop))?
        };
        Ok(Worker { status, stop, thread: Some(thread) })
    }

    pub fn status(&self) -> S {
        self.status.lock().expect("status lock").clone()
    }

    pub fn status_handle(&self) -> Arc<Mutex<S>> {
        self.status.clone()
    }

    /// Asks the thread to stop and waits for it.
    pub fn stop(mut self) {
        self.halt();
    }
}

impl<S> Worker<S> {
    fn halt(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl<S> Drop for Worker<S> {
    fn drop(&mut self) {
        self.halt();
    }
}

/// Sleeps `d`, or less once `stop` is set.
pub fn sleep_unless_stopped(d: Duration, stop: &AtomicBool) {
    let until = Instant::now() + d;
    while Instant::now() < until && !stop.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(20).min(until.saturating_duration_since(Instant::now())));
    }
}
