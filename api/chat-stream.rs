//! Vercel function `api/chat-stream`: a companion's streamed reply and the viewer's history with it (`gcbb::chat`).

#[tokio::main]
async fn main() -> Result<(), vercel_runtime::Error> {
    gcbb::platform::runtime::serve(&gcbb::routes::CHAT_STREAM).await
}
