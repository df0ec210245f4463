//! The crash tests' harness: run a `lifeboat` command as a child process and SIGKILL it at
//! a chosen moment (after a delay, or once something can be seen on disk), and place the
//! kills over the time an uninterrupted run takes. Used by the crash tests of backup,
//! restore, prune and repack: time a run on a copy of the home ([`copy_dir`]), kill at
//! spread delays, check what is left after each [`Attempt`].

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How a killed run ended.
#[derive(Clone, Debug)]
pub struct Attempt {
    /// How long the run had when it was killed (or when it was seen to have exited).
    pub delay: Duration,
    /// The process had exited on its own before the kill.
    pub finished_first: bool,
    /// It exited with status 0 (never, when killed).
    pub success: bool,
}

impl Attempt {
    pub fn killed(&self) -> bool {
        !self.finished_first
    }
}

/// Starts `cmd` with its output thrown away.
fn spawn(mut cmd: Command) -> Child {
    cmd.stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start lifeboat")
}

/// Kills `child` unless it has exited already, and reaps it.
fn end(mut child: Child, start: Instant) -> Attempt {
    let delay = start.elapsed();
    let finished_first = child.try_wait().unwrap().is_some();
    if !finished_first {
        // SIGKILL on Unix: no destructor, no flush, no clean-up of any kind runs.
        child.kill().unwrap();
    }
    let status = child.wait().unwrap();
    Attempt {
        delay,
        finished_first,
        success: status.success(),
    }
}

/// Runs `cmd` and kills it `delay` after its start, if it is still running.
pub fn kill_after(cmd: Command, delay: Duration) -> Attempt {
    let start = Instant::now();
    let child = spawn(cmd);
    std::thread::sleep(delay.saturating_sub(start.elapsed()));
    end(child, start)
}

/// Runs `cmd` and kills it as soon as `ready` answers true (asked every 2 ms, so it
/// should be cheap: names listed, nothing read), or lets it finish.
pub fn kill_when(cmd: Command, mut ready: impl FnMut() -> bool) -> Attempt {
    let start = Instant::now();
    let mut child = spawn(cmd);
    loop {
        if child.try_wait().unwrap().is_some() || ready() {
            break;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    end(child, start)
}

/// `n` kill delays from `first` to `share` of `full` (the time an uninterrupted run
/// took), spaced quadratically: dense early, where a run is starting and where the states
/// a kill can leave change fastest, sparse later.
pub fn kill_delays(n: usize, first: Duration, full: Duration, share: f64) -> Vec<Duration> {
    let last = full.mul_f64(share).max(first + Duration::from_millis(100));
    (0..n)
        .map(|i| {
            let x = i as f64 / (n.max(2) - 1) as f64;
            first + (last - first).mul_f64(x * x)
        })
        .collect()
}

/// Copies the folder `from` to `to` with everything in it, modes and times kept (`cp -a`):
/// a home to time an uninterrupted run on, a tree to restore over.
pub fn copy_dir(from: &Path, to: &Path) {
    let cp = Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .status()
        .unwrap();
    assert!(cp.success(), "cp -a {} {}", from.display(), to.display());
}
