//! Key loading: the allow-list of algorithms (all of one key family: the algorithm-confusion
//! guard), the HMAC secret, and the public key file, probed once so that a key the crypto
//! backend refuses fails at start-up rather than on every token.

use std::path::Path;

use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey};

use super::public_key::parse_public_pem;
use super::{SetupError, ValidatorOptions, MIN_SECRET_BYTES};

#[cfg(test)]
mod tests;

/// Fails when a set secret is shorter than [`MIN_SECRET_BYTES`].
pub(crate) fn check_secret(secret: &str) -> Result<(), SetupError> {
    if secret.len() < MIN_SECRET_BYTES {
        return Err(SetupError::ShortSecret { len: secret.len() });
    }
    Ok(())
}

/// Parses the algorithm names: known names, at least one, all of one key family.
pub(super) fn allowed_algorithms(names: &[String]) -> Result<Vec<Algorithm>, SetupError> {
    let algorithms = names
        .iter()
        .map(|name| {
            name.parse::<Algorithm>()
                .map_err(|_| SetupError::UnknownAlgorithm { name: name.clone() })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let Some(first) = algorithms.first() else {
        return Err(SetupError::NoAlgorithm);
    };
    if algorithms.iter().any(|a| a.family() != first.family()) {
        return Err(SetupError::MixedKeyTypes {
            algorithms: names.to_vec(),
        });
    }
    Ok(algorithms)
}

/// The secret or the public key of the algorithms' family.
pub(super) fn decoding_key(
    options: &ValidatorOptions,
    algorithms: &[Algorithm],
) -> Result<DecodingKey, SetupError> {
    let family = algorithms
        .first()
        .map_or(AlgorithmFamily::Hmac, |a| a.family());
    if family == AlgorithmFamily::Hmac {
        return hmac_key(options);
    }
    if options.public_key_file.is_empty() {
        return Err(SetupError::NoKeyFile {
            algorithms: options.algorithms.clone(),
        });
    }
    let path = Path::new(&options.public_key_file);
    let key = public_key(path, family, options)?;
    probe(&key, algorithms, path)?;
    Ok(key)
}

fn hmac_key(options: &ValidatorOptions) -> Result<DecodingKey, SetupError> {
    if options.secret.is_empty() && !options.public_key_file.is_empty() {
        return Err(SetupError::KeyFileForHmac {
            algorithms: options.algorithms.clone(),
        });
    }
    if options.secret.is_empty() {
        return Err(SetupError::NoSecret);
    }
    check_secret(&options.secret)?;
    Ok(DecodingKey::from_secret(options.secret.as_bytes()))
}

/// Reads the public key file, which must hold a key of `family`.
fn public_key(
    path: &Path,
    family: AlgorithmFamily,
    options: &ValidatorOptions,
) -> Result<DecodingKey, SetupError> {
    let bytes = std::fs::read(path).map_err(|source| SetupError::ReadKeyFile {
        path: path.into(),
        source,
    })?;
    let key = parse_public_pem(&String::from_utf8_lossy(&bytes)).map_err(|reason| {
        SetupError::BadKeyFile {
            path: path.into(),
            reason,
        }
    })?;
    if key.family != family {
        return Err(SetupError::WrongKeyType {
            path: path.into(),
            found: key.family,
            algorithms: options.algorithms.clone(),
            needed: family,
        });
    }
    Ok(key.decoding_key())
}

/// Builds a verifier for each algorithm once, so that a key the crypto backend refuses (a point
/// off the curve, a P-256 key for ES384) fails at start-up rather than on every token.
pub(super) fn probe(
    key: &DecodingKey,
    algorithms: &[Algorithm],
    path: &Path,
) -> Result<(), SetupError> {
    for &algorithm in algorithms {
        if jsonwebtoken::crypto::verify("", b"", key, algorithm).is_err() {
            return Err(SetupError::UnusableKey {
                path: path.into(),
                algorithm,
            });
        }
    }
    Ok(())
}
