//! HTTP answers read in full, and the contract's error JSON asserted on them.

use serde_json::Value;

/// An HTTP answer, read in full.
#[derive(Debug)]
pub struct HttpReply {
    /// Status code.
    pub status: u16,
    /// Headers, names lower-cased.
    pub headers: Vec<(String, String)>,
    /// Body bytes.
    pub body: Vec<u8>,
}

impl HttpReply {
    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as JSON (panics with the body when it is not JSON).
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "HTTP {} body is not JSON ({e}): {:?}",
                self.status,
                self.text()
            )
        })
    }

    /// Asserts the body is the contract's error JSON with `code`; returns the `error` object.
    pub fn assert_error(&self, status: u16, code: &str) -> Value {
        assert_eq!(
            self.status,
            status,
            "unexpected status, body: {}",
            self.text()
        );
        let body = self.json();
        let error = body
            .get("error")
            .unwrap_or_else(|| panic!("no `error` object in {body}"))
            .clone();
        for field in [
            "code",
            "message",
            "correlation_id",
            "service",
            "timestamp",
            "details",
        ] {
            assert!(
                error.get(field).is_some(),
                "error JSON lacks `{field}`: {body}"
            );
        }
        assert_eq!(error["code"], code, "error code in {body}");
        error
    }
}

/// Reads a whole `awc` response (status, lower-cased headers, body up to 16 MiB).
pub(super) async fn read_reply<S>(mut response: awc::ClientResponse<S>) -> Result<HttpReply, String>
where
    S: futures_util::Stream<Item = Result<actix_web::web::Bytes, awc::error::PayloadError>> + Unpin,
{
    let status = response.status().as_u16();
    let headers = response
        .headers()
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_ascii_lowercase(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let body = response
        .body()
        .limit(16 * 1024 * 1024)
        .await
        .map_err(|e| e.to_string())?
        .to_vec();
    Ok(HttpReply {
        status,
        headers,
        body,
    })
}
