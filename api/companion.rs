//! Vercel function `api/companion`: the owner's edits of a companion (`gcbb::companion`).

#[tokio::main]
async fn main() -> Result<(), vercel_runtime::Error> {
    gcbb::platform::runtime::serve(&gcbb::routes::COMPANION).await
}
