//! TLS for Postgres with rustls and compiled-in roots. STUB: the db helper fills this in.
