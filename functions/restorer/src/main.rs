//! Runs restore and export jobs (SQS).

use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent};
use lambda_runtime::{service_fn, Error, LambdaEvent};

#[tokio::main]
async fn main() -> Result<(), Error> {
    lambda_wiring::init_logging();
    let cloud = lambda_wiring::Cloud::from_env().await?;
    lambda_runtime::run(service_fn(|event: LambdaEvent<SqsEvent>| {
        let ctx = cloud.jobs(
            &event.context.request_id,
            Some(lambda_wiring::deadline_of(&event.context)),
        );
        async move {
            Ok::<SqsBatchResponse, Error>(lambda_wiring::handle_sqs(&ctx, event.payload).await)
        }
    }))
    .await
}
