//! Lambda function `gcbb-group-chat` (response streaming): a group's streamed replies and its history, the same router as `api/group-chat.rs` (`gcbb::chat::group`).

#[tokio::main]
async fn main() -> Result<(), gcbb_lambda::Error> {
    gcbb_lambda::serve_streaming(&gcbb::routes::GROUP_CHAT).await
}
