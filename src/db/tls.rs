//! TLS for Postgres with rustls (ring) and compiled-in web PKI roots, honoring libpq's `sslmode`.
//!
//! `tokio-postgres-rustls` does the stream plumbing and the `tls-server-end-point` channel
//! binding; what it leaves to us is the certificate policy, which is libpq's:
//! - `prefer`/`require`: encrypt, accept any certificate (the handshake signature is still
//!   checked, so the peer does hold the certificate's key);
//! - `verify-ca`: the chain must end in a trusted root; the name is not checked;
//! - `verify-full`: chain and host name.
//!
//! Trusted roots are `webpki-roots` plus the PEM file `sslrootcert` names. SNI is sent for host
//! names (Neon routes by it) and never for IP addresses (rustls's rule).

use std::path::Path;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};
use tokio_postgres_rustls::MakeRustlsConnect;

use super::{DbConfig, DbError, SslMode};

/// The TLS connector `sslmode` asks for; `None` when the connection stays plaintext
/// (`disable`, or a Unix socket).
pub fn make_connector(cfg: &DbConfig) -> Result<Option<MakeRustlsConnect>, DbError> {
    if cfg.sslmode == SslMode::Disable || cfg.is_unix_socket() {
        return Ok(None);
    }
    Ok(Some(MakeRustlsConnect::new(client_config(cfg)?)))
}

/// The rustls client settings for `cfg.sslmode`.
pub fn client_config(cfg: &DbConfig) -> Result<ClientConfig, DbError> {
    // An explicit provider: the process-wide default is ambiguous when several crates enable one.
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| DbError::Tls(format!("TLS settings: {e}")))?;
    let config = match cfg.sslmode {
        SslMode::Disable | SslMode::Prefer | SslMode::Require => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyCertificate { provider }))
            .with_no_client_auth(),
        SslMode::VerifyCa => {
            let webpki = WebPkiServerVerifier::builder_with_provider(
                Arc::new(trusted_roots(cfg)?),
                provider,
            )
            .build()
            .map_err(|e| DbError::Tls(format!("TLS settings: {e}")))?;
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(ChainOnly { webpki }))
                .with_no_client_auth()
        }
        SslMode::VerifyFull => builder
            .with_root_certificates(trusted_roots(cfg)?)
            .with_no_client_auth(),
    };
    Ok(config)
}

/// `webpki-roots` plus the certificates of `sslrootcert`.
fn trusted_roots(cfg: &DbConfig) -> Result<RootCertStore, DbError> {
    let mut roots = RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    if let Some(path) = &cfg.sslrootcert {
        add_pem_roots(&mut roots, path)?;
    }
    Ok(roots)
}

fn add_pem_roots(roots: &mut RootCertStore, path: &Path) -> Result<(), DbError> {
    let shown = path.display();
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| DbError::Tls(format!("cannot read sslrootcert {shown}: {e}")))?;
    let mut added = 0;
    for cert in certs {
        let cert = cert.map_err(|e| DbError::Tls(format!("sslrootcert {shown}: {e}")))?;
        roots
            .add(cert)
            .map_err(|e| DbError::Tls(format!("sslrootcert {shown}: {e}")))?;
        added += 1;
    }
    if added == 0 {
        return Err(DbError::Tls(format!(
            "sslrootcert {shown} holds no PEM certificate"
        )));
    }
    Ok(())
}

/// Words a rustls failure for the operator: what was wrong, for which host, under which mode.
pub fn describe_tls_error(err: &rustls::Error, cfg: &DbConfig) -> String {
    let host = &cfg.host;
    let mode = cfg.sslmode;
    match err {
        rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer) => format!(
            "certificate not trusted for host {host} (sslmode={mode}): unknown issuer; \
             name its CA with sslrootcert="
        ),
        rustls::Error::InvalidCertificate(
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
        ) => format!("certificate not valid for host {host} (sslmode={mode}): {err}"),
        rustls::Error::InvalidCertificate(_) => {
            format!("certificate not trusted for host {host} (sslmode={mode}): {err}")
        }
        other => format!("TLS handshake with {host} failed (sslmode={mode}): {other}"),
    }
}

/// libpq's `require`: any certificate, but the handshake must be signed with its key.
#[derive(Debug)]
struct AnyCertificate {
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// libpq's `verify-ca`: the web PKI check with the name mismatch forgiven. webpki checks the
/// chain before the name, so a name error means the chain was already found good.
#[derive(Debug)]
struct ChainOnly {
    webpki: Arc<WebPkiServerVerifier>,
}

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self.webpki.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        ) {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.webpki.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(url: &str) -> DbConfig {
        DbConfig::parse(url).expect("the URL parses")
    }

    #[test]
    fn disable_and_unix_sockets_get_no_tls() {
        assert!(make_connector(&cfg("postgres://u@h/d?sslmode=disable"))
            .expect("builds")
            .is_none());
        assert!(
            make_connector(&cfg("postgres://u@/d?host=/run/pg&sslmode=verify-full"))
                .expect("builds")
                .is_none()
        );
    }

    #[test]
    fn every_tls_mode_builds_a_connector() {
        for mode in ["allow", "prefer", "require", "verify-ca", "verify-full"] {
            let c = cfg(&format!("postgres://u@h/d?sslmode={mode}"));
            assert!(make_connector(&c).expect("builds").is_some(), "{mode}");
        }
    }

    #[test]
    fn a_missing_sslrootcert_is_a_tls_error_naming_the_file() {
        let c = cfg("postgres://u@h/d?sslmode=verify-full&sslrootcert=/nonexistent/ca.pem");
        match client_config(&c) {
            Err(DbError::Tls(m)) => assert!(m.contains("/nonexistent/ca.pem"), "{m}"),
            other => panic!("expected a TLS error, got {:?}", other.map(|_| ())),
        }
    }

    #[test]
    fn an_sslrootcert_without_certificates_is_refused() {
        let path = std::env::temp_dir().join(format!("gcbb-empty-{}.pem", uuid::Uuid::new_v4()));
        std::fs::write(&path, "not a certificate\n").expect("writes");
        let c = cfg(&format!(
            "postgres://u@h/d?sslmode=verify-ca&sslrootcert={}",
            path.display()
        ));
        let result = client_config(&c);
        let _ = std::fs::remove_file(&path);
        match result {
            Err(DbError::Tls(m)) => assert!(m.contains("no PEM certificate"), "{m}"),
            other => panic!("expected a TLS error, got {:?}", other.map(|_| ())),
        }
    }

    #[test]
    fn tls_errors_name_the_host_and_the_mode() {
        let c = cfg("postgres://u@db.example/d?sslmode=verify-full");
        let m = describe_tls_error(
            &rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer),
            &c,
        );
        assert!(
            m.contains("not trusted for host db.example (sslmode=verify-full)"),
            "{m}"
        );
        let m = describe_tls_error(
            &rustls::Error::InvalidCertificate(CertificateError::NotValidForName),
            &c,
        );
        assert!(m.contains("not valid for host db.example"), "{m}");
    }
}
