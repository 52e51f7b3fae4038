//! The web UI: four pages (search, describe, meetings, review) over the REST routes, served from
//! files compiled into the binary (`services/gateway/ui/`), so a gateway is a complete
//! product with nothing else to deploy.
//!
//! Plain HTML put into one layout (a minijinja template) at start-up, one style
//! sheet and small ES modules: no build step, no framework, nothing fetched from
//! elsewhere. Every page is usable from the keyboard alone, labels every control and gives
//! every photo alt text; `tests/e2e/web_ui.rs` drives the pages in Chromium and runs the
//! axe-core accessibility checker on them.
//!
//! A strict Content-Security-Policy goes with every UI response: scripts, styles and
//! connections only from this origin, no inline script, so a caption or transcript that
//! contains markup can never run in a user's browser (the scripts also only set text).

use std::sync::Arc;

use axum::{
    extract::Path,
    http::{header, HeaderValue, StatusCode},
    response::{IntoResponse, Redirect, Response},
    routing::get,
    Router,
};

use super::openai::HttpState;

/// A page of the UI: its path under `/ui/`, its name in the navigation, its heading and
/// the one-line introduction under it.
struct Page {
    id: &'static str,
    name: &'static str,
    title: &'static str,
    lead: &'static str,
    /// The page's HTML inside `<main>`, after the heading.
    body: &'static str,
}

const PAGES: [Page; 4] = [
    Page {
        id: "search",
        name: "Search",
        title: "Search photos",
        lead: "Find indexed photos by describing them in words.",
        body: include_str!("../../ui/search.html"),
    },
    Page {
        id: "describe",
        name: "Describe",
        title: "Describe a photo",
        lead: "Alt text and a detailed description of a photo, for screen readers and captions.",
        body: include_str!("../../ui/describe.html"),
    },
    Page {
        id: "meetings",
        name: "Meetings",
        title: "Meeting summaries",
        lead: "A recording becomes a transcript, a summary, decisions and action items; then ask it questions.",
        body: include_str!("../../ui/meetings.html"),
    },
    Page {
        id: "review",
        name: "Review",
        title: "Review alt text",
        lead: "A person checks what the machine was unsure of: correct the alt text, or approve it.",
        body: include_str!("../../ui/review.html"),
    },
];

const LAYOUT: &str = include_str!("../../ui/layout.html");

/// Static files: name, content type, content.
const ASSETS: [(&str, &str, &str); 7] = [
    ("icon.svg", "image/svg+xml", include_str!("../../ui/icon.svg")),
    ("app.css", "text/css; charset=utf-8", include_str!("../../ui/app.css")),
    ("app.js", "text/javascript; charset=utf-8", include_str!("../../ui/app.js")),
    ("search.js", "text/javascript; charset=utf-8", include_str!("../../ui/search.js")),
    ("describe.js", "text/javascript; charset=utf-8", include_str!("../../ui/describe.js")),
    ("meetings.js", "text/javascript; charset=utf-8", include_str!("../../ui/meetings.js")),
    ("review.js", "text/javascript; charset=utf-8", include_str!("../../ui/review.js")),
];

/// Scripts, styles, images and connections from this origin only (`blob:` for the
/// preview of a photo or recording chosen in the page).
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob:; media-src 'self' blob:; \
                   connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// Renders every page's body (static HTML) into the layout. Fails only if the bundled
/// layout is broken (a unit test renders it).
fn render_pages() -> Result<Vec<(&'static str, String)>, minijinja::Error> {
    let mut env = minijinja::Environment::new();
    env.add_template("layout.html", LAYOUT)?;
    let layout = env.get_template("layout.html")?;
    let nav: Vec<_> = PAGES.iter().map(|p| minijinja::context! { id => p.id, name => p.name }).collect();
    PAGES
        .iter()
        .map(|p| {
            let html = layout.render(minijinja::context! {
                page => p.id, title => p.title, lead => p.lead, pages => nav.clone(),
                content => minijinja::Value::from_safe_string(p.body.to_string()),
            })?;
            Ok((p.id, html))
        })
        .collect()
}

/// A UI response: the body with its type and the page security headers.
fn respond(content_type: &'static str, body: impl IntoResponse) -> Response {
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    // Small files, always revalidated: a new gateway version is seen at once.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

async fn asset(Path(name): Path<String>) -> Response {
    match ASSETS.iter().find(|(n, _, _)| *n == name) {
        Some((_, content_type, body)) => respond(content_type, *body),
        None => respond("text/plain; charset=utf-8", (StatusCode::NOT_FOUND, format!("no UI file {name:?}"))),
    }
}

/// The UI's routes: `/` and `/ui` lead to the search page; `/ui/{page}`; `/ui/assets/{file}`.
pub fn routes() -> Router<Arc<HttpState>> {
    let pages = render_pages().expect("the web UI's bundled templates render (see the ui tests)");
    let mut router = Router::new()
        .route("/", get(|| async { Redirect::to("/ui/search") }))
        .route("/ui", get(|| async { Redirect::to("/ui/search") }))
        .route("/ui/", get(|| async { Redirect::to("/ui/search") }))
        .route("/ui/assets/{name}", get(asset));
    for (id, html) in pages {
        router = router.route(&format!("/ui/{id}"), get(move || async move { respond("text/html; charset=utf-8", html) }));
    }
    router
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_page_renders_with_its_script_navigation_and_landmarks() {
        let pages = render_pages().unwrap();
        assert_eq!(pages.len(), PAGES.len());
        for (id, html) in &pages {
            assert!(html.starts_with("<!doctype html>\n<html lang=\"en\">"), "{id}");
            assert!(html.contains(&format!("src=\"/ui/assets/{id}.js\"")), "{id}: its script");
            assert!(html.contains(&format!("<a href=\"/ui/{id}\" aria-current=\"page\">")), "{id}: current page marked");
            assert_eq!(html.matches("aria-current").count(), 1, "{id}");
            assert!(html.contains("<main id=\"main\"") && html.contains("href=\"#main\""), "{id}: skip link target");
            // Every script and style the page names is served.
            for asset in html.split("/ui/assets/").skip(1).map(|s| &s[..s.find('"').unwrap()]) {
                assert!(ASSETS.iter().any(|(n, _, _)| *n == asset), "{id} names {asset}, which is not served");
            }
        }
    }

    #[test]
    fn every_input_has_a_label() {
        for (id, html) in render_pages().unwrap() {
            for tag in html.split("<input").skip(1).chain(html.split("<textarea").skip(1)).chain(html.split("<progress").skip(1)) {
                let attr = tag.split("id=\"").nth(1).map(|s| &s[..s.find('"').unwrap()]);
                let control = attr.unwrap_or_else(|| panic!("{id}: a control without an id"));
                assert!(html.contains(&format!("<label for=\"{control}\"")), "{id}: #{control} has no <label for>");
            }
        }
    }

    #[test]
    fn scripts_import_only_served_files_and_never_parse_html() {
        for (name, _, body) in ASSETS.iter().filter(|(n, _, _)| n.ends_with(".js")) {
            for import in body.split("from \"/ui/assets/").skip(1).map(|s| &s[..s.find('"').unwrap()]) {
                assert!(ASSETS.iter().any(|(n, _, _)| *n == import), "{name} imports {import}, which is not served");
            }
            for sink in ["innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval("] {
                assert!(!body.contains(sink), "{name} uses {sink}: text from the models must only be set as text");
            }
        }
    }
}
