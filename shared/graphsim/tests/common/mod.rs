//! What every graphsim test needs: a simulator on a free port, a token, and a client that
//! follows `@odata.nextLink` the way a connector would.
#![allow(dead_code)]

use graphsim::{Config, Running};
use reqwest::header::HeaderMap;
use serde_json::Value;

pub struct Sim {
    pub run: Running,
    pub http: reqwest::Client,
    pub token: String,
}

pub fn small() -> Config {
    Config {
        users: 3,
        messages_per_folder: 5,
        files_per_user: 9,
        ..Config::default()
    }
}

pub async fn start(cfg: Config) -> Sim {
    let run = graphsim::spawn(cfg).await.expect("simulator starts");
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    let token = token(&run, &http).await;
    Sim { run, http, token }
}

pub async fn token(run: &Running, http: &reqwest::Client) -> String {
    let cfg = &run.shared.cfg;
    let resp = http
        .post(run.token_url())
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", cfg.client_id.as_str()),
            ("client_secret", cfg.client_secret.as_str()),
            ("scope", "https://graph.microsoft.com/.default"),
        ])
        .send()
        .await
        .expect("token request");
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.expect("token json");
    body["access_token"]
        .as_str()
        .expect("access_token")
        .to_string()
}

impl Sim {
    pub fn url(&self, path: &str) -> String {
        if path.starts_with("http") {
            path.to_string()
        } else {
            format!("{}{}", self.run.graph_url(), path)
        }
    }

    pub async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<Value>,
    ) -> reqwest::Response {
        let mut req = self
            .http
            .request(method, self.url(path))
            .bearer_auth(&self.token);
        let mut h = HeaderMap::new();
        for (k, v) in headers {
            h.append(
                reqwest::header::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        req = req.headers(h);
        if let Some(b) = body {
            req = req.json(&b);
        }
        req.send().await.expect("request")
    }

    pub async fn get_with(&self, path: &str, headers: &[(&str, &str)]) -> (u16, Value) {
        let resp = self.send(reqwest::Method::GET, path, headers, None).await;
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    pub async fn get(&self, path: &str) -> Value {
        let (status, body) = self.get_with(path, &[]).await;
        assert_eq!(status, 200, "GET {path}: {body}");
        body
    }

    /// Every item of a collection, following `@odata.nextLink`; also returns the number of
    /// pages and the final `@odata.deltaLink`, if any.
    pub async fn all_with(
        &self,
        path: &str,
        headers: &[(&str, &str)],
    ) -> (Vec<Value>, usize, Option<String>) {
        let mut items = Vec::new();
        let mut next = Some(self.url(path));
        let mut pages = 0;
        let mut delta = None;
        while let Some(url) = next {
            let (status, body) = self.get_with(&url, headers).await;
            assert_eq!(status, 200, "GET {url}: {body}");
            pages += 1;
            items.extend(
                body["value"]
                    .as_array()
                    .expect("value array")
                    .iter()
                    .cloned(),
            );
            next = body["@odata.nextLink"].as_str().map(str::to_string);
            delta = body["@odata.deltaLink"].as_str().map(str::to_string);
            assert!(pages < 10_000, "paging does not end");
        }
        (items, pages, delta)
    }

    pub async fn all(&self, path: &str) -> Vec<Value> {
        self.all_with(path, &[]).await.0
    }

    pub async fn admin(&self, path: &str, body: Option<Value>) -> Value {
        let url = format!("{}/_sim/{path}", self.run.base_url);
        let req = match body {
            Some(b) => self.http.post(url).json(&b),
            None if path == "stats" || path == "info" || path == "faults" => self.http.get(url),
            None => self.http.post(url),
        };
        let resp = req.send().await.expect("admin request");
        assert!(
            resp.status().is_success(),
            "admin {path}: {}",
            resp.status()
        );
        resp.json().await.unwrap_or(Value::Null)
    }

    pub async fn first_user(&self) -> String {
        self.get("/users").await["value"][0]["id"]
            .as_str()
            .unwrap()
            .to_string()
    }
}

pub fn ids(items: &[Value]) -> Vec<String> {
    let mut v: Vec<String> = items
        .iter()
        .map(|i| i["id"].as_str().unwrap_or("").to_string())
        .collect();
    v.sort();
    v
}

/// Asserts Graph's documented error body and returns its code.
pub fn error_code(body: &Value) -> String {
    let e = &body["error"];
    assert!(e["message"].is_string(), "error body has a message: {body}");
    assert!(
        e["innerError"]["request-id"].is_string(),
        "innerError has request-id: {body}"
    );
    assert!(
        e["innerError"]["date"].is_string(),
        "innerError has date: {body}"
    );
    assert!(
        e["innerError"]["client-request-id"].is_string(),
        "innerError has client-request-id: {body}"
    );
    e["code"].as_str().expect("code").to_string()
}
