//! RS256 signature checks for `jsonwebtoken`, done with `ring` and installed as its provider.
//!
//! jsonwebtoken 10 needs a crypto backend, and neither of its own fits a function binary: the
//! `rust_crypto` one links the `rsa` crate (a second big-integer stack, and RUSTSEC-2023-0071),
//! the `aws_lc_rs` one builds AWS-LC from C with cmake. `ring` is linked already for TLS
//! (rustls), and RS256 is the only algorithm Clerk signs session tokens with, so that is the one
//! algorithm this provider verifies. Functions never sign: signing and JWK helpers refuse.

use jsonwebtoken::crypto::{CryptoProvider, JwkUtils, JwtSigner, JwtVerifier};
use jsonwebtoken::errors::{Error, ErrorKind};
use jsonwebtoken::jwk::{EllipticCurve, ThumbprintHash};
use jsonwebtoken::signature::{self, Verifier};
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey, DecodingKeyKind, EncodingKey};
use ring::signature::{RsaPublicKeyComponents, UnparsedPublicKey, RSA_PKCS1_2048_8192_SHA256};

/// The provider; [`install`] makes it the process default.
static PROVIDER: CryptoProvider = CryptoProvider {
    signer_factory: refuse_signing,
    verifier_factory: rs256_verifier,
    jwk_utils: JwkUtils {
        extract_rsa_public_key_components: refuse_key_extraction,
        extract_ec_public_key_coordinates: refuse_ec_extraction,
        compute_digest: thumbprint_digest,
    },
};

/// Makes RS256-on-ring jsonwebtoken's provider for this process. Idempotent; called before the
/// first token is checked.
pub fn install() {
    // Err only means a provider is installed already: ours, by an earlier call.
    let _ = PROVIDER.install_default();
}

fn rs256_verifier(algorithm: &Algorithm, key: &DecodingKey) -> Result<Box<dyn JwtVerifier>, Error> {
    if *algorithm != Algorithm::RS256 || key.family() != AlgorithmFamily::Rsa {
        return Err(ErrorKind::InvalidAlgorithm.into());
    }
    Ok(Box::new(Rs256Verifier(key.clone())))
}

struct Rs256Verifier(DecodingKey);

impl Verifier<Vec<u8>> for Rs256Verifier {
    fn verify(&self, msg: &[u8], sig: &Vec<u8>) -> Result<(), signature::Error> {
        let checked = match self.0.kind() {
            // A PEM key, as jsonwebtoken keeps it: the PKCS#1 `RSAPublicKey` DER, which is what
            // ring expects for RSA.
            DecodingKeyKind::SecretOrDer(der) => {
                UnparsedPublicKey::new(&RSA_PKCS1_2048_8192_SHA256, der).verify(msg, sig)
            }
            // A JWKS key: modulus and exponent, big-endian.
            DecodingKeyKind::RsaModulusExponent { n, e } => {
                RsaPublicKeyComponents { n, e }.verify(&RSA_PKCS1_2048_8192_SHA256, msg, sig)
            }
        };
        checked.map_err(|_| signature::Error::new())
    }
}

impl JwtVerifier for Rs256Verifier {
    fn algorithm(&self) -> Algorithm {
        Algorithm::RS256
    }
}

fn refuse_signing(_: &Algorithm, _: &EncodingKey) -> Result<Box<dyn JwtSigner>, Error> {
    Err(ErrorKind::InvalidAlgorithm.into())
}

fn refuse_key_extraction(_: &[u8]) -> Result<(Vec<u8>, Vec<u8>), Error> {
    Err(ErrorKind::InvalidRsaKey("not supported by this provider".into()).into())
}

fn refuse_ec_extraction(
    _: &[u8],
    _: Algorithm,
) -> Result<(EllipticCurve, Vec<u8>, Vec<u8>), Error> {
    Err(ErrorKind::InvalidEcdsaKey.into())
}

/// JWK thumbprints (RFC 7638).
fn thumbprint_digest(data: &[u8], hash: ThumbprintHash) -> Vec<u8> {
    let algorithm = match hash {
        ThumbprintHash::SHA256 => &ring::digest::SHA256,
        ThumbprintHash::SHA384 => &ring::digest::SHA384,
        ThumbprintHash::SHA512 => &ring::digest::SHA512,
    };
    ring::digest::digest(algorithm, data).as_ref().to_vec()
}
