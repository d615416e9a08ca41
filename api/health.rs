//! Vercel function `api/health`: database and cache reachability (`gcbb::health`).

#[tokio::main]
async fn main() -> Result<(), vercel_runtime::Error> {
    gcbb::platform::runtime::serve(&gcbb::routes::HEALTH).await
}
