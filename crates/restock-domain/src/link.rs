//! Where a text may send a shopper: an absolute http(s) URL, without a user name or password,
//! on one of the brand's own hosts. Anything else in a text is a phishing link with the brand's
//! name on it, so links are checked where they come in (Subscribe) and again where they go out
//! (the tracked-link redirect).

use url::{Host, Url};

/// Why a link may not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LinkError {
    #[error("must be an absolute http(s) URL")]
    NotWeb,
    #[error("must not carry a user name or password")]
    UserInfo,
    #[error("must be on one of the brand's link hosts ({allowed}), not {host}")]
    HostNotAllowed { host: String, allowed: String },
}

/// Checks `link` against the `allowed` hosts (as [`host_allowed`] matches them). The URL is
/// read as browsers read it (WHATWG URL), so what is checked is where the phone would go.
pub fn check(link: &str, allowed: &[String]) -> Result<(), LinkError> {
    let url = Url::parse(link.trim()).map_err(|_| LinkError::NotWeb)?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(LinkError::NotWeb);
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(LinkError::UserInfo);
    }
    let host = url.host_str().ok_or(LinkError::NotWeb)?;
    if host_allowed(host, allowed) {
        Ok(())
    } else {
        Err(LinkError::HostNotAllowed {
            host: host.to_string(),
            allowed: if allowed.is_empty() {
                "none configured".into()
            } else {
                allowed.join(", ")
            },
        })
    }
}

/// Whether `host` is one of `allowed`: the same host (case does not matter), or for an entry
/// `*.example.com`, any host under `example.com` (not `example.com` itself).
pub fn host_allowed(host: &str, allowed: &[String]) -> bool {
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    allowed.iter().any(|entry| {
        let entry = entry.trim().trim_end_matches('.').to_ascii_lowercase();
        match entry.strip_prefix("*.") {
            Some(parent) => host
                .strip_suffix(parent)
                .is_some_and(|sub| sub.len() > 1 && sub.ends_with('.')),
            None => !entry.is_empty() && host == entry,
        }
    })
}

/// The host of an http(s) URL, lower case; `None` for anything else.
pub fn host_of(url: &str) -> Option<String> {
    let url = Url::parse(url.trim()).ok()?;
    matches!(url.scheme(), "http" | "https")
        .then(|| url.host_str().map(str::to_ascii_lowercase))
        .flatten()
}

/// Checks a configured host entry (`shop.example.com` or `*.example.com`).
pub fn valid_host_entry(entry: &str) -> bool {
    let name = entry.strip_prefix("*.").unwrap_or(entry);
    !name.is_empty()
        && !name.contains(['/', ':', '@', '*'])
        && matches!(Host::parse(name), Ok(Host::Domain(_) | Host::Ipv4(_)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hosts(h: &[&str]) -> Vec<String> {
        h.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn only_the_brands_hosts_pass() {
        let allowed = hosts(&["shop.example", "*.cdn.example"]);
        for ok in [
            "https://shop.example/p/tee?v=1",
            "HTTPS://Shop.Example:443/p",
            "http://shop.example",
            "https://img.cdn.example/x",
            "https://a.b.cdn.example/x",
        ] {
            assert_eq!(check(ok, &allowed), Ok(()), "{ok}");
        }
        for bad in [
            "https://evil.example/",
            "https://shop.example.evil.example/",
            "https://evilshop.example/",
            "https://cdn.example/",
            "https://xcdn.example/",
            "https://shop.example@evil.example/",
            "https://evil.example\\@shop.example/",
            "https://evil.example#@shop.example/",
        ] {
            assert!(check(bad, &allowed).is_err(), "{bad}");
        }
        assert_eq!(
            check("https://user:pw@shop.example/", &allowed),
            Err(LinkError::UserInfo)
        );
        for not_web in [
            "javascript:alert(1)",
            "ftp://shop.example/",
            "/p/tee",
            "shop.example/p",
        ] {
            assert_eq!(
                check(not_web, &allowed),
                Err(LinkError::NotWeb),
                "{not_web}"
            );
        }
        assert!(check("https://shop.example/", &[]).is_err());
    }

    #[test]
    fn host_entries_are_bare_hosts() {
        assert!(valid_host_entry("shop.example"));
        assert!(valid_host_entry("*.shop.example"));
        for bad in [
            "",
            "https://shop.example",
            "shop.example/p",
            "*",
            "*.",
            "a*.b",
            "x:80",
        ] {
            assert!(!valid_host_entry(bad), "{bad}");
        }
        assert_eq!(
            host_of("https://Demo.Example/").as_deref(),
            Some("demo.example")
        );
        assert_eq!(host_of("ftp://demo.example/"), None);
    }
}
