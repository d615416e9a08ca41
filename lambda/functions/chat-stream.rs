//! Lambda function `gcbb-chat-stream` (response streaming): a companion's streamed reply and the viewer's history with it, the same router as `api/chat-stream.rs` (`gcbb::chat`).

#[tokio::main]
async fn main() -> Result<(), gcbb_lambda::Error> {
    gcbb_lambda::serve_streaming(&gcbb::routes::CHAT_STREAM).await
}
