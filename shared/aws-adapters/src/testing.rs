//! For tests: an AWS endpoint to run against. With `AWS_ENDPOINT_URL` set, that one (a
//! moto or other emulator the caller runs); otherwise a moto server started once per test
//! process through `infra/moto.sh serve`, which installs moto on first use.
//!
//! The server must not outlive the tests, even when they are killed: on Linux it gets
//! `PR_SET_PDEATHSIG` (SIGKILL). That signal follows the *thread* that spawned the child,
//! so the child is spawned from a thread of its own that lives as long as the server does
//! (it waits on it), never from a test's thread, which ends with the test.

use crate::http_client;
use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_sdk_s3::config::Credentials;
use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::process::{Command, Stdio};
use std::sync::{mpsc, OnceLock};
use std::time::{Duration, Instant};

/// The region every test runs in.
pub const TEST_REGION: &str = "us-east-1";

/// How long a freshly started server may take to accept connections (moto imports a lot).
const STARTUP_WAIT: Duration = Duration::from_secs(60);

/// The endpoint tests run against, started on first call. Blocks while moto is installed
/// and started (seconds; a first install takes about half a minute).
///
/// # Panics
/// When moto cannot be started: the message says why and where its log is.
pub fn endpoint() -> &'static str {
    static ENDPOINT: OnceLock<String> = OnceLock::new();
    ENDPOINT.get_or_init(|| match std::env::var("AWS_ENDPOINT_URL") {
        Ok(url) if !url.trim().is_empty() => url,
        _ => start_moto().unwrap_or_else(|e| panic!("{e}")),
    })
}

/// An SDK configuration for tests: the test endpoint, region us-east-1, dummy credentials.
pub async fn sdk_config() -> SdkConfig {
    let endpoint = endpoint().to_string();
    aws_config::defaults(BehaviorVersion::latest())
        .http_client(http_client())
        .region(Region::new(TEST_REGION))
        .credentials_provider(Credentials::new(
            "testing",
            "testing",
            None,
            None,
            "lifeboat-tests",
        ))
        .endpoint_url(endpoint)
        .load()
        .await
}

/// Starts `infra/moto.sh serve` and returns its endpoint once it accepts connections.
fn start_moto() -> Result<String, String> {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../../infra/moto.sh");
    let log = std::env::temp_dir().join(format!("lifeboat-moto-{}.log", std::process::id()));
    let log_file = std::fs::File::create(&log)
        .map_err(|e| format!("cannot create moto's log {}: {e}", log.display()))?;
    let (tx, rx) = mpsc::channel();
    std::thread::Builder::new()
        .name("moto-server".into())
        .spawn(move || {
            let mut cmd = Command::new("bash");
            cmd.arg(script)
                .arg("serve")
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(log_file);
            die_with_parent(&mut cmd);
            let mut child = match cmd.spawn() {
                Ok(c) => c,
                Err(e) => {
                    let _ = tx.send(Err(format!("cannot run {script}: {e}")));
                    return;
                }
            };
            let Some(stdout) = child.stdout.take() else {
                let _ = tx.send(Err("moto's output is not piped".to_string()));
                return;
            };
            let mut out = BufReader::new(stdout);
            let mut line = String::new();
            let first = out.read_line(&mut line);
            let _ = tx.send(match first {
                Ok(n) if n > 0 => Ok(line.trim().to_string()),
                _ => Err("infra/moto.sh exited without printing its endpoint".to_string()),
            });
            // Keep its output drained and this thread alive while the server runs.
            let _ = std::io::copy(&mut out, &mut std::io::sink());
            let _ = child.wait();
        })
        .map_err(|e| format!("cannot start the moto thread: {e}"))?;
    let url = rx
        .recv()
        .map_err(|_| "the moto thread ended early".to_string())?
        .map_err(|e| format!("{e} (log: {})", log.display()))?;
    let addr = socket_addr(&url).ok_or_else(|| format!("moto printed an odd endpoint {url:?}"))?;
    let deadline = Instant::now() + STARTUP_WAIT;
    while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
        if Instant::now() >= deadline {
            return Err(format!(
                "moto did not accept connections at {url} within {STARTUP_WAIT:?} (log: {})",
                log.display()
            ));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(url)
}

fn socket_addr(url: &str) -> Option<SocketAddr> {
    let host_port = url.strip_prefix("http://")?.trim_end_matches('/');
    host_port.to_socket_addrs().ok()?.next()
}

#[cfg(target_os = "linux")]
fn die_with_parent(cmd: &mut Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: prctl is async-signal-safe and touches no memory of the parent.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

#[cfg(not(target_os = "linux"))]
fn die_with_parent(_cmd: &mut Command) {}
