//! Backs up one account per message (SQS); pauses and re-queues itself before Lambda's deadline.

use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent};
use lambda_runtime::{service_fn, Error, LambdaEvent};

#[tokio::main]
async fn main() -> Result<(), Error> {
    cloud::init_logging();
    let cloud = cloud::Cloud::from_env().await?;
    lambda_runtime::run(service_fn(|event: LambdaEvent<SqsEvent>| {
        let ctx = cloud.jobs(
            &event.context.request_id,
            Some(cloud::deadline_of(&event.context)),
        );
        async move { Ok::<SqsBatchResponse, Error>(cloud::handle_sqs(&ctx, event.payload).await) }
    }))
    .await
}
