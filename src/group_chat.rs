//! placeholder
use crate::app::App;
use axum::Router;
use std::sync::Arc;
pub fn router(_app: Arc<App>) -> Router {
    Router::new()
}
