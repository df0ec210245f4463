//! The moto server a test process starts must not outlive it, even when the process is
//! killed without a chance to clean up: otherwise every interrupted test run would leave a
//! server behind.

use std::io::{BufRead, BufReader};
use std::net::{TcpStream, ToSocketAddrs};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Set for the child run of [`child_starts_moto_and_waits`].
const CHILD_ENV: &str = "LIFEBOAT_MOTO_LIFETIME_CHILD";

#[test]
fn moto_dies_with_the_test_process_that_started_it() {
    let exe = std::env::current_exe().unwrap();
    let mut child = Command::new(exe)
        .args([
            "--ignored",
            "--exact",
            "child_starts_moto_and_waits",
            "--nocapture",
        ])
        .env(CHILD_ENV, "1")
        .env_remove("AWS_ENDPOINT_URL")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let out = BufReader::new(child.stdout.take().unwrap());
    let endpoint = out
        .lines()
        .map_while(Result::ok)
        .find_map(|l| l.strip_prefix("ENDPOINT=").map(str::to_string))
        .expect("the child prints moto's endpoint");
    let addr = endpoint
        .strip_prefix("http://")
        .unwrap()
        .to_socket_addrs()
        .unwrap()
        .next()
        .unwrap();
    assert!(
        TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_ok(),
        "moto answers while its test process lives"
    );

    // SIGKILL: no destructor, no atexit handler runs in the child.
    child.kill().unwrap();
    child.wait().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
        assert!(
            Instant::now() < deadline,
            "moto at {endpoint} still answers 10 s after its test process was killed"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Run only as the child of the test above: starts moto from a test thread (which ends
/// before the process does, as test threads do) and waits to be killed.
#[test]
#[ignore = "the child half of moto_dies_with_the_test_process_that_started_it"]
fn child_starts_moto_and_waits() {
    if std::env::var_os(CHILD_ENV).is_none() {
        return;
    }
    let endpoint = std::thread::spawn(|| aws_adapters::testing::endpoint().to_string())
        .join()
        .unwrap();
    println!("ENDPOINT={endpoint}");
    std::thread::sleep(Duration::from_secs(120));
}
