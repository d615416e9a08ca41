//! Vercel function `api/dashboard`: the dashboard's prefetch (`gcbb::dashboard`).

#[tokio::main]
async fn main() -> Result<(), vercel_runtime::Error> {
    gcbb::platform::runtime::serve(&gcbb::routes::DASHBOARD).await
}
