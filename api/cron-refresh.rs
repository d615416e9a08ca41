//! Vercel function `api/cron-refresh`: Vercel Cron's refresh of the read model and snapshots (`gcbb::refresh`).

#[tokio::main]
async fn main() -> Result<(), vercel_runtime::Error> {
    gcbb::platform::runtime::serve(&gcbb::routes::CRON_REFRESH).await
}
