//! A small lazily-built connection pool. STUB: the db helper replaces this.

use std::sync::Arc;
use tokio::sync::Mutex;
use tokio_postgres::{Client, NoTls};

use super::{DbConfig, DbError};

pub(crate) async fn connect(cfg: &DbConfig) -> Result<Client, DbError> {
    let (client, conn) = cfg
        .to_pg_config()
        .connect(NoTls)
        .await
        .map_err(|e| DbError::Unavailable(e.to_string()))?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(client)
}

#[derive(Clone)]
pub struct Pool {
    cfg: DbConfig,
    slot: Arc<Mutex<Option<Arc<Client>>>>,
}

pub type PooledClient = Arc<Client>;

impl Pool {
    pub fn new(cfg: DbConfig, _size: usize) -> Self {
        Pool {
            cfg,
            slot: Arc::new(Mutex::new(None)),
        }
    }

    pub fn config(&self) -> &DbConfig {
        &self.cfg
    }

    pub async fn get(&self) -> Result<PooledClient, DbError> {
        let mut slot = self.slot.lock().await;
        if let Some(c) = slot.as_ref() {
            if !c.is_closed() {
                return Ok(c.clone());
            }
        }
        let c = Arc::new(connect(&self.cfg).await?);
        *slot = Some(c.clone());
        Ok(c)
    }
}
