//! The `graphsim` binary: prints its base URL and serves; refuses bad flags in one line.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

/// Ends the child by its own id when the test is done, whatever happened.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn binary_prints_its_url_and_serves() {
    let child = Command::new(env!("CARGO_BIN_EXE_graphsim"))
        .args([
            "--port",
            "0",
            "--seed",
            "7",
            "--users",
            "2",
            "--client-secret",
            "cli-test-credential",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("graphsim starts");
    let mut child = Child(child);
    let mut line = String::new();
    BufReader::new(child.0.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let base = line.trim().to_string();
    assert!(base.starts_with("http://127.0.0.1:"), "{base}");
    let http = reqwest::Client::new();
    let info: serde_json::Value = http
        .get(format!("{base}/_sim/info"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(info["users"].as_array().unwrap().len(), 2);
    let token_url = info["tokenUrl"].as_str().unwrap();
    let client_id = info["clientId"].as_str().unwrap();
    let form = [
        ("grant_type", "client_credentials"),
        ("client_id", client_id),
        ("client_secret", "cli-test-credential"),
        ("scope", "https://graph.microsoft.com/.default"),
    ];
    let resp = http.post(token_url).form(&form).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let token: serde_json::Value = resp.json().await.unwrap();
    let users: serde_json::Value = http
        .get(format!("{base}/v1.0/users"))
        .bearer_auth(token["access_token"].as_str().unwrap())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(users["value"].as_array().unwrap().len(), 2);
}

#[test]
fn bad_flags_are_refused_in_one_line() {
    let out = Command::new(env!("CARGO_BIN_EXE_graphsim"))
        .args(["--throttle-rate", "2"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--throttle-rate must be between 0 and 1"),
        "{err}"
    );
    let out = Command::new(env!("CARGO_BIN_EXE_graphsim"))
        .args(["--users", "0"])
        .output()
        .unwrap();
    assert!(!out.status.success());
}
