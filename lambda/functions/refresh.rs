//! Lambda function `gcbb-refresh` (buffered): the cron refresh, over HTTP with `CRON_SECRET` or from an EventBridge schedule, the same router as `api/refresh.rs` (`gcbb::refresh`).

#[tokio::main]
async fn main() -> Result<(), gcbb_lambda::Error> {
    gcbb_lambda::serve_buffered(&gcbb::routes::REFRESH).await
}
