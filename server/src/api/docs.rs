//! The API reference page, `/docs`: the OpenAPI document rendered to plain HTML on the
//! server. No script, font or style sheet is fetched from anywhere, so it works on an
//! air-gapped network, and it can never disagree with `/api/openapi.json`.
//! It is open (it shows no data, only how to ask for it).

use std::fmt::Write;

use axum::response::Html;
use serde_json::Value;
use utoipa::OpenApi;

use super::openapi::ApiDoc;

/// The API reference.
#[utoipa::path(
    get,
    path = "/docs",
    tag = "system",
    responses((status = 200, description = "HTML reference of this API", body = String, content_type = "text/html"))
)]
pub async fn page() -> Html<String> {
    Html(render())
}

const METHODS: [&str; 5] = ["get", "put", "post", "delete", "patch"];

fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Escaped prose, with `code` spans (the documents' only markup) set as code.
fn prose(s: &str) -> String {
    let mut out = String::new();
    for (i, part) in esc(s).split('`').enumerate() {
        if i % 2 == 1 {
            let _ = write!(out, "<code>{part}</code>");
        } else {
            out.push_str(part);
        }
    }
    out
}

fn text<'a>(v: &'a Value, key: &str) -> &'a str {
    v.get(key).and_then(Value::as_str).unwrap_or("")
}

/// The whole page.
pub fn render() -> String {
    let doc = serde_json::to_value(ApiDoc::openapi()).unwrap_or(Value::Null);
    let mut h = String::new();
    let title = esc(text(&doc["info"], "title"));
    let _ = write!(
        h,
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{title}</title>\
         <style>body{{font-family:sans-serif;max-width:70em;margin:2em auto;padding:0 1em;line-height:1.4}}\
         h3{{font-family:monospace;background:#f3f3f3;padding:.3em .5em;border-left:4px solid #36c}}\
         .m{{text-transform:uppercase;font-weight:bold;margin-right:.6em}}\
         table{{border-collapse:collapse;margin:.4em 0 1em}}td,th{{border:1px solid #ccc;padding:.2em .5em;text-align:left;vertical-align:top}}\
         code{{background:#f6f6f6}}</style></head><body><h1>{title}</h1><p>{}</p>\
         <p>Machine-readable: <a href=\"/api/openapi.json\"><code>/api/openapi.json</code></a> (OpenAPI {}; needs a token).</p><nav><ul>",
        prose(text(&doc["info"], "description")),
        esc(text(&doc, "openapi")),
    );
    let empty = serde_json::Map::new();
    let paths = doc["paths"].as_object().unwrap_or(&empty);
    for (path, item) in paths {
        for m in METHODS {
            if item.get(m).is_some() {
                let _ = write!(
                    h,
                    "<li><a href=\"#{m}-{id}\"><span class=\"m\">{m}</span><code>{p}</code></a></li>",
                    id = esc(&anchor(path)),
                    p = esc(path)
                );
            }
        }
    }
    h.push_str("</ul></nav>");
    for (path, item) in paths {
        for m in METHODS {
            let Some(op) = item.get(m) else { continue };
            let _ = write!(
                h,
                "<h3 id=\"{m}-{id}\"><span class=\"m\">{m}</span>{p}</h3>",
                id = esc(&anchor(path)),
                p = esc(path)
            );
            for key in ["summary", "description"] {
                let t = text(op, key);
                if !t.is_empty() {
                    let _ = write!(h, "<p>{}</p>", prose(t));
                }
            }
            if let Some(params) = op.get("parameters").and_then(Value::as_array) {
                h.push_str("<table><tr><th>parameter</th><th>in</th><th>required</th><th>description</th></tr>");
                for p in params {
                    let _ = write!(
                        h,
                        "<tr><td><code>{}</code></td><td>{}</td><td>{}</td><td>{}</td></tr>",
                        esc(text(p, "name")),
                        esc(text(p, "in")),
                        if p["required"].as_bool() == Some(true) {
                            "yes"
                        } else {
                            "no"
                        },
                        prose(text(p, "description"))
                    );
                }
                h.push_str("</table>");
            }
            if let Some(body) = op.get("requestBody") {
                let _ = write!(
                    h,
                    "<p><b>Body:</b> {}</p>",
                    prose(text(body, "description"))
                );
            }
            if let Some(responses) = op.get("responses").and_then(Value::as_object) {
                h.push_str("<table><tr><th>status</th><th>meaning</th></tr>");
                for (code, r) in responses {
                    let _ = write!(
                        h,
                        "<tr><td>{}</td><td>{}</td></tr>",
                        esc(code),
                        prose(text(r, "description"))
                    );
                }
                h.push_str("</table>");
            }
        }
    }
    h.push_str("</body></html>");
    h
}

fn anchor(path: &str) -> String {
    path.chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn code_spans_are_set_as_code() {
        assert_eq!(prose("a `b<c>` d"), "a <code>b&lt;c&gt;</code> d");
        assert_eq!(prose("odd ` tick"), "odd <code> tick</code>");
    }

    #[test]
    fn page_lists_every_operation_and_fetches_nothing() {
        let html = super::render();
        assert!(html.contains("/api/clients/{endpoint}/{path}/observe"));
        assert!(html.contains("<span class=\"m\">delete</span>"));
        for remote in ["http://", "https://", "<script", "<link"] {
            assert!(
                !html.contains(remote),
                "the page must be self-contained: {remote}"
            );
        }
    }
}
