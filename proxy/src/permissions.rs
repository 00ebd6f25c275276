//! L7 intention permissions: Consul's `Permissions` of an intention, compiled once per
//! intention set and matched against each HTTP request.
//!
//! A permission is an `Action` and an `HTTP` match: at most one of `PathExact`, `PathPrefix`,
//! `PathRegex` (on the path without its query, as Envoy's `url_path` matcher that Consul
//! generates), `Methods` (any of them), and every `Header` (`Present`, `Exact`, `Prefix`,
//! `Suffix` or `Regex`, each maybe `Invert`ed). A `Header` may name one of the request's
//! pseudo-headers, as in Envoy's header matcher: `:authority` (an HTTP/1 request's `Host`),
//! `:method`, `:path` (with the query) and `:scheme` (`https` for an HTTP/1 request, which came
//! over mTLS); any other name starting with `:` is never present. The first permission whose
//! match fits the request
//! decides. Regexes are RE2 syntax, matched against the whole value, in linear time (the
//! `regex` crate), and compiled here, never per request.

use std::borrow::Cow;

use regex::Regex;
use serde::Deserialize;

use crate::intentions::Action;

/// The parts of a request a permission looks at.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RequestView<'a> {
    pub(crate) method: &'a str,
    /// The path without its query.
    pub(crate) path: &'a str,
    pub(crate) headers: &'a http::HeaderMap,
    /// `:authority`: an h2 request's, or an HTTP/1 request's `Host`.
    pub(crate) authority: Option<&'a str>,
    /// `:path`: the path with its query.
    pub(crate) path_and_query: &'a str,
    /// `:scheme`: an h2 request's; `https` for HTTP/1 (it came over mTLS).
    pub(crate) scheme: &'a str,
}

impl<'a> RequestView<'a> {
    /// A request with no query, no authority and scheme `https` (for tests and fuzzing).
    #[cfg(any(test, feature = "fuzzing"))]
    pub(crate) fn new(method: &'a str, path: &'a str, headers: &'a http::HeaderMap) -> Self {
        RequestView {
            method,
            path,
            headers,
            authority: None,
            path_and_query: path,
            scheme: "https",
        }
    }

    /// What a permission sees of `request`.
    pub(crate) fn of<B>(request: &'a http::Request<B>) -> Self {
        let uri = request.uri();
        let headers = request.headers();
        RequestView {
            method: request.method().as_str(),
            path: uri.path(),
            headers,
            authority: uri.authority().map(|a| a.as_str()).or_else(|| {
                headers
                    .get(http::header::HOST)
                    .and_then(|h| h.to_str().ok())
            }),
            path_and_query: uri.path_and_query().map_or(uri.path(), |pq| pq.as_str()),
            scheme: match request.version() {
                http::Version::HTTP_2 => uri.scheme_str().unwrap_or("https"),
                _ => "https",
            },
        }
    }
}

/// One compiled permission.
#[derive(Debug, Clone)]
pub(crate) struct Permission {
    pub(crate) action: Action,
    matcher: Matcher,
}

#[derive(Debug, Clone)]
enum Matcher {
    Http(HttpMatch),
    /// A permission that cannot be used (a malformed entry, a regex this proxy cannot compile):
    /// it matches every request and denies it, so nothing is allowed by mistake.
    Unusable,
}

#[derive(Debug, Clone, Default)]
struct HttpMatch {
    path: Option<PathMatch>,
    methods: Vec<String>,
    headers: Vec<HeaderMatch>,
}

#[derive(Debug, Clone)]
enum PathMatch {
    Exact(String),
    Prefix(String),
    Regex(Regex),
}

#[derive(Debug, Clone)]
struct HeaderMatch {
    name: HeaderName,
    test: HeaderTest,
    invert: bool,
}

/// What a `Header` permission names.
#[derive(Debug, Clone)]
enum HeaderName {
    Header(http::HeaderName),
    Authority,
    Method,
    Path,
    Scheme,
    /// A pseudo-header requests do not have.
    Absent,
}

#[derive(Debug, Clone)]
enum HeaderTest {
    Present,
    Exact(String),
    Prefix(String),
    Suffix(String),
    Regex(Regex),
}

/// Consul's JSON for one permission (`structs.IntentionPermission`).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct PermissionJson {
    #[serde(default)]
    action: String,
    #[serde(default, rename = "HTTP")]
    http: Option<HttpJson>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct HttpJson {
    #[serde(default)]
    path_exact: String,
    #[serde(default)]
    path_prefix: String,
    #[serde(default)]
    path_regex: String,
    #[serde(default)]
    methods: Option<Vec<String>>,
    #[serde(default)]
    header: Option<Vec<HeaderJson>>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct HeaderJson {
    #[serde(default)]
    name: String,
    #[serde(default)]
    present: bool,
    #[serde(default)]
    exact: String,
    #[serde(default)]
    prefix: String,
    #[serde(default)]
    suffix: String,
    #[serde(default)]
    regex: String,
    #[serde(default)]
    invert: bool,
}

/// Why a permission could not be compiled.
#[derive(Debug, thiserror::Error)]
pub(crate) enum PermissionError {
    #[error("malformed permission: {0}")]
    Malformed(String),
    #[error("action {0:?} is neither allow nor deny")]
    Action(String),
    #[error("more than one of PathExact, PathPrefix and PathRegex")]
    Paths,
    #[error("invalid header name {0:?}")]
    HeaderName(String),
    #[error("header {0:?} sets none or more than one of Present, Exact, Prefix, Suffix, Regex")]
    HeaderTest(String),
    #[error("invalid regex {0:?}: {1}")]
    Regex(String, regex::Error),
}

impl Permission {
    /// Compiles one permission as the agent returns it. An unusable one is returned with the
    /// error, as a permission that denies everything.
    pub(crate) fn compile(json: &serde_json::Value) -> (Permission, Option<PermissionError>) {
        match Self::try_compile(json) {
            Ok(p) => (p, None),
            Err(e) => (
                Permission {
                    action: Action::Deny,
                    matcher: Matcher::Unusable,
                },
                Some(e),
            ),
        }
    }

    fn try_compile(json: &serde_json::Value) -> Result<Permission, PermissionError> {
        let parsed = PermissionJson::deserialize(json)
            .map_err(|e| PermissionError::Malformed(e.to_string()))?;
        let action = parsed
            .action
            .parse::<Action>()
            .map_err(|_| PermissionError::Action(parsed.action.clone()))?;
        let http = parsed.http.unwrap_or_default();
        let paths = [&http.path_exact, &http.path_prefix, &http.path_regex]
            .iter()
            .filter(|p| !p.is_empty())
            .count();
        if paths > 1 {
            return Err(PermissionError::Paths);
        }
        let path = if !http.path_exact.is_empty() {
            Some(PathMatch::Exact(http.path_exact))
        } else if !http.path_prefix.is_empty() {
            Some(PathMatch::Prefix(http.path_prefix))
        } else if !http.path_regex.is_empty() {
            Some(PathMatch::Regex(full_match(&http.path_regex)?))
        } else {
            None
        };
        let headers = http
            .header
            .unwrap_or_default()
            .into_iter()
            .map(HeaderMatch::compile)
            .collect::<Result<_, _>>()?;
        Ok(Permission {
            action,
            matcher: Matcher::Http(HttpMatch {
                path,
                methods: http.methods.unwrap_or_default(),
                headers,
            }),
        })
    }

    /// Whether this permission's match fits `request`.
    pub(crate) fn matches(&self, request: &RequestView<'_>) -> bool {
        match &self.matcher {
            Matcher::Unusable => true,
            Matcher::Http(m) => m.matches(request),
        }
    }
}

impl HttpMatch {
    fn matches(&self, request: &RequestView<'_>) -> bool {
        let path = match &self.path {
            None => true,
            Some(PathMatch::Exact(p)) => request.path == p,
            Some(PathMatch::Prefix(p)) => request.path.starts_with(p.as_str()),
            Some(PathMatch::Regex(re)) => re.is_match(request.path),
        };
        path && (self.methods.is_empty() || self.methods.iter().any(|m| m == request.method))
            && self.headers.iter().all(|h| h.matches(request))
    }
}

impl HeaderMatch {
    fn compile(json: HeaderJson) -> Result<Self, PermissionError> {
        let name = match json.name.to_ascii_lowercase().as_str() {
            ":authority" => HeaderName::Authority,
            ":method" => HeaderName::Method,
            ":path" => HeaderName::Path,
            ":scheme" => HeaderName::Scheme,
            pseudo if pseudo.len() > 1 && pseudo.starts_with(':') => HeaderName::Absent,
            name => HeaderName::Header(
                http::HeaderName::from_bytes(name.as_bytes())
                    .map_err(|_| PermissionError::HeaderName(json.name.clone()))?,
            ),
        };
        let set = [
            json.present,
            !json.exact.is_empty(),
            !json.prefix.is_empty(),
            !json.suffix.is_empty(),
            !json.regex.is_empty(),
        ]
        .iter()
        .filter(|s| **s)
        .count();
        if set != 1 {
            return Err(PermissionError::HeaderTest(json.name));
        }
        let test = if json.present {
            HeaderTest::Present
        } else if !json.exact.is_empty() {
            HeaderTest::Exact(json.exact)
        } else if !json.prefix.is_empty() {
            HeaderTest::Prefix(json.prefix)
        } else if !json.suffix.is_empty() {
            HeaderTest::Suffix(json.suffix)
        } else {
            HeaderTest::Regex(full_match(&json.regex)?)
        };
        Ok(HeaderMatch {
            name,
            test,
            invert: json.invert,
        })
    }

    /// Envoy's header matcher: a header sent more than once is matched as its values joined
    /// with commas. An absent header fits no test, inverted or not, except an inverted
    /// `Present` (Envoy's `HeaderUtility::matchHeaders`).
    fn matches(&self, request: &RequestView<'_>) -> bool {
        let value = match &self.name {
            HeaderName::Header(name) => joined(request.headers, name),
            HeaderName::Authority => request.authority.map(Cow::Borrowed),
            HeaderName::Method => Some(Cow::Borrowed(request.method)),
            HeaderName::Path => Some(Cow::Borrowed(request.path_and_query)),
            HeaderName::Scheme => Some(Cow::Borrowed(request.scheme)),
            HeaderName::Absent => None,
        };
        let Some(value) = value else {
            return self.invert && matches!(self.test, HeaderTest::Present);
        };
        let fits = match &self.test {
            HeaderTest::Present => true,
            HeaderTest::Exact(v) => value == v.as_str(),
            HeaderTest::Prefix(v) => value.starts_with(v.as_str()),
            HeaderTest::Suffix(v) => value.ends_with(v.as_str()),
            HeaderTest::Regex(re) => re.is_match(&value),
        };
        fits != self.invert
    }
}

/// The values of header `name` joined with commas, or `None` when the request has none.
fn joined<'a>(headers: &'a http::HeaderMap, name: &http::HeaderName) -> Option<Cow<'a, str>> {
    let mut values = headers.get_all(name).iter();
    let first = String::from_utf8_lossy(values.next()?.as_bytes());
    Some(values.fold(first, |mut all, v| {
        let all_mut = all.to_mut();
        all_mut.push(',');
        all_mut.push_str(&String::from_utf8_lossy(v.as_bytes()));
        all
    }))
}

/// A request path as Envoy's `normalize_path` makes it before matching and forwarding (RFC 3986
/// 6.2.2): percent-encoded unreserved characters decoded (`%61` is `a`), other escapes kept
/// with upper-case hex, and `.` and `..` segments removed. Without it `/public/../admin`,
/// `/./admin` or `/%61dmin` would pass a deny on `/admin` and reach an app that normalizes.
pub(crate) fn normalize_path(path: &str) -> String {
    let bytes = path.as_bytes();
    let mut decoded = String::with_capacity(path.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && bytes[i + 1].is_ascii_hexdigit()
            && bytes[i + 2].is_ascii_hexdigit()
        {
            let hex = &path[i + 1..i + 3];
            let b = u8::from_str_radix(hex, 16).expect("two hex digits");
            if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
                decoded.push(char::from(b));
            } else {
                decoded.push('%');
                decoded.push_str(&hex.to_ascii_uppercase());
            }
            i += 3;
            continue;
        }
        let ch = path[i..].chars().next().expect("i is on a char boundary");
        decoded.push(ch);
        i += ch.len_utf8();
    }
    // Remove dot segments (RFC 3986 5.2.4), keeping a trailing slash.
    let mut out: Vec<&str> = Vec::new();
    let segments: Vec<&str> = decoded.split('/').collect();
    let last = segments.len() - 1;
    for (n, segment) in segments.iter().enumerate() {
        match *segment {
            "." => {
                if n == last {
                    out.push("");
                }
            }
            ".." => {
                if out.len() > 1 {
                    out.pop();
                }
                if n == last {
                    out.push("");
                }
            }
            s => out.push(s),
        }
    }
    let joined = out.join("/");
    if joined.starts_with('/') {
        joined
    } else {
        format!("/{joined}")
    }
}

/// A regex that must match the whole value, as Envoy's `safe_regex` does.
fn full_match(pattern: &str) -> Result<Regex, PermissionError> {
    Regex::new(&format!("^(?:{pattern})$"))
        .map_err(|e| PermissionError::Regex(pattern.to_string(), e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn view<'a>(method: &'a str, path: &'a str, headers: &'a http::HeaderMap) -> RequestView<'a> {
        RequestView::new(method, path, headers)
    }

    fn compile(json: serde_json::Value) -> Permission {
        let (p, e) = Permission::compile(&json);
        assert!(e.is_none(), "{e:?}");
        p
    }

    #[test]
    fn paths_match_exactly_by_prefix_and_by_whole_regex() {
        let none = http::HeaderMap::new();
        let exact = compile(json!({"Action": "allow", "HTTP": {"PathExact": "/"}}));
        assert!(exact.matches(&view("GET", "/", &none)));
        assert!(!exact.matches(&view("GET", "/x", &none)));
        let prefix = compile(json!({"Action": "deny", "HTTP": {"PathPrefix": "/admin"}}));
        assert!(prefix.matches(&view("GET", "/admin/users", &none)));
        assert!(!prefix.matches(&view("GET", "/adm", &none)));
        assert_eq!(prefix.action, Action::Deny);
        let regex = compile(json!({"Action": "allow", "HTTP": {"PathRegex": "/v[0-9]+/.*"}}));
        assert!(regex.matches(&view("GET", "/v2/items", &none)));
        assert!(
            !regex.matches(&view("GET", "/api/v2/items", &none)),
            "the whole path must match"
        );
    }

    #[test]
    fn methods_and_every_header_must_fit() {
        let p = compile(json!({"Action": "allow", "HTTP": {
        "Methods": ["GET", "HEAD"],
        "Header": [
            {"Name": "x-debug", "Present": true},
            {"Name": "x-env", "Exact": "prod", "Invert": true},
            {"Name": "user-agent", "Prefix": "curl/"},
            {"Name": "x-team", "Suffix": "-ops"},
            {"Name": "x-id", "Regex": "[a-f0-9]{4}"}
        ]}}));
        let mut h = http::HeaderMap::new();
        h.insert("x-debug", "1".parse().unwrap());
        h.insert("user-agent", "curl/8.0".parse().unwrap());
        h.insert("x-team", "web-ops".parse().unwrap());
        h.insert("x-id", "beef".parse().unwrap());
        h.insert("x-env", "staging".parse().unwrap());
        assert!(p.matches(&view("GET", "/", &h)));
        assert!(!p.matches(&view("POST", "/", &h)), "method not listed");
        h.insert("x-env", "prod".parse().unwrap());
        assert!(!p.matches(&view("GET", "/", &h)), "inverted exact fits");
        h.insert("x-env", "dev".parse().unwrap());
        assert!(p.matches(&view("GET", "/", &h)));
        h.insert("x-id", "beefy".parse().unwrap());
        assert!(
            !p.matches(&view("GET", "/", &h)),
            "the whole value must match"
        );
        h.remove("x-id");
        assert!(!p.matches(&view("GET", "/", &h)), "an absent header fails");
        h.insert("x-id", "beef".parse().unwrap());
        h.remove("x-env");
        assert!(
            !p.matches(&view("GET", "/", &h)),
            "an absent header fails an inverted Exact too, as in Envoy"
        );
        let absent = compile(json!({"Action": "allow", "HTTP": {
            "Header": [{"Name": "x-debug", "Present": true, "Invert": true}]}}));
        assert!(absent.matches(&view("GET", "/", &http::HeaderMap::new())));
    }

    #[test]
    fn paths_are_normalized_as_envoy_does() {
        for (raw, normal) in [
            ("/", "/"),
            ("/admin", "/admin"),
            ("/public/../admin", "/admin"),
            ("/./admin", "/admin"),
            ("/%61dmin", "/admin"),
            ("/a/b/../../admin/x", "/admin/x"),
            ("/../../admin", "/admin"),
            ("/admin/.", "/admin/"),
            ("/admin/..", "/"),
            ("/a%2fb", "/a%2Fb"),
            ("/a%20b", "/a%20b"),
            ("/%7e/x", "/~/x"),
            ("/100%", "/100%"),
            ("/%zz", "/%zz"),
            ("/é/../x", "/x"),
        ] {
            assert_eq!(normalize_path(raw), normal, "{raw}");
        }
    }

    #[test]
    fn pseudo_headers_are_matched_as_envoy_sees_them() {
        let fits = |request: &http::Request<()>, header: serde_json::Value| {
            compile(json!({"Action": "allow", "HTTP": {"Header": [header]}}))
                .matches(&RequestView::of(request))
        };
        let h1 = http::Request::get("/api/items?page=2")
            .header("host", "web.example:8080")
            .body(())
            .unwrap();
        for header in [
            json!({"Name": ":authority", "Exact": "web.example:8080"}),
            json!({"Name": ":method", "Exact": "GET"}),
            json!({"Name": ":path", "Exact": "/api/items?page=2"}),
            json!({"Name": ":scheme", "Exact": "https"}),
            json!({"Name": ":Authority", "Prefix": "web."}),
            json!({"Name": ":authority", "Exact": "other", "Invert": true}),
            json!({"Name": ":protocol", "Present": true, "Invert": true}),
        ] {
            assert!(fits(&h1, header.clone()), "{header} fits {h1:?}");
        }
        for header in [
            json!({"Name": ":authority", "Exact": "other"}),
            json!({"Name": ":path", "Exact": "/api/items"}),
            json!({"Name": ":method", "Regex": "POST|PUT"}),
            json!({"Name": ":protocol", "Present": true}),
        ] {
            assert!(!fits(&h1, header.clone()), "{header} does not fit {h1:?}");
        }
        let no_host = http::Request::get("/").body(()).unwrap();
        assert!(!fits(
            &no_host,
            json!({"Name": ":authority", "Present": true})
        ));
        // An h2 request carries its own authority and scheme.
        let h2 = http::Request::get("http://api.internal/x")
            .version(http::Version::HTTP_2)
            .body(())
            .unwrap();
        assert!(fits(
            &h2,
            json!({"Name": ":authority", "Exact": "api.internal"})
        ));
        assert!(fits(&h2, json!({"Name": ":scheme", "Exact": "http"})));
        assert!(fits(&h2, json!({"Name": ":path", "Exact": "/x"})));
        // An HTTP/1 absolute-form target is HTTP/1 all the same: it came over mTLS.
        let absolute = http::Request::get("http://api.internal/x")
            .body(())
            .unwrap();
        assert!(fits(
            &absolute,
            json!({"Name": ":scheme", "Exact": "https"})
        ));
        assert!(fits(
            &absolute,
            json!({"Name": ":authority", "Exact": "api.internal"})
        ));
    }

    #[test]
    fn a_header_sent_twice_is_matched_joined() {
        let p = compile(json!({"Action": "allow", "HTTP": {
            "Header": [{"Name": "x-a", "Exact": "1,2"}]}}));
        let mut h = http::HeaderMap::new();
        h.append("x-a", "1".parse().unwrap());
        h.append("x-a", "2".parse().unwrap());
        assert!(p.matches(&view("GET", "/", &h)));
    }

    #[test]
    fn an_unusable_permission_denies_everything() {
        for bad in [
            json!({"Action": "allow", "HTTP": {"PathRegex": "("}}),
            json!({"Action": "allow", "HTTP": {"PathExact": "/", "PathPrefix": "/"}}),
            json!({"Action": "maybe"}),
            json!({"Action": "allow", "HTTP": {"Header": [{"Name": "x"}]}}),
            json!({"Action": "allow", "HTTP": {"Header": [{"Name": ":", "Present": true}]}}),
            json!("not an object"),
        ] {
            let (p, e) = Permission::compile(&bad);
            assert!(e.is_some(), "{bad}");
            assert_eq!(p.action, Action::Deny);
            assert!(p.matches(&view("GET", "/", &http::HeaderMap::new())));
        }
    }
}
