//! Lambda function `gcbb-dashboard-prefetch` (buffered): the dashboard's prefetch, the same router as `api/dashboard-prefetch.rs` (`gcbb::dashboard`).

#[tokio::main]
async fn main() -> Result<(), gcbb_lambda::Error> {
    gcbb_lambda::serve_buffered(&gcbb::routes::DASHBOARD_PREFETCH).await
}
