//! Lambda function `gcbb-dashboard` (buffered): the dashboard's prefetch, the same router as `api/dashboard.rs` (`gcbb::dashboard`).

#[tokio::main]
async fn main() -> Result<(), gcbb_lambda::Error> {
    gcbb_lambda::serve_buffered(&gcbb::routes::DASHBOARD).await
}
