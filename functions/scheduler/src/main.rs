//! Every 15 minutes (an EventBridge schedule): queue the tasks whose daily backup is due.

use lambda_runtime::{service_fn, Error, LambdaEvent};

#[tokio::main]
async fn main() -> Result<(), Error> {
    lambda_wiring::init_logging();
    let cloud = lambda_wiring::Cloud::from_env().await?;
    lambda_runtime::run(service_fn(|event: LambdaEvent<serde_json::Value>| {
        let ctx = cloud.jobs(&event.context.request_id, None);
        async move {
            let report = jobs::tick(&ctx).await?;
            tracing::info!(?report, "scheduler tick");
            Ok::<_, Error>(serde_json::to_value(report)?)
        }
    }))
    .await
}
