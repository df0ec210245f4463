//! The client-credentials token endpoint and bearer-token checks, over HTTP.

mod common;

use std::time::Duration;

use common::{error_code, small, start};
use serde_json::Value;

async fn token_request(sim: &common::Sim, tenant: &str, form: &[(&str, &str)]) -> (u16, Value) {
    let url = format!("{}/{tenant}/oauth2/v2.0/token", sim.run.base_url);
    let resp = sim.http.post(url).form(form).send().await.unwrap();
    (resp.status().as_u16(), resp.json().await.unwrap())
}

#[tokio::test]
async fn token_success_has_the_documented_fields() {
    let sim = start(small()).await;
    let cfg = sim.run.shared.cfg.clone();
    let (status, body) = token_request(
        &sim,
        &cfg.tenant_id,
        &[
            ("grant_type", "client_credentials"),
            ("client_id", &cfg.client_id),
            ("client_secret", &cfg.client_secret),
            ("scope", "https://graph.microsoft.com/.default"),
        ],
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 3599);
    assert!(body["access_token"].as_str().unwrap().len() > 20);
    // A tenant may also be named by one of its domains.
    let (status, _) = token_request(
        &sim,
        "contoso.example",
        &[
            ("grant_type", "client_credentials"),
            ("client_id", &cfg.client_id),
            ("client_secret", &cfg.client_secret),
            ("scope", "https://graph.microsoft.com/.default"),
        ],
    )
    .await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn token_errors_follow_the_identity_platform_shape() {
    let sim = start(small()).await;
    let cfg = sim.run.shared.cfg.clone();
    let scope = "https://graph.microsoft.com/.default";
    // (tenant, form, status, error, AADSTS code)
    type Case<'a> = (String, Vec<(&'a str, &'a str)>, u16, &'a str, u64);
    let cases: Vec<Case> = vec![
        (
            cfg.tenant_id.clone(),
            vec![
                ("grant_type", "client_credentials"),
                ("client_id", &cfg.client_id),
                ("client_secret", "wrong"),
                ("scope", scope),
            ],
            401,
            "invalid_client",
            7000215,
        ),
        (
            "not-a-tenant".into(),
            vec![
                ("grant_type", "client_credentials"),
                ("client_id", &cfg.client_id),
                ("client_secret", &cfg.client_secret),
                ("scope", scope),
            ],
            400,
            "invalid_request",
            90002,
        ),
        (
            cfg.tenant_id.clone(),
            vec![
                ("grant_type", "client_credentials"),
                ("client_id", "nobody"),
                ("client_secret", &cfg.client_secret),
                ("scope", scope),
            ],
            400,
            "unauthorized_client",
            700016,
        ),
        (
            cfg.tenant_id.clone(),
            vec![
                ("grant_type", "client_credentials"),
                ("client_id", &cfg.client_id),
                ("client_secret", &cfg.client_secret),
                ("scope", "Mail.Read"),
            ],
            400,
            "invalid_scope",
            1002012,
        ),
        (
            cfg.tenant_id.clone(),
            vec![
                ("grant_type", "password"),
                ("client_id", &cfg.client_id),
                ("client_secret", &cfg.client_secret),
                ("scope", scope),
            ],
            400,
            "unsupported_grant_type",
            70003,
        ),
    ];
    for (tenant, form, status, error, code) in cases {
        let (got, body) = token_request(&sim, &tenant, &form).await;
        assert_eq!(got, status, "{body}");
        assert_eq!(body["error"], error);
        assert_eq!(body["error_codes"][0], code);
        let desc = body["error_description"].as_str().unwrap();
        assert!(desc.starts_with(&format!("AADSTS{code}:")), "{desc}");
        assert!(
            !desc.contains(&cfg.client_secret),
            "the secret never appears in an error"
        );
        assert!(
            body["trace_id"].is_string()
                && body["correlation_id"].is_string()
                && body["timestamp"].is_string()
        );
    }
}

#[tokio::test]
async fn graph_requires_a_valid_unexpired_token() {
    let cfg = graphsim::Config {
        token_lifetime: Duration::from_millis(1500),
        ..small()
    };
    let sim = start(cfg).await;
    assert_eq!(
        sim.get("/users").await["value"].as_array().unwrap().len(),
        3
    );

    let resp = sim.http.get(sim.url("/users")).send().await.unwrap();
    assert_eq!(resp.status(), 401);
    assert!(resp.headers().contains_key("www-authenticate"));
    let body: Value = resp.json().await.unwrap();
    assert_eq!(error_code(&body), "InvalidAuthenticationToken");

    let resp = sim
        .http
        .get(sim.url("/users"))
        .bearer_auth("made-up")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);

    tokio::time::sleep(Duration::from_millis(1600)).await;
    let (status, body) = sim
        .get_with(
            "/users",
            &[("client-request-id", "c0ffee00-0000-4000-8000-000000000001")],
        )
        .await;
    assert_eq!(status, 401);
    assert_eq!(error_code(&body), "InvalidAuthenticationToken");
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("expired"));
    assert_eq!(
        body["error"]["innerError"]["client-request-id"],
        "c0ffee00-0000-4000-8000-000000000001"
    );

    // A fresh token works again; the admin API can expire every token at once.
    let fresh = common::token(&sim.run, &sim.http).await;
    let resp = sim
        .http
        .get(sim.url("/users"))
        .bearer_auth(&fresh)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    sim.admin("expire-tokens", None).await;
    let resp = sim
        .http
        .get(sim.url("/users"))
        .bearer_auth(&fresh)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
}
