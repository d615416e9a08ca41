//! Vercel function `api/dashboard-prefetch`: the dashboard's prefetch (`gcbb::dashboard`).

#[tokio::main]
async fn main() -> Result<(), vercel_runtime::Error> {
    gcbb::platform::runtime::serve(&gcbb::routes::DASHBOARD_PREFETCH).await
}
