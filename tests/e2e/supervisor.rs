//! A restart supervisor for tests: runs `gleaner run` the way Kubernetes runs a container with
//! `restartPolicy: Always` — whenever the process exits (killed or not), it is started again
//! after an exponential backoff (10 s doubling to 5 min in Kubernetes; scaled down here), and
//! every run is recorded (restarts are the runs after the first). A run that lasted long enough resets the backoff, as the kubelet does.

use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The restart backoff.
#[derive(Clone, Copy, Debug)]
pub struct Backoff {
    /// Delay before the first restart.
    pub initial: Duration,
    /// The longest delay.
    pub max: Duration,
    /// A run at least this long resets the delay to `initial`.
    pub reset_after: Duration,
}

impl Default for Backoff {
    /// Kubernetes' 10 s → 5 min, divided by about 2000.
    fn default() -> Self {
        Self {
            initial: Duration::from_millis(5),
            max: Duration::from_millis(150),
            reset_after: Duration::from_secs(1),
        }
    }
}

/// One run of the supervised process.
#[derive(Debug)]
pub struct Run {
    /// Its log (standard error).
    pub log: PathBuf,
    /// How it ended.
    pub status: ExitStatus,
    /// How long it ran.
    pub lasted: Duration,
}

/// Runs a command again and again until stopped.
pub struct Supervisor {
    child: Arc<Mutex<Option<Child>>>,
    /// The log of the running process.
    current_log: Arc<Mutex<PathBuf>>,
    /// Processes already sent a SIGKILL.
    killed: Mutex<std::collections::HashSet<u32>>,
    stopping: Arc<AtomicBool>,
    thread: Option<JoinHandle<Vec<Run>>>,
}

impl Supervisor {
    /// Starts supervising: `make` builds the command for each run, given the run's number;
    /// logs go to `logs/run-NNNN.log`.
    pub fn start(
        logs: PathBuf,
        backoff: Backoff,
        make: impl Fn(usize) -> Command + Send + 'static,
    ) -> Self {
        std::fs::create_dir_all(&logs).unwrap();
        let child: Arc<Mutex<Option<Child>>> = Arc::default();
        let current_log: Arc<Mutex<PathBuf>> = Arc::default();
        let stopping = Arc::new(AtomicBool::new(false));
        let thread = {
            let (child, current_log, stopping) = (
                Arc::clone(&child),
                Arc::clone(&current_log),
                Arc::clone(&stopping),
            );
            std::thread::spawn(move || {
                let mut runs = Vec::new();
                let mut delay = backoff.initial;
                for number in 0.. {
                    let log = logs.join(format!("run-{number:04}.log"));
                    let started = Instant::now();
                    let spawned = make(number)
                        .stdout(std::process::Stdio::null())
                        .stderr(std::fs::File::create(&log).unwrap())
                        .spawn()
                        .expect("starting the supervised process");
                    *current_log.lock().unwrap() = log.clone();
                    *child.lock().unwrap() = Some(spawned);
                    let status = loop {
                        if let Some(status) =
                            child.lock().unwrap().as_mut().unwrap().try_wait().unwrap()
                        {
                            break status;
                        }
                        std::thread::sleep(Duration::from_millis(2));
                    };
                    *child.lock().unwrap() = None;
                    let lasted = started.elapsed();
                    runs.push(Run {
                        log,
                        status,
                        lasted,
                    });
                    if stopping.load(Ordering::SeqCst) {
                        break;
                    }
                    if lasted >= backoff.reset_after {
                        delay = backoff.initial;
                    }
                    std::thread::sleep(delay);
                    delay = (delay * 2).min(backoff.max);
                }
                runs
            })
        };
        Self {
            child,
            current_log,
            killed: Mutex::default(),
            stopping,
            thread: Some(thread),
        }
    }

    /// SIGKILLs the running process, if one is running (and has not exited already); true if
    /// it was killed.
    pub fn kill(&self) -> bool {
        let mut running = self.child.lock().unwrap();
        let Some(child) = running.as_mut() else {
            return false;
        };
        // A killed process may take a moment to die (a SIGKILL waits for an fsync to end): it
        // is killed once.
        let pid = child.id();
        if self.killed.lock().unwrap().contains(&pid) || child.try_wait().unwrap().is_some() {
            return false;
        }
        self.killed.lock().unwrap().insert(pid);
        child.kill().is_ok()
    }

    /// Stops restarting, sends SIGTERM to the running process once it has installed its
    /// signal handlers (waiting for one if it is between restarts; a process killed by a
    /// SIGTERM that came before would prove nothing) and returns every run, the last one being
    /// the one that drained.
    pub fn stop(mut self) -> Vec<Run> {
        // The process to stop is one that was not killed (a killed one may still be dying),
        // and that has started; restarts go on until then.
        let deadline = Instant::now() + Duration::from_secs(30);
        let pid = loop {
            if let Some(child) = self.child.lock().unwrap().as_ref() {
                let log = self.current_log.lock().unwrap().clone();
                let pid = child.id();
                if !self.killed.lock().unwrap().contains(&pid)
                    && std::fs::read_to_string(&log).is_ok_and(|l| l.contains("gleaner started"))
                {
                    break pid;
                }
            }
            assert!(Instant::now() < deadline, "no run started to stop");
            std::thread::sleep(Duration::from_millis(2));
        };
        self.stopping.store(true, Ordering::SeqCst);
        let status = Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        self.thread.take().unwrap().join().unwrap()
    }
}
