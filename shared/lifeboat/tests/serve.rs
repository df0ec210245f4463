//! `lifeboat serve` over real HTTP: the API with tokens from `lifeboat token`, and an
//! on-demand backup run by the server's own worker.

mod common;

use common::*;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

/// Kills the server when the test ends, however it ends.
struct Server(Child);
impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn serve_answers_with_tokens_and_runs_backups() {
    let dir = tempfile::tempdir().unwrap();
    let lb = Lifeboat::new(dir.path().join("home"));
    let src = dir.path().join("src");
    write(&src.join("a.txt"), b"hello");
    lb.add_folder_task("docs", &src);

    let mut child = lb
        .command(["serve", "--listen", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let server = Server(child);
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line).unwrap();
    let base = line
        .trim()
        .strip_prefix("listening on ")
        .expect(&line)
        .to_string();

    let key = lb.home.join("api.key");
    let token = lb.ok(["token"]).stdout.trim().to_string();
    assert_eq!(
        std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let other = lb
        .ok(["token", "--tenant", "someone-else"])
        .stdout
        .trim()
        .to_string();
    let bad = lb.fail(["token", "--tenant", "no spaces allowed"]);
    assert!(bad.contains("tenant"), "{bad}");

    let http = reqwest::Client::new();
    let r = http.get(format!("{base}/v1/tasks")).send().await.unwrap();
    assert_eq!(r.status(), 401);
    let v: serde_json::Value = http
        .get(format!("{base}/v1/tasks"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["tasks"][0]["name"], "docs");
    // The same view of a task as `lifeboat task list --json`.
    assert_eq!(
        v["tasks"][0],
        lb.ok(["task", "list", "--json"]).json()[0],
        "{v}"
    );
    let v: serde_json::Value = http
        .get(format!("{base}/v1/tasks"))
        .bearer_auth(&other)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        v["tasks"].as_array().unwrap().len(),
        0,
        "another tenant sees nothing"
    );

    // The task was added before its 02:00 UTC hour or after it: either way the scheduler
    // may queue it. An on-demand backup is queued now; the server's worker runs it.
    let r = http
        .post(format!("{base}/v1/tasks/docs/backups"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    // The task's accounts are recorded by its first backup: until then, the account is
    // not found.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let r = http
            .get(format!("{base}/v1/tasks/docs/accounts/folder/snapshots"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        let status = r.status();
        let v: serde_json::Value = r.json().await.unwrap();
        if status == 404 {
            assert!(v.to_string().contains("folder"), "{v}");
            assert!(
                Instant::now() < deadline,
                "the queued backup never ran: {v}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        }
        assert_eq!(status, 200, "{v}");
        let snaps = v["snapshots"].as_array().expect("a list of snapshots");
        if !snaps.is_empty() {
            assert_eq!(snaps[0]["items"], 1);
            assert_eq!(snaps[0]["stats"]["items"], 1);
            break;
        }
        assert!(Instant::now() < deadline, "the queued backup never ran");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    drop(server);
}
