//! Lambda function `gcbb-health` (buffered): database and cache reachability, the same router as `api/health.rs` (`gcbb::health`).

#[tokio::main]
async fn main() -> Result<(), gcbb_lambda::Error> {
    gcbb_lambda::serve_buffered(&gcbb::routes::HEALTH).await
}
