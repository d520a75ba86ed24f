//! HTML building blocks: escaping, the page frame, tables and inline SVG charts. Everything a page shows
//! passes through [`escape`]; nothing here reads data.

use std::fmt::Write;

/// `text` with `& < > " '` escaped, for element content and quoted attributes alike.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(c),
        }
    }
    out
}

/// `text` percent-encoded for one path segment of a link.
pub fn path_segment(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(byte as char);
        } else {
            let _ = write!(out, "%{byte:02X}");
        }
    }
    out
}

/// Undoes percent-encoding (and, for form bodies, `+` as a space); a `%` not followed by two hex digits stays.
pub fn percent_decode(text: &str, plus_is_space: bool) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let byte = bytes[i];
        if byte == b'%' && i + 2 < bytes.len() {
            if let Ok(decoded) = u8::from_str_radix(&text[i + 1..i + 3], 16) {
                out.push(decoded);
                i += 3;
                continue;
            }
        }
        out.push(if byte == b'+' && plus_is_space {
            b' '
        } else {
            byte
        });
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The views, in the order of the navigation bar: (path, title).
pub const VIEWS: &[(&str, &str)] = &[
    ("/live", "Live"),
    ("/fleet", "Fleet"),
    ("/runs", "Runs"),
    ("/tasks", "Tasks"),
    ("/cache", "Cache"),
    ("/secrets", "Secrets"),
    ("/plugins", "Plugins"),
];

/// A whole page: the frame with its navigation (the current view marked), then `body`.
pub fn page(title: &str, current: &str, project: &str, body: &str) -> String {
    let mut nav = String::new();
    for (path, name) in VIEWS {
        let here = if *path == current {
            " aria-current=\"page\""
        } else {
            ""
        };
        let _ = write!(nav, "<a href=\"{path}\"{here}>{name}</a>");
    }
    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{title} · cairn</title><link rel=\"stylesheet\" href=\"/assets/app.css\">\
         <script src=\"/assets/app.js\" defer></script></head>\
         <body><header><span class=\"brand\">cairn</span><span class=\"project\">{project}</span>\
         <nav aria-label=\"views\">{nav}</nav></header><main id=\"main\"><h1>{title}</h1>{body}</main></body></html>\n",
        title = escape(title),
        project = escape(project),
    )
}

/// A table with a header row; cells are HTML already escaped by the caller.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    if rows.is_empty() {
        return "<p class=\"empty\">Nothing yet.</p>".into();
    }
    let mut out = String::from("<table><thead><tr>");
    for h in headers {
        let _ = write!(out, "<th scope=\"col\">{}</th>", escape(h));
    }
    out.push_str("</tr></thead><tbody>");
    for row in rows {
        out.push_str("<tr>");
        for cell in row {
            let _ = write!(out, "<td>{cell}</td>");
        }
        out.push_str("</tr>");
    }
    out.push_str("</tbody></table>");
    out
}

/// A definition list of (term, HTML value) pairs.
pub fn facts(pairs: &[(&str, String)]) -> String {
    let mut out = String::from("<dl class=\"facts\">");
    for (term, value) in pairs {
        let _ = write!(out, "<dt>{}</dt><dd>{value}</dd>", escape(term));
    }
    out.push_str("</dl>");
    out
}

/// A status word as a badge whose colour says good, bad or neither.
pub fn badge(status: &str) -> String {
    let class = match status {
        "succeeded" | "hit" | "ok" | "current" | "running" => "good",
        "failed" | "timed_out" | "interrupted" | "FAIL" | "drift" => "bad",
        _ => "plain",
    };
    format!("<span class=\"badge {class}\">{}</span>", escape(status))
}

/// A bar chart as inline SVG: one bar per value in 0..=max, labelled for screen readers by `label`.
pub fn bars(label: &str, values: &[(String, f64)], max: f64, unit: &str) -> String {
    if values.is_empty() {
        return String::new();
    }
    let width = 640.0;
    let height = 120.0;
    let gap = 2.0;
    // A few values make a few narrow bars, not a wall of colour.
    let bar = ((width - gap * values.len() as f64) / values.len() as f64).clamp(1.0, 24.0);
    let mut out = format!(
        "<figure class=\"chart\"><svg viewBox=\"0 0 {width} {height}\" role=\"img\" aria-label=\"{}\">",
        escape(label)
    );
    for (i, (name, value)) in values.iter().enumerate() {
        // A zero still shows as a sliver, so a run the cache did nothing for is seen, not missing.
        let h = if max > 0.0 {
            ((value / max).clamp(0.0, 1.0) * (height - 4.0)).max(1.5)
        } else {
            1.5
        };
        let x = i as f64 * (bar + gap);
        let _ = write!(
            out,
            "<rect x=\"{x:.1}\" y=\"{:.1}\" width=\"{bar:.1}\" height=\"{h:.1}\"><title>{}: {value:.1}{}</title></rect>",
            height - h,
            escape(name),
            escape(unit)
        );
    }
    let _ = write!(
        out,
        "</svg><figcaption>{}</figcaption></figure>",
        escape(label)
    );
    out
}

/// Milliseconds as a short human duration.
pub fn duration_ms(ms: f64) -> String {
    crate::config::format_duration(std::time::Duration::from_secs_f64(ms.max(0.0) / 1000.0))
}

/// A ratio as a percentage, or a dash.
pub fn percent(value: Option<f64>) -> String {
    value.map_or_else(|| "–".into(), |v| format!("{:.0} %", v * 100.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markup_in_text_is_escaped() {
        assert_eq!(
            escape("<script>alert('x')</script> & \"q\""),
            "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; &quot;q&quot;"
        );
    }

    #[test]
    fn path_segments_keep_only_unreserved_bytes() {
        assert_eq!(
            path_segment("deploy:production[NIXY]"),
            "deploy%3Aproduction%5BNIXY%5D"
        );
        assert_eq!(path_segment("a/../b"), "a%2F..%2Fb");
    }
}
