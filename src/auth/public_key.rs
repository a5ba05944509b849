//! The public key file: the first PEM block of the file, a SubjectPublicKeyInfo (`PUBLIC KEY`)
//! or a PKCS#1 RSAPublicKey (`RSA PUBLIC KEY`) of an RSA (2048 to 4096 bits), EC or Ed25519 key.
//!
//! The DER is read by RustCrypto's `spki` and `pkcs1`, the base64 by `base64`. Only the armour
//! is found here, and leniently (explanatory text around the block, any line width, optional
//! padding), as key files written by any tool were accepted so far; `pem-rfc7468` is strict
//! RFC 7468 (64-column lines, nothing after the END line).

use std::ops::RangeInclusive;

use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::DecodePaddingMode;
use base64::Engine as _;
use jsonwebtoken::{AlgorithmFamily, DecodingKey};
use pkcs1::RsaPublicKey;
use spki::der::Decode as _;
use spki::{ObjectIdentifier, SubjectPublicKeyInfoRef};

/// Accepted RSA modulus sizes, in bits.
const RSA_BITS: RangeInclusive<usize> = 2048..=4096;
/// Accepted RSA public exponent sizes, in bits: 2 to 2^33 - 1, as the `rsa` crate accepts.
const RSA_EXPONENT_BITS: RangeInclusive<usize> = 2..=33;
/// rsaEncryption.
const OID_RSA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");
/// RSASSA-PSS.
const OID_RSA_PSS: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.10");
/// id-ecPublicKey (the curve is checked when the key is probed).
const OID_EC: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");
/// id-Ed25519.
const OID_ED25519: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.101.112");
/// Length of an Ed25519 public key, in bytes.
const ED25519_KEY_BYTES: usize = 32;
/// Standard base64, padded or not, extra bits after the last byte ignored.
const PEM_BASE64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new()
        .with_decode_padding_mode(DecodePaddingMode::Indifferent)
        .with_decode_allow_trailing_bits(true),
);

#[cfg(test)]
mod tests;

/// What is wrong with the content of a public key file. `Display` is one line.
#[non_exhaustive]
#[derive(thiserror::Error, Debug, Clone, PartialEq, Eq)]
pub enum KeyFileError {
    /// No `-----BEGIN …-----` … `-----END …-----` block with a base64 body.
    #[error("not a PEM file (expected -----BEGIN PUBLIC KEY-----)")]
    NotPem,
    /// A `CERTIFICATE` block.
    #[error("holds a certificate; give its public key (openssl x509 -pubkey -noout -in cert.pem)")]
    Certificate,
    /// A `… PRIVATE KEY` block.
    #[error("holds a private key; give the public key (openssl pkey -pubout -in key.pem)")]
    PrivateKey,
    /// Any other block.
    #[error("unsupported PEM block {label:?}, expected PUBLIC KEY")]
    UnsupportedBlock {
        /// The block's label.
        label: String,
    },
    /// The block's DER is not the structure its label says.
    #[error("malformed key (bad DER inside the PEM block)")]
    BadDer,
    /// A key of another algorithm than RSA, EC or Ed25519.
    #[error("unsupported key type; expected an RSA, EC (P-256, P-384) or Ed25519 key")]
    UnsupportedKeyType,
    /// An RSA exponent outside [`RSA_EXPONENT_BITS`].
    #[error("RSA key with an unsupported public exponent")]
    RsaExponent,
    /// An RSA modulus outside [`RSA_BITS`].
    #[error("RSA key of {bits} bits; expected 2048 to 4096 bits")]
    RsaSize {
        /// The modulus size.
        bits: usize,
    },
}

/// A public key as `jsonwebtoken` takes it: PKCS#1 for RSA, the SEC1 point for EC, the 32 raw
/// bytes for Ed25519.
pub(super) struct PublicKey {
    pub(super) family: AlgorithmFamily,
    bytes: Vec<u8>,
}

impl PublicKey {
    pub(super) fn decoding_key(&self) -> DecodingKey {
        match self.family {
            AlgorithmFamily::Rsa => DecodingKey::from_rsa_der(&self.bytes),
            AlgorithmFamily::Ec => DecodingKey::from_ec_der(&self.bytes),
            AlgorithmFamily::Ed => DecodingKey::from_ed_der(&self.bytes),
            AlgorithmFamily::Hmac => DecodingKey::from_secret(&self.bytes),
        }
    }
}

/// Parses the first PEM block of `text` as a public key.
pub(super) fn parse_public_pem(text: &str) -> Result<PublicKey, KeyFileError> {
    let (label, der) = pem_block(text).ok_or(KeyFileError::NotPem)?;
    match label {
        "PUBLIC KEY" => spki(&der),
        "RSA PUBLIC KEY" => rsa_key(&der),
        "CERTIFICATE" => Err(KeyFileError::Certificate),
        label if label.ends_with("PRIVATE KEY") => Err(KeyFileError::PrivateKey),
        label => Err(KeyFileError::UnsupportedBlock {
            label: label.into(),
        }),
    }
}

/// The label and decoded body of the first `-----BEGIN …-----` block.
pub(super) fn pem_block(text: &str) -> Option<(&str, Vec<u8>)> {
    let (_, rest) = text.split_once("-----BEGIN ")?;
    let (label, rest) = rest.split_once("-----")?;
    let (body, _) = rest.split_once(&format!("-----END {label}-----"))?;
    let digits: String = body.split_ascii_whitespace().collect();
    let der = PEM_BASE64.decode(digits).ok()?;
    Some((label, der))
}

/// A SubjectPublicKeyInfo (`PUBLIC KEY`): the algorithm OID picks the family.
fn spki(der: &[u8]) -> Result<PublicKey, KeyFileError> {
    let info = SubjectPublicKeyInfoRef::from_der(der).map_err(|_| KeyFileError::BadDer)?;
    let key = info
        .subject_public_key
        .as_bytes()
        .ok_or(KeyFileError::BadDer)?;
    let family = match info.algorithm.oid {
        OID_RSA | OID_RSA_PSS => return rsa_key(key),
        OID_EC if !key.is_empty() => AlgorithmFamily::Ec,
        OID_ED25519 if key.len() == ED25519_KEY_BYTES => AlgorithmFamily::Ed,
        OID_EC | OID_ED25519 => return Err(KeyFileError::BadDer),
        _ => return Err(KeyFileError::UnsupportedKeyType),
    };
    Ok(PublicKey {
        family,
        bytes: key.to_vec(),
    })
}

/// A PKCS#1 RSAPublicKey: `SEQUENCE { n INTEGER, e INTEGER }` with a modulus of [`RSA_BITS`]
/// and an exponent of [`RSA_EXPONENT_BITS`].
pub(super) fn rsa_key(der: &[u8]) -> Result<PublicKey, KeyFileError> {
    let key = RsaPublicKey::from_der(der).map_err(|_| KeyFileError::BadDer)?;
    if !RSA_EXPONENT_BITS.contains(&bit_length(key.public_exponent.as_bytes())) {
        return Err(KeyFileError::RsaExponent);
    }
    let bits = bit_length(key.modulus.as_bytes());
    if !RSA_BITS.contains(&bits) {
        return Err(KeyFileError::RsaSize { bits });
    }
    Ok(PublicKey {
        family: AlgorithmFamily::Rsa,
        bytes: der.to_vec(),
    })
}

/// Bits of a big-endian unsigned integer, leading zeros excluded.
pub(super) fn bit_length(be: &[u8]) -> usize {
    let start = be.iter().position(|&b| b != 0).unwrap_or(be.len());
    match be[start..].split_first() {
        Some((top, rest)) => rest.len() * 8 + (8 - top.leading_zeros() as usize),
        None => 0,
    }
}
