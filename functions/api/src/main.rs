//! The HTTP API behind API Gateway: the same router `lifeboat serve` runs locally.

use lambda_runtime::Error;

#[tokio::main]
async fn main() -> Result<(), Error> {
    lambda_wiring::init_logging();
    let cloud = lambda_wiring::Cloud::from_env().await?;
    lambda_http::run(api::router(cloud.api())).await
}
