//! The browser bundle's files as a phone on a slow network wants them:
//! content-hashed names, precompressed (brotli and gzip, chosen by the
//! request's `Accept-Encoding`) and cached for good; the pages themselves
//! are compressed on the fly and always revalidated.
//!
//! `scripts/lib.sh`'s `build_site` writes `pkg/hash.txt` (`js: <hash>`,
//! `wasm: <hash>`, `css: <hash>`) next to `threadline.<hash>.js`,
//! `.wasm` and `.css` and their `.br` and `.gz` forms. Without it (under
//! `cargo leptos watch`) the plain names are served and revalidated.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE, HeaderValue, LINK, VARY};
use axum::middleware::Next;
use axum::response::Response;
use leptos::config::LeptosOptions;
use tower_http::compression::predicate::{NotForContentType, Predicate, SizeAbove};
use tower_http::compression::{CompressionLayer, CompressionLevel, DefaultPredicate};
use tower_http::services::ServeDir;

/// A hashed file's name never names other contents: keep it for a year.
pub const IMMUTABLE: &str = "public, max-age=31536000, immutable";
/// Everything else: use it only after asking whether it changed.
pub const REVALIDATE: &str = "no-cache";

/// The bundle's file names, as the pages refer to them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Assets {
    /// `/pkg/threadline.<hash>.css`, or `/pkg/threadline.css` unhashed.
    pub css: String,
    /// Whether the names carry content hashes (and may be cached for good).
    pub hashed: bool,
    /// The lazy routes' modules (`/pkg/chunk_4.<id>.wasm`, …), which a page
    /// prefetches once it is interactive.
    pub lazy: Vec<String>,
    /// A `Link` header preloading the Wasm, JS and CSS (hashed names only).
    pub preload: Option<HeaderValue>,
}

impl Assets {
    /// Reads `<site-root>/pkg/hash.txt` and points Leptos's hydration
    /// scripts at the hashed JS and Wasm.
    pub fn load(options: &mut LeptosOptions) -> Assets {
        let pkg = Path::new(options.site_root.as_ref()).join(options.site_pkg_dir.as_ref());
        let hash_file = pkg.join("hash.txt");
        let name = options.output_name.to_string();
        let Ok(text) = std::fs::read_to_string(&hash_file) else {
            warn_if_missing(&pkg.join(format!("{name}.js")));
            return Assets {
                css: format!("/pkg/{name}.css"),
                hashed: false,
                lazy: Vec::new(),
                preload: None,
            };
        };
        let hash_of = |file: &str| hashes(&text).find(|(f, _)| *f == file).map(|(_, h)| h);
        warn_if_missing(&pkg.join(match hash_of("js") {
            Some(hash) => format!("{name}.{hash}.js"),
            None => format!("{name}.js"),
        }));
        let css = match hash_of("css") {
            Some(hash) => format!("/pkg/{name}.{hash}.css"),
            None => format!("/pkg/{name}.css"),
        };
        // Leptos joins `hash_file` to the server binary's folder: an
        // absolute path replaces that folder.
        let absolute = std::env::current_dir()
            .map(|dir| dir.join(&hash_file))
            .unwrap_or(hash_file);
        let lazy = match hash_of("manifest") {
            Some(id) => {
                let path = pkg.join(format!("__wasm_split_manifest.{id}.json"));
                std::fs::read_to_string(&path)
                    .map_err(|e| e.to_string())
                    .and_then(|manifest| lazy_modules(&manifest))
                    .unwrap_or_else(|e| {
                        tracing::warn!(path = %path.display(), "no prefetch of the lazy routes: {e}");
                        Vec::new()
                    })
            }
            None => Vec::new(),
        };
        let preload = match (hash_of("wasm"), hash_of("js")) {
            (Some(wasm), Some(js)) => preload_links(&name, wasm, js, &css),
            _ => None,
        };
        options.hash_files = true;
        options.hash_file = absolute.to_string_lossy().as_ref().into();
        Assets {
            css,
            hashed: true,
            lazy,
            preload,
        }
    }
}

/// The `Link` header of a page: the same preloads as its `<head>`, which a
/// browser can start as soon as the response's headers arrive, before it
/// has read the HTML (on Fast 3G the Wasm, the longest download on the way
/// to an interactive page, is asked for about 80 ms sooner).
fn preload_links(name: &str, wasm: &str, js: &str, css: &str) -> Option<HeaderValue> {
    let links = format!(
        "</pkg/{name}.{wasm}.wasm>; rel=preload; as=fetch; type=\"application/wasm\"; crossorigin, \
         </pkg/{name}.{js}.js>; rel=modulepreload; crossorigin, \
         <{css}>; rel=preload; as=style"
    );
    HeaderValue::from_str(&links).ok()
}

/// Adds the bundle's preloads to a page.
pub async fn preload_bundle(
    State(assets): State<Arc<Assets>>,
    request: Request,
    next: Next,
) -> Response {
    let mut response = next.run(request).await;
    let is_page = response
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/html"));
    if let Some(links) = &assets.preload
        && is_page
        && response.status().is_success()
    {
        response.headers_mut().append(LINK, links.clone());
    }
    response
}

/// Pages still render without the bundle, but they stay static: say so.
fn warn_if_missing(script: &Path) {
    if !script.exists() {
        tracing::warn!(
            missing = %script.display(),
            "the browser bundle is missing: pages render but stay static; build it with ./scripts/build"
        );
    }
}

/// Every module named by the split manifest (`{"route": ["chunk_4.<id>",
/// "split_route.<id>"], …}`), once each, as URLs.
fn lazy_modules(manifest: &str) -> Result<Vec<String>, String> {
    let routes: std::collections::BTreeMap<String, Vec<String>> =
        serde_json::from_str(manifest).map_err(|e| format!("not a split manifest: {e}"))?;
    let modules: std::collections::BTreeSet<&String> = routes.values().flatten().collect();
    Ok(modules
        .into_iter()
        .map(|stem| format!("/pkg/{stem}.wasm"))
        .collect())
}

fn hashes(text: &str) -> impl Iterator<Item = (&str, &str)> {
    text.lines()
        .filter_map(|line| line.split_once(':'))
        .map(|(file, hash)| (file.trim(), hash.trim()))
}

/// `/pkg`: the bundle, precompressed when a `.br` or `.gz` is beside it.
pub fn bundle(site_root: &str, pkg_dir: &str) -> ServeDir {
    ServeDir::new(PathBuf::from(site_root).join(pkg_dir))
        .precompressed_br()
        .precompressed_gzip()
}

/// Caching by name: hashed bundle files for good, the rest revalidated.
/// Bundle files also say that their encoding follows `Accept-Encoding`, so
/// that a shared cache keeps each form apart.
pub async fn cache_control(request: Request, next: Next) -> Response {
    let path = request.uri().path();
    let immutable = is_hashed(path);
    let bundle = path.starts_with("/pkg/");
    let mut response = next.run(request).await;
    if response.status().is_success() || response.status().is_redirection() {
        let value = if immutable { IMMUTABLE } else { REVALIDATE };
        let headers = response.headers_mut();
        headers
            .entry(CACHE_CONTROL)
            .or_insert(HeaderValue::from_static(value));
        if bundle && !headers.contains_key(VARY) {
            headers.insert(VARY, HeaderValue::from_static("accept-encoding"));
        }
    }
    response
}

/// `threadline.<16 hex>.<ext>`: a name only a build with these contents
/// writes.
fn is_hashed(path: &str) -> bool {
    let name = path.rsplit('/').next().unwrap_or(path);
    let mut parts = name.split('.');
    let (Some(_), Some(hash), Some(_ext)) = (parts.next(), parts.next(), parts.next()) else {
        return false;
    };
    parts.next().is_none()
        && path.starts_with("/pkg/")
        && hash.len() == 16
        && hash.bytes().all(|b| b.is_ascii_hexdigit())
}

/// On-the-fly compression of pages, server-function replies and JSON;
/// small responses, and files already compressed (the bundle, images),
/// are left alone.
pub fn compression() -> CompressionLayer<impl Predicate> {
    let predicate = SizeAbove::new(1024)
        .and(DefaultPredicate::new())
        .and(NotForContentType::const_new("application/wasm"));
    CompressionLayer::new()
        .quality(CompressionLevel::Precise(4))
        .compress_when(predicate)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lazy_modules_are_read_from_the_split_manifest() {
        let manifest = r#"{"a": ["chunk_4.0123456789abcdef", "split_a.0123456789abcdef"],
                          "b": ["chunk_4.0123456789abcdef"]}"#;
        assert_eq!(
            lazy_modules(manifest),
            Ok(vec![
                "/pkg/chunk_4.0123456789abcdef.wasm".to_string(),
                "/pkg/split_a.0123456789abcdef.wasm".to_string()
            ])
        );
        assert!(lazy_modules("not json").is_err());
    }

    #[test]
    fn only_hashed_bundle_names_are_immutable() {
        assert!(is_hashed("/pkg/threadline.0123456789abcdef.wasm"));
        assert!(is_hashed("/pkg/threadline.0123456789abcdef.css"));
        assert!(!is_hashed("/pkg/threadline.wasm"));
        assert!(!is_hashed("/pkg/threadline_bg.wasm"));
        assert!(!is_hashed("/pkg/threadline.0123456789abcdeg.js"));
        assert!(!is_hashed("/orders/threadline.0123456789abcdef.js"));
        assert!(!is_hashed("/pkg/threadline.0123456789abcdef.js.map"));
        assert!(!is_hashed("/pkg/é.0123456789abcdé"));
    }

    #[test]
    fn pages_preload_the_hashed_bundle_in_a_link_header() {
        let links = preload_links(
            "threadline",
            "0123456789abcdef",
            "fedcba9876543210",
            "/pkg/threadline.00112233445566ff.css",
        );
        let links = links.as_ref().and_then(|v| v.to_str().ok());
        assert_eq!(
            links,
            Some(
                "</pkg/threadline.0123456789abcdef.wasm>; rel=preload; as=fetch; type=\"application/wasm\"; crossorigin, \
                 </pkg/threadline.fedcba9876543210.js>; rel=modulepreload; crossorigin, \
                 </pkg/threadline.00112233445566ff.css>; rel=preload; as=style"
            )
        );
    }

    #[test]
    fn hash_lines_are_read_leniently() {
        let found: Vec<_> = hashes("js: abc\nwasm:def \n\nnonsense\ncss : 012\n").collect();
        assert_eq!(found, vec![("js", "abc"), ("wasm", "def"), ("css", "012")]);
    }
}
