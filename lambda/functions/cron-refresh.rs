//! Lambda function `gcbb-cron-refresh` (buffered): the cron refresh, over HTTP with `CRON_SECRET` or from an EventBridge schedule, the same router as `api/cron-refresh.rs` (`gcbb::refresh`).

#[tokio::main]
async fn main() -> Result<(), gcbb_lambda::Error> {
    gcbb_lambda::serve_buffered(&gcbb::routes::CRON_REFRESH).await
}
