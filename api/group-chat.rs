//! Vercel function `api/group-chat`: a group's streamed replies and its history (`gcbb::chat::group`).

#[tokio::main]
async fn main() -> Result<(), vercel_runtime::Error> {
    gcbb::platform::runtime::serve(&gcbb::routes::GROUP_CHAT).await
}
