//! Lambda function `gcbb-companion` (buffered): the owner's edits of a companion, the same router as `api/companion.rs` (`gcbb::companion`).

#[tokio::main]
async fn main() -> Result<(), gcbb_lambda::Error> {
    gcbb_lambda::serve_buffered(&gcbb::routes::COMPANION).await
}
