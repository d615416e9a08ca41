//! The stored form of an entry: a small header (generation it was built under, fresh-until
//! time) and either the value inline or a manifest of chunks (count, length, SHA-256).
//!
//! Chunks are keyed by a random set id, so two writers never mix their chunks, and a reader
//! checks count, length and checksum: a partial or corrupt set is a miss, never garbage.

use bytes::{BufMut, Bytes, BytesMut};
use sha2::{Digest, Sha256};

const MAGIC: &[u8; 4] = b"GCE1";
const KIND_INLINE: u8 = 0;
const KIND_CHUNKED: u8 = 1;
const HEADER_LEN: usize = 4 + 1 + 8 + 8;
const MANIFEST_LEN: usize = 8 + 4 + 8 + 32;

/// What a stored entry says about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    pub generation: i64,
    /// Unix milliseconds after which the entry is stale (still readable until its TTL ends).
    pub fresh_until_ms: u64,
    pub body: Body,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Body {
    Inline(Bytes),
    Chunked(Manifest),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    pub set_id: u64,
    pub count: u32,
    pub total_len: u64,
    pub sha256: [u8; 32],
}

/// An entry ready to store: the head (stored at the entry's key) and its chunks, if any.
pub struct Encoded {
    pub head: Bytes,
    pub chunks: Vec<Bytes>,
    pub set_id: u64,
}

/// Splits `value` when it is larger than `chunk_size`.
pub fn encode(
    value: &Bytes,
    generation: i64,
    fresh_until_ms: u64,
    chunk_size: usize,
    set_id: u64,
) -> Encoded {
    let chunk_size = chunk_size.max(1);
    let mut head = BytesMut::with_capacity(HEADER_LEN + MANIFEST_LEN.max(value.len()));
    head.put_slice(MAGIC);
    if value.len() <= chunk_size {
        head.put_u8(KIND_INLINE);
        head.put_i64(generation);
        head.put_u64(fresh_until_ms);
        head.put_slice(value);
        return Encoded {
            head: head.freeze(),
            chunks: Vec::new(),
            set_id,
        };
    }
    let chunks: Vec<Bytes> = (0..value.len())
        .step_by(chunk_size)
        .map(|start| value.slice(start..(start + chunk_size).min(value.len())))
        .collect();
    head.put_u8(KIND_CHUNKED);
    head.put_i64(generation);
    head.put_u64(fresh_until_ms);
    head.put_u64(set_id);
    head.put_u32(chunks.len() as u32);
    head.put_u64(value.len() as u64);
    head.put_slice(&Sha256::digest(value));
    Encoded {
        head: head.freeze(),
        chunks,
        set_id,
    }
}

/// Reads a stored head; `None` for anything that isn't one of ours, whole.
pub fn decode_head(raw: &Bytes) -> Option<Head> {
    if raw.len() < HEADER_LEN || &raw[..4] != MAGIC {
        return None;
    }
    let generation = i64::from_be_bytes(raw[5..13].try_into().ok()?);
    let fresh_until_ms = u64::from_be_bytes(raw[13..21].try_into().ok()?);
    let rest = raw.slice(HEADER_LEN..);
    let body = match raw[4] {
        KIND_INLINE => Body::Inline(rest),
        KIND_CHUNKED if rest.len() == MANIFEST_LEN => Body::Chunked(Manifest {
            set_id: u64::from_be_bytes(rest[0..8].try_into().ok()?),
            count: u32::from_be_bytes(rest[8..12].try_into().ok()?),
            total_len: u64::from_be_bytes(rest[12..20].try_into().ok()?),
            sha256: rest[20..52].try_into().ok()?,
        }),
        _ => return None,
    };
    Some(Head {
        generation,
        fresh_until_ms,
        body,
    })
}

/// Joins chunks read back; `None` when one is missing or the whole doesn't match the manifest.
pub fn assemble(manifest: &Manifest, chunks: Vec<Option<Bytes>>) -> Option<Bytes> {
    if chunks.len() != manifest.count as usize {
        return None;
    }
    let total = usize::try_from(manifest.total_len).ok()?;
    let mut out = BytesMut::with_capacity(total);
    for chunk in chunks {
        let chunk = chunk?;
        if out.len() + chunk.len() > total {
            return None;
        }
        out.put_slice(&chunk);
    }
    if out.len() != total || Sha256::digest(&out)[..] != manifest.sha256[..] {
        return None;
    }
    Some(out.freeze())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest_of(e: &Encoded) -> Manifest {
        match decode_head(&e.head).unwrap().body {
            Body::Chunked(m) => m,
            Body::Inline(_) => panic!("expected chunks"),
        }
    }

    #[test]
    fn a_small_value_is_stored_inline() {
        let v = Bytes::from_static(b"\x00\xffhello");
        let e = encode(&v, 7, 1234, 16, 1);
        assert!(e.chunks.is_empty());
        let head = decode_head(&e.head).unwrap();
        assert_eq!(head.generation, 7);
        assert_eq!(head.fresh_until_ms, 1234);
        assert_eq!(head.body, Body::Inline(v));
    }

    #[test]
    fn a_large_value_round_trips_through_chunks() {
        let v = Bytes::from((0..1000u32).map(|i| i as u8).collect::<Vec<_>>());
        let e = encode(&v, 1, 0, 64, 9);
        assert_eq!(e.chunks.len(), 16);
        let m = manifest_of(&e);
        assert_eq!(m.set_id, 9);
        assert_eq!(
            assemble(&m, e.chunks.into_iter().map(Some).collect()),
            Some(v)
        );
    }

    #[test]
    fn a_missing_or_corrupt_chunk_is_no_value() {
        let v = Bytes::from(vec![5u8; 300]);
        let e = encode(&v, 1, 0, 100, 9);
        let m = manifest_of(&e);
        let mut missing: Vec<_> = e.chunks.iter().cloned().map(Some).collect();
        missing[1] = None;
        assert_eq!(assemble(&m, missing), None);
        let mut corrupt: Vec<_> = e.chunks.iter().cloned().map(Some).collect();
        corrupt[2] = Some(Bytes::from(vec![6u8; 100]));
        assert_eq!(assemble(&m, corrupt), None);
        let mut short: Vec<_> = e.chunks.iter().cloned().map(Some).collect();
        short[2] = Some(Bytes::from(vec![5u8; 99]));
        assert_eq!(assemble(&m, short), None);
        assert_eq!(assemble(&m, vec![]), None);
    }

    #[test]
    fn foreign_bytes_are_not_a_head() {
        assert_eq!(decode_head(&Bytes::from_static(b"")), None);
        assert_eq!(decode_head(&Bytes::from_static(b"3")), None);
        assert_eq!(
            decode_head(&Bytes::from_static(b"GCE1\x01aaaaaaaabbbbbbbbshort")),
            None
        );
    }
}
