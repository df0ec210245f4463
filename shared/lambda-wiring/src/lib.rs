//! Lifeboat on AWS. A function's `main.rs` calls [`Cloud::from_env`] to build the AWS
//! adapters from the environment the SAM template gives it, then hands Lambda events to
//! the shared code: a schedule tick to [`jobs::tick`], an SQS batch to [`handle_sqs`]
//! (the same runner the local worker uses), an API Gateway request to the `api` router.
//!
//! Adapters are built once per Lambda instance and reused by its invocations; a tenant's
//! key is unwrapped by KMS at most once per instance.

use api::{AppState, AuthError, Authenticator};
use aws_lambda_events::event::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent};
use engine::Ports;
use ports::{EventBus, Queue};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// What a function needs from its environment: names of the resources the template made.
pub const ENV_TABLE: &str = "LIFEBOAT_TABLE";
pub const ENV_BUCKET: &str = "LIFEBOAT_BUCKET";
pub const ENV_KMS_KEY: &str = "LIFEBOAT_KMS_KEY";
pub const ENV_BACKUP_QUEUE: &str = "LIFEBOAT_BACKUP_QUEUE";
pub const ENV_TRANSFER_QUEUE: &str = "LIFEBOAT_TRANSFER_QUEUE";
/// The EventBridge bus that finished backups, restores and exports are announced on
/// (optional: without it nothing is published).
pub const ENV_EVENT_BUS: &str = "LIFEBOAT_EVENT_BUS";
pub const ENV_TENANT_CLAIM: &str = "LIFEBOAT_TENANT_CLAIM";
pub const ENV_EXPORT_LINK_HOURS: &str = "LIFEBOAT_EXPORT_LINK_HOURS";

/// A backup stops this long before Lambda's deadline, to checkpoint and re-queue itself.
pub const PAUSE_MARGIN: Duration = Duration::from_secs(90);

/// The adapters of one region's stack.
#[derive(Clone)]
pub struct Cloud {
    pub ports: Ports,
    pub backups: Arc<dyn Queue>,
    pub transfers: Arc<dyn Queue>,
    /// Where jobs announce what they finished (see `jobs::events`).
    pub events: Option<Arc<dyn EventBus>>,
}

fn var(name: &str) -> Result<String, String> {
    match std::env::var(name) {
        Ok(v) if !v.is_empty() => Ok(v),
        _ => Err(format!(
            "{name} is not set; the function's template sets it to the stack's resource"
        )),
    }
}

/// The names of one stack's resources: what the template passes every function.
#[derive(Clone, Debug)]
pub struct Names {
    pub table: String,
    pub bucket: String,
    /// The KMS key's id, ARN or alias.
    pub kms_key: String,
    pub backup_queue: String,
    pub transfer_queue: String,
    /// The event bus's name or ARN; `None` publishes nothing.
    pub event_bus: Option<String>,
}

impl Names {
    /// The names from `LIFEBOAT_*`.
    ///
    /// # Errors
    /// A missing variable, named.
    pub fn from_env() -> Result<Names, String> {
        Ok(Names {
            table: var(ENV_TABLE)?,
            bucket: var(ENV_BUCKET)?,
            kms_key: var(ENV_KMS_KEY)?,
            backup_queue: var(ENV_BACKUP_QUEUE)?,
            transfer_queue: var(ENV_TRANSFER_QUEUE)?,
            event_bus: var(ENV_EVENT_BUS).ok(),
        })
    }
}

impl Cloud {
    /// Builds every adapter from `LIFEBOAT_*` and the usual AWS variables (region,
    /// credentials, `AWS_ENDPOINT_URL` for an emulator).
    ///
    /// # Errors
    /// A missing variable, named.
    pub async fn from_env() -> Result<Cloud, String> {
        let sdk = aws_adapters::load_sdk_config().await;
        let names = Names::from_env()?;
        Ok(Cloud::new(&sdk, &names))
    }

    /// Builds every adapter over `sdk` for the named resources: what [`Cloud::from_env`]
    /// does, for callers (tests, tools) that hold their own SDK configuration.
    pub fn new(sdk: &aws_adapters::SdkConfig, names: &Names) -> Cloud {
        let catalog: Arc<dyn ports::Catalog> =
            Arc::new(aws_adapters::DynamoCatalog::new(sdk, names.table.clone()));
        Cloud {
            ports: Ports {
                store: Arc::new(aws_adapters::S3ObjectStore::new(sdk, names.bucket.clone())),
                keys: Arc::new(aws_adapters::KmsKeyService::new(
                    sdk,
                    names.kms_key.clone(),
                    catalog.clone(),
                )),
                catalog,
                clock: Arc::new(ports::SystemClock),
            },
            backups: Arc::new(aws_adapters::SqsQueue::new(
                sdk,
                names.backup_queue.clone(),
                None,
            )),
            transfers: Arc::new(aws_adapters::SqsQueue::new(
                sdk,
                names.transfer_queue.clone(),
                None,
            )),
            events: names.event_bus.as_ref().map(|bus| {
                Arc::new(aws_adapters::EventBridgeBus::new(sdk, bus.clone())) as Arc<dyn EventBus>
            }),
        }
    }

    /// The job runner's context for one invocation: `worker` names it (the request id)
    /// and `deadline` is Lambda's, so that backups pause in time.
    pub fn jobs(&self, worker: &str, deadline: Option<SystemTime>) -> jobs::Context {
        let mut ctx = jobs::Context::new(
            self.ports.clone(),
            self.backups.clone(),
            Arc::new(connectors::BuiltIn),
            worker,
        );
        ctx.transfers = self.transfers.clone();
        ctx.events = self.events.clone();
        ctx.budget = deadline.map(|d| {
            d.duration_since(SystemTime::now())
                .unwrap_or_default()
                .saturating_sub(PAUSE_MARGIN)
        });
        ctx
    }

    /// The API's state behind API Gateway: tenants from the authorizer's verified claims.
    pub fn api(&self) -> AppState {
        let claim = std::env::var(ENV_TENANT_CLAIM).unwrap_or_else(|_| "tenant".into());
        let hours = std::env::var(ENV_EXPORT_LINK_HOURS)
            .ok()
            .and_then(|h| h.parse::<u64>().ok())
            .unwrap_or(24);
        AppState {
            ports: self.ports.clone(),
            backups: self.backups.clone(),
            transfers: self.transfers.clone(),
            auth: Arc::new(GatewayClaims { claim }),
            link_ttl: Duration::from_secs(hours * 3600),
            connectors: Arc::new(connectors::OverNetwork),
        }
    }
}

/// Lambda's deadline (milliseconds since the epoch) as a time.
pub fn deadline_of(ctx: &lambda_runtime::Context) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ctx.deadline)
}

/// Runs an SQS batch and reports the messages that must come back (Lambda's partial batch
/// response): a failed job, or one that found its account busy.
pub async fn handle_sqs(ctx: &jobs::Context, event: SqsEvent) -> SqsBatchResponse {
    let msgs: Vec<jobs::Incoming> = event
        .records
        .into_iter()
        .map(|r| jobs::Incoming {
            id: r.message_id.unwrap_or_default(),
            body: r.body.unwrap_or_default(),
        })
        .collect();
    let handled = jobs::handle_batch(ctx, &msgs).await;
    let mut resp = SqsBatchResponse::default();
    for h in handled {
        match (&h.outcome, &h.error) {
            (Some(o), _) => tracing::info!(job = %h.id, outcome = ?o, "job handled"),
            (None, Some(e)) => tracing::warn!(job = %h.id, error = %e, "job failed"),
            (None, None) => {}
        }
        if h.failed() {
            let mut f = BatchItemFailure::default();
            f.item_identifier = h.id;
            resp.batch_item_failures.push(f);
        }
    }
    resp
}

/// The tenant from API Gateway's JWT authorizer: the token was verified before the
/// function ran, and the claims arrive in the request context. A request without them
/// (a route the template left open by mistake) is refused.
pub struct GatewayClaims {
    pub claim: String,
}

impl Authenticator for GatewayClaims {
    fn tenant(&self, parts: &axum::http::request::Parts) -> Result<domain::TenantId, AuthError> {
        use lambda_http::request::RequestContext;
        let claims = match parts.extensions.get::<RequestContext>() {
            Some(RequestContext::ApiGatewayV2(c)) => c
                .authorizer
                .as_ref()
                .and_then(|a| a.jwt.as_ref())
                .map(|j| &j.claims),
            _ => None,
        };
        let value = claims
            .and_then(|c| c.get(&self.claim))
            .ok_or_else(|| AuthError("the request carries no verified tenant".into()))?;
        domain::TenantId::new(value)
            .map_err(|_| AuthError("the token names no valid tenant".into()))
    }
}

/// Logs as JSON lines (Lambda's JSON log format), the level from `RUST_LOG`.
pub fn init_logging() {
    tracing_subscriber::fmt()
        .json()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_current_span(false)
        .without_time()
        .init();
}
