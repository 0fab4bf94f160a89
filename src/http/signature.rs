//! Twilio's webhook signature (`X-Twilio-Signature`): the base64 HMAC-SHA1, keyed with the
//! account's auth token, of the URL Twilio requested followed by every form parameter, names in
//! byte order and each name's values sorted, as name then value.
//!
//! The HMAC is the textbook construction (RFC 2104) over the `sha1` crate, checked against RFC
//! 2202's vectors and Twilio's published example below.

use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha1::Sha1;

/// The signature Twilio sends for a request to `url` with the form `params`.
pub fn twilio_signature(auth_token: &str, url: &str, params: &[(String, String)]) -> String {
    let mut sorted: Vec<(&str, &str)> = params
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    // Sorting (name, value) pairs is "names sorted, then each name's values sorted".
    sorted.sort_unstable();
    let mut data = String::with_capacity(
        url.len() + sorted.iter().map(|(k, v)| k.len() + v.len()).sum::<usize>(),
    );
    data.push_str(url);
    for (k, v) in sorted {
        data.push_str(k);
        data.push_str(v);
    }
    base64::engine::general_purpose::STANDARD
        .encode(hmac_sha1(auth_token.as_bytes(), data.as_bytes()))
}

/// Whether `signature` is Twilio's for this request. Like Twilio's own validators, it also
/// accepts the URL with the default port added or removed (a proxy in front may report either
/// form). An empty auth token validates nothing.
pub fn is_valid(auth_token: &str, url: &str, params: &[(String, String)], signature: &str) -> bool {
    if auth_token.is_empty() || signature.is_empty() {
        return false;
    }
    // Every candidate is computed and compared, so the time taken does not depend on which
    // form matched.
    url_forms(url).iter().fold(false, |ok, u| {
        ok | constant_time_eq(
            twilio_signature(auth_token, u, params).as_bytes(),
            signature.as_bytes(),
        )
    })
}

/// `url`, and `url` with its scheme's default port toggled (added when absent, removed when
/// present).
fn url_forms(url: &str) -> Vec<String> {
    let mut forms = vec![url.to_owned()];
    let Some((scheme, rest)) = url.split_once("://") else {
        return forms;
    };
    let default_port = match scheme.to_ascii_lowercase().as_str() {
        "https" => "443",
        "http" => "80",
        _ => return forms,
    };
    let authority_len = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_len);
    // The port follows the last ':' of the host, which for an IPv6 literal comes after ']'.
    let host_start = authority.rfind('@').map_or(0, |i| i + 1);
    let host_port = &authority[host_start..];
    let port_at = match host_port.rfind(':') {
        Some(i) if !host_port[i..].contains(']') => Some(host_start + i),
        _ => None,
    };
    let toggled = match port_at {
        None => format!("{authority}:{default_port}"),
        Some(i) if &authority[i + 1..] == default_port => authority[..i].to_owned(),
        Some(_) => return forms,
    };
    forms.push(format!("{scheme}://{toggled}{tail}"));
    forms
}

fn hmac_sha1(key: &[u8], message: &[u8]) -> [u8; 20] {
    let mut mac = Hmac::<Sha1>::new_from_slice(key).expect("HMAC takes a key of any length");
    mac.update(message);
    mac.finalize().into_bytes().into()
}

/// Compares without stopping at the first difference (a length difference shows, which says
/// nothing: every signature is 28 characters).
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(p: &[(&str, &str)]) -> Vec<(String, String)> {
        p.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    const TWILIO_URL: &str = "https://mycompany.com/myapp.php?foo=1&bar=2";
    const TWILIO_PARAMS: &[(&str, &str)] = &[
        ("CallSid", "CA1234567890ABCDE"),
        ("Caller", "+14158675309"),
        ("Digits", "1234"),
        ("From", "+14158675309"),
        ("To", "+18005551212"),
    ];
    const TWILIO_SIGNATURE: &str = "RSOYDt4T1cUTdK1PDd93/VVr8B8=";

    #[test]
    fn hmac_matches_rfc_2202() {
        let hex = |b: [u8; 20]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
        assert_eq!(
            hex(hmac_sha1(&[0x0b; 20], b"Hi There")),
            "b617318655057264e28bc0b6fb378c8ef146be00"
        );
        assert_eq!(
            hex(hmac_sha1(b"Jefe", b"what do ya want for nothing?")),
            "effcdf6ae5eb2fa2d27416d5f184df9c259a7c79"
        );
        // A key longer than the block is hashed first.
        assert_eq!(
            hex(hmac_sha1(
                &[0xaa; 80],
                b"Test Using Larger Than Block-Size Key - Hash Key First"
            )),
            "aa4ae5e15272d00e95705637ce8a3b55ed402112"
        );
    }

    #[test]
    fn matches_twilios_published_example_in_any_order() {
        let mut params = pairs(TWILIO_PARAMS);
        assert_eq!(
            twilio_signature("12345", TWILIO_URL, &params),
            TWILIO_SIGNATURE
        );
        params.reverse();
        assert!(is_valid("12345", TWILIO_URL, &params, TWILIO_SIGNATURE));
    }

    #[test]
    fn any_change_invalidates() {
        let params = pairs(TWILIO_PARAMS);
        assert!(!is_valid("12346", TWILIO_URL, &params, TWILIO_SIGNATURE));
        assert!(!is_valid(
            "12345",
            "https://mycompany.com/myapp.php?foo=1&bar=3",
            &params,
            TWILIO_SIGNATURE
        ));
        let mut tampered = params.clone();
        tampered[2].1 = "9999".into();
        assert!(!is_valid("12345", TWILIO_URL, &tampered, TWILIO_SIGNATURE));
        let mut extra = params.clone();
        extra.push(("Extra".into(), String::new()));
        assert!(!is_valid("12345", TWILIO_URL, &extra, TWILIO_SIGNATURE));
        assert!(!is_valid("12345", TWILIO_URL, &params, ""));
        assert!(!is_valid("", TWILIO_URL, &params, TWILIO_SIGNATURE));
    }

    #[test]
    fn repeated_names_sort_their_values() {
        let a = pairs(&[("x", "2"), ("y", "0"), ("x", "1")]);
        let b = pairs(&[("x", "1"), ("x", "2"), ("y", "0")]);
        assert_eq!(
            twilio_signature("k", "https://h/", &a),
            twilio_signature("k", "https://h/", &b)
        );
    }

    #[test]
    fn the_default_port_may_be_added_or_removed() {
        let params = pairs(TWILIO_PARAMS);
        let with_port = "https://mycompany.com:443/myapp.php?foo=1&bar=2";
        let signed_with_port = twilio_signature("12345", with_port, &params);
        assert!(is_valid("12345", TWILIO_URL, &params, &signed_with_port));
        assert!(is_valid("12345", with_port, &params, TWILIO_SIGNATURE));
        // Another port is another URL.
        let other = twilio_signature("12345", "https://mycompany.com:8443/myapp.php", &params);
        assert!(!is_valid(
            "12345",
            "https://mycompany.com/myapp.php",
            &params,
            &other
        ));
    }

    #[test]
    fn url_forms_toggle_only_the_default_port() {
        assert_eq!(
            url_forms("http://127.0.0.1:80/a?b=1"),
            ["http://127.0.0.1:80/a?b=1", "http://127.0.0.1/a?b=1"]
        );
        assert_eq!(
            url_forms("https://h.example"),
            ["https://h.example", "https://h.example:443"]
        );
        assert_eq!(
            url_forms("http://[::1]/x"),
            ["http://[::1]/x", "http://[::1]:80/x"]
        );
        assert_eq!(
            url_forms("https://u:p@h.example:443/x"),
            ["https://u:p@h.example:443/x", "https://u:p@h.example/x"]
        );
        assert_eq!(
            url_forms("http://127.0.0.1:8080/x"),
            ["http://127.0.0.1:8080/x"]
        );
    }
}
