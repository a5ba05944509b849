//! Unit tests of the public key file parser: weak or odd RSA keys, and any content, even
//! corrupted, handled without a panic.

use std::path::Path;

use jsonwebtoken::Algorithm;
use proptest::prelude::*;

use super::super::keys::probe;
use super::super::test_support::*;
use super::*;

/// A PKCS#1 RSAPublicKey with a 129-byte modulus of `top` followed by zeros.
fn pkcs1(top: u8, exponent: &[u8]) -> Vec<u8> {
    let mut body = vec![0x02, 0x81, 129, 0x00, top];
    body.resize(body.len() + 127, 0);
    body.extend([0x02, u8::try_from(exponent.len()).unwrap()]);
    body.extend(exponent);
    let mut der = vec![0x30, 0x81, u8::try_from(body.len()).unwrap()];
    der.extend(body);
    der
}

#[test]
fn weak_or_odd_rsa_keys_are_refused() {
    let weak = pkcs1(0x80, &[0x01, 0x00, 0x01]);
    let error = rsa_key(&weak).err().unwrap().to_string();
    assert!(error.contains("1024 bits"), "{error}");
    assert!(parse_public_pem(&armour("RSA PUBLIC KEY", &weak)).is_err());
    let error = rsa_key(&pkcs1(0x80, &[0x01])).err().unwrap().to_string();
    assert!(error.contains("exponent"), "{error}");
    let mut trailing = der(RSA_PUBLIC_PKCS1);
    trailing.push(0);
    assert_eq!(rsa_key(&trailing).err().unwrap(), KeyFileError::BadDer);
}

#[test]
fn pem_blocks_are_found_leniently() {
    let body = der(RSA_PUBLIC);
    let one_line = armour("PUBLIC KEY", &body);
    let explained = format!("Public key of the issuer:\r\n{one_line}\n\n# end\n");
    for text in [RSA_PUBLIC, one_line.as_str(), explained.as_str()] {
        let (label, decoded) = pem_block(text).unwrap();
        assert_eq!((label, decoded.as_slice()), ("PUBLIC KEY", body.as_slice()));
    }
    let unpadded = one_line.replace('=', "");
    assert_eq!(pem_block(&unpadded).unwrap().1, body);
    assert!(pem_block("-----BEGIN PUBLIC KEY-----\naGV*\n-----END PUBLIC KEY-----\n").is_none());
    assert!(pem_block("-----BEGIN PUBLIC KEY-----\naGVsbG8=\n").is_none());
}

#[test]
fn bit_length_skips_leading_zeros() {
    assert_eq!(bit_length(&[0x00, 0x01, 0x00]), 9);
    assert_eq!(bit_length(&[0x00]), 0);
    assert_eq!(bit_length(&[]), 0);
}

#[test]
fn labels_say_what_the_file_holds() {
    let cases = [
        (RSA_PRIVATE, KeyFileError::PrivateKey),
        (EC_PRIVATE, KeyFileError::PrivateKey),
        ("not a key", KeyFileError::NotPem),
        (
            "-----BEGIN PUBLIC KEY-----\n!!\n-----END PUBLIC KEY-----\n",
            KeyFileError::NotPem,
        ),
        (
            "-----BEGIN CERTIFICATE-----\nAA==\n-----END CERTIFICATE-----\n",
            KeyFileError::Certificate,
        ),
    ];
    for (text, expected) in cases {
        assert_eq!(parse_public_pem(text).err(), Some(expected), "{text}");
    }
}

proptest! {
    #[test]
    fn any_key_file_content_is_handled(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        for label in ["PUBLIC KEY", "RSA PUBLIC KEY"] {
            let _ = parse_public_pem(&armour(label, &bytes));
        }
    }

    #[test]
    fn corrupted_key_files_are_handled(
        which in 0..4usize,
        at in any::<proptest::sample::Index>(),
        byte in any::<u8>(),
        cut in any::<proptest::sample::Index>(),
    ) {
        let (pem, algorithm) = [
            (RSA_PUBLIC, Algorithm::RS256),
            (RSA_PUBLIC_PKCS1, Algorithm::PS256),
            (EC_PUBLIC, Algorithm::ES256),
            (ED_PUBLIC, Algorithm::EdDSA),
        ][which];
        let (label, mut bytes) = pem_block(pem).unwrap();
        let at = at.index(bytes.len());
        bytes[at] = byte;
        bytes.truncate(cut.index(bytes.len() + 1));
        if let Ok(key) = parse_public_pem(&armour(label, &bytes)) {
            let _ = probe(&key.decoding_key(), &[algorithm], Path::new("key.pem"));
        }
    }
}
