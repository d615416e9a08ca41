//! Vercel function `api/companion`: serves the library's router for this route.

#[tokio::main]
async fn main() -> Result<(), vercel_runtime::Error> {
    gcbb::runtime::serve_function("companion").await
}
