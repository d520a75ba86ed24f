//! `cairn ui`: a local web dashboard over the run records, the audit log, the cache, tasks.toml, the secrets
//! policy and the plugins — the same sources the CLI reads, read again for every page.
//!
//! It listens on loopback only unless told otherwise, and every request must come through a `Host` it
//! answers to and carry the session's token (see [`guard`]).

mod actions;
mod guard;
mod html;
mod live;
mod pages;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Body, Bytes, Frame, Incoming};
use hyper::header::{HeaderValue, CACHE_CONTROL, CONTENT_TYPE, COOKIE, HOST, LOCATION, SET_COOKIE};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;

use actions::PageRun;
pub use guard::Refusal;
use guard::{Guard, COOKIE as SESSION_COOKIE};
pub use pages::Project;
use pages::Rendered;

type Answer = Response<BoxBody<Bytes, Infallible>>;

/// The largest form body an action accepts.
const FORM_LIMIT: usize = 16 * 1024;
/// How often the event stream looks at the live feeds.
const FEED_POLL: Duration = Duration::from_millis(200);
/// How often an idle event stream says it is still there (proxies and browsers drop silent streams).
const HEARTBEAT: Duration = Duration::from_secs(15);

/// What `cairn ui` was asked for.
pub struct UiOptions {
    /// The address to listen on (loopback unless `--listen` said otherwise).
    pub listen: SocketAddr,
    /// The directory of tasks.toml.
    pub root: PathBuf,
    /// tasks.toml.
    pub file: PathBuf,
}

/// Why the dashboard could not run.
#[derive(Debug, thiserror::Error)]
pub enum UiError {
    /// The address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// Anything else of the system's.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// Why it failed.
        source: std::io::Error,
    },
}

const APP_CSS: &str = include_str!("assets/app.css");
const APP_JS: &str = include_str!("assets/app.js");

/// Pages cairn writes itself: scripts and styles come from the dashboard's own assets only.
const CSP: &str = "default-src 'none'; style-src 'self'; script-src 'self'; img-src 'self' data:; \
                   connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";
/// The run report is a self-contained file (inline style and script, all of it cairn's own, every value
/// escaped); it may use them, and nothing else.
const REPORT_CSP: &str =
    "default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; \
                          img-src data:; frame-ancestors 'none'; base-uri 'none'";

struct State {
    guard: Guard,
    project: Project,
    /// The run started from the dashboard, if any (one at a time).
    page_run: Mutex<Option<PageRun>>,
}

/// `.cairn/ui.json` while the dashboard runs: it tells `cairn run` to write its live feed.
struct Marker(PathBuf);

impl Marker {
    fn write(root: &Path, addr: SocketAddr, warn: &impl Fn(&str)) -> Marker {
        let path = root.join(crate::report::UI_MARKER);
        let text = format!(
            "{{\"pid\": {}, \"address\": \"{addr}\"}}\n",
            std::process::id()
        );
        if let Some(dir) = path.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        if let Err(error) = crate::atomic::write_atomic(&path, text.as_bytes()) {
            warn(&format!(
                "cannot write {} ({error}): runs will not show in the Live view",
                path.display()
            ));
        }
        Marker(path)
    }
}

impl Drop for Marker {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Serves the dashboard until Ctrl-C; `announce` gets the address to open (with the token) once listening,
/// `warn` what the user should know.
pub fn serve(
    options: UiOptions,
    announce: impl FnOnce(&str),
    warn: impl Fn(&str),
) -> Result<(), UiError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()
        .map_err(|source| UiError::Io {
            what: "cannot start the dashboard's runtime",
            source,
        })?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(options.listen)
            .await
            .map_err(|source| UiError::Bind {
                addr: options.listen,
                source,
            })?;
        let addr = listener.local_addr().map_err(|source| UiError::Io {
            what: "cannot read the listening address",
            source,
        })?;
        let guard = Guard::new(addr).map_err(|source| UiError::Io {
            what: "cannot make the session token",
            source,
        })?;
        let shown = if addr.ip().is_unspecified() {
            SocketAddr::new([127, 0, 0, 1].into(), addr.port())
        } else {
            addr
        };
        let _marker = Marker::write(&options.root, addr, &warn);
        // Feeds of runs that ended while no dashboard was reading them.
        live::sweep(&options.root, Duration::ZERO);
        announce(&format!("http://{shown}/?token={}", guard.token()));
        let state = Arc::new(State {
            guard,
            project: Project {
                root: options.root,
                file: options.file,
                exe: std::env::current_exe().unwrap_or_else(|_| PathBuf::from("cairn")),
            },
            page_run: Mutex::new(None),
        });
        loop {
            tokio::select! {
                accepted = listener.accept() => {
                    let Ok((stream, _)) = accepted else { continue };
                    let state = Arc::clone(&state);
                    tokio::spawn(async move {
                        let service = hyper::service::service_fn(move |request| {
                            let state = Arc::clone(&state);
                            async move { Ok::<_, Infallible>(handle(&state, request).await) }
                        });
                        let _ = hyper::server::conn::http1::Builder::new()
                            .serve_connection(TokioIo::new(stream), service)
                            .await;
                    });
                }
                _ = tokio::signal::ctrl_c() => {
                    if let Ok(mut run) = state.page_run.lock() {
                        if let Some(run) = run.as_mut() {
                            run.cancel();
                        }
                    }
                    return Ok(());
                }
            }
        }
    })
}

async fn handle(state: &Arc<State>, request: Request<Incoming>) -> Answer {
    let header = |name: &str| {
        request
            .headers()
            .get(name)
            .and_then(|v: &HeaderValue| v.to_str().ok())
            .map(str::to_owned)
    };
    let host = header(HOST.as_str());
    if let Err(refusal) = state.guard.host_ok(host.as_deref()) {
        return refused(refusal);
    }
    let host = host.unwrap_or_default();
    let path = request.uri().path().to_owned();
    // The address `cairn ui` prints carries the token once: it becomes a cookie the browser sends only to
    // this origin, and the address bar loses it (no token in history, bookmarks or Referer).
    if let Some(token) = query_value(request.uri().query(), "token") {
        if request.method() != Method::GET || !state.guard.is_token(&token) {
            return refused(Refusal::NoToken);
        }
        let mut response = plain(StatusCode::SEE_OTHER, "");
        let headers = response.headers_mut();
        if let Ok(location) = HeaderValue::from_str(&path) {
            headers.insert(LOCATION, location);
        }
        if let Ok(cookie) = HeaderValue::from_str(&format!(
            "{SESSION_COOKIE}={token}; HttpOnly; SameSite=Strict; Path=/"
        )) {
            headers.insert(SET_COOKIE, cookie);
        }
        return response;
    }
    if let Err(refusal) = state.guard.authenticated(
        header(COOKIE.as_str()).as_deref(),
        header(hyper::header::AUTHORIZATION.as_str()).as_deref(),
    ) {
        return refused(refusal);
    }
    match *request.method() {
        Method::GET | Method::HEAD => {}
        Method::POST => {
            let origin = header(hyper::header::ORIGIN.as_str());
            let csrf_header = header(CSRF_HEADER);
            let Ok(body) = Limited::new(request.into_body(), FORM_LIMIT)
                .collect()
                .await
            else {
                return plain(StatusCode::PAYLOAD_TOO_LARGE, "the form is too large\n");
            };
            let fields = actions::form_fields(&body.to_bytes());
            let field = |name: &str| {
                fields
                    .iter()
                    .find(|(k, _)| k == name)
                    .map(|(_, v)| v.clone())
            };
            let csrf = csrf_header.or_else(|| field("csrf"));
            if let Err(refusal) = state
                .guard
                .post_ok(origin.as_deref(), &host, csrf.as_deref())
            {
                return refused(refusal);
            }
            let state = Arc::clone(state);
            let target = field("target");
            let confirmed = field("confirmed").as_deref() == Some("yes");
            let answer =
                tokio::task::spawn_blocking(move || act(&state, &path, target, confirmed)).await;
            return answer.unwrap_or_else(|_| {
                plain(StatusCode::INTERNAL_SERVER_ERROR, "the action failed\n")
            });
        }
        _ => return plain(StatusCode::METHOD_NOT_ALLOWED, "only GET and POST\n"),
    }
    match path.as_str() {
        "/assets/app.css" => return asset(APP_CSS, "text/css; charset=utf-8"),
        "/assets/app.js" => return asset(APP_JS, "text/javascript; charset=utf-8"),
        "/events" => return events(state),
        _ => {}
    }
    let fragment = query_value(request.uri().query(), "fragment").is_some();
    let report = path.ends_with("/report");
    let state = Arc::clone(state);
    let rendered = tokio::task::spawn_blocking(move || {
        let csrf = state.guard.csrf().to_owned();
        if path == "/live" {
            return Some(live_page(&state, &csrf, fragment));
        }
        state.project.render(&path, &csrf)
    })
    .await
    .ok()
    .flatten();
    match rendered {
        Some(page) => page_response(page, if report { REPORT_CSP } else { CSP }),
        None => plain(StatusCode::NOT_FOUND, "no such page\n"),
    }
}

/// The Live view: the run started here (with its output), then every run of the project in progress.
fn live_page(state: &State, csrf: &str, fragment: bool) -> Rendered {
    let mut body = String::from("<div id=\"live\" data-live>");
    if let Ok(mut run) = state.page_run.lock() {
        if let Some(run) = run.as_mut() {
            body.push_str(&run.render(csrf));
        }
    }
    body.push_str(&live::fragment(&state.project.root, csrf));
    body.push_str("</div>");
    if fragment {
        return Rendered::html_fragment(body);
    }
    state.project.page("Live", "/live", &body)
}

/// A POST to `path`: run a target, stop the run started here, or ask another run in progress to stop.
fn act(state: &State, path: &str, target: Option<String>, confirmed: bool) -> Answer {
    let project = &state.project;
    match path {
        "/actions/run" => {
            let Some(target) = target.filter(|t| actions::valid_target(t)) else {
                return plain(StatusCode::BAD_REQUEST, "expected a task name to run\n");
            };
            if let Ok(mut current) = state.page_run.lock() {
                if let Some(run) = current.as_mut() {
                    if run.ended().is_none() {
                        return page_response(
                            project.message(
                                "A run is going on",
                                &format!(
                                    "<p><code>cairn run {}</code>, started here, has not ended. \
                                     <a href=\"/live\">Follow it</a> or stop it there first.</p>",
                                    html::escape(&run.target)
                                ),
                            ),
                            CSP,
                        );
                    }
                }
            }
            if !confirmed {
                // The plan first: it names every task the target runs, and says which ask before they run.
                let mut dry = actions::cairn(project);
                dry.args(["run", &target, "--dry-run"]);
                let (code, plan) = actions::capture(dry);
                if code != 0 {
                    return page_response(
                        project.message(
                            &format!("cairn cannot run {target}"),
                            &format!("<pre>{}</pre>", html::escape(&plan)),
                        ),
                        CSP,
                    );
                }
                if actions::plan_asks(&plan) {
                    return page_response(
                        project.confirm_page(&target, &plan, state.guard.csrf()),
                        CSP,
                    );
                }
            }
            match PageRun::start(project, &target, confirmed) {
                Ok(run) => {
                    if let Ok(mut current) = state.page_run.lock() {
                        *current = Some(run);
                    }
                    redirect("/live")
                }
                Err(error) => plain(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    &format!("cannot start cairn run: {error}\n"),
                ),
            }
        }
        "/actions/stop" => {
            // A run started in a terminal (or by another dashboard): asked through a file beside its feed.
            let id = target.unwrap_or_default();
            if live::request_stop(&project.root, &id) {
                redirect("/live")
            } else {
                plain(
                    StatusCode::NOT_FOUND,
                    "no run in progress by that name listens for a stop request\n",
                )
            }
        }
        "/actions/cancel" => {
            if let Ok(mut current) = state.page_run.lock() {
                if let Some(run) = current.as_mut() {
                    run.cancel();
                }
            }
            redirect("/live")
        }
        _ => plain(StatusCode::NOT_FOUND, "no such action\n"),
    }
}

/// Server-sent events: each event of a run's live feed as it is written (`event: feed`, the feed's JSON line:
/// tasks starting, restored, ending), and `change` whenever what the Live view shows changed (a feed grew,
/// appeared or went, a run was recorded, the run started here ended), so the page reloads its part; a comment
/// now and then while nothing happens.
fn events(state: &Arc<State>) -> Answer {
    let (sender, receiver) = tokio::sync::mpsc::channel::<Bytes>(64);
    let root = state.project.root.clone();
    let state = Arc::clone(state);
    tokio::spawn(async move {
        let mut seen = Vec::new();
        let mut offsets = std::collections::HashMap::new();
        let mut quiet = Duration::ZERO;
        if sender
            .send(Bytes::from_static(b"retry: 1000\n\n"))
            .await
            .is_err()
        {
            return;
        }
        loop {
            let root_now = root.clone();
            let Ok((lines, mut now, kept)) = tokio::task::spawn_blocking(move || {
                let lines = live::new_lines(&root_now, &mut offsets);
                live::sweep_ended(&root_now);
                (lines, live::signature(&root_now), offsets)
            })
            .await
            else {
                return;
            };
            offsets = kept;
            // The run started here ending is news too (its output and exit code).
            let page_run_ended = state
                .page_run
                .lock()
                .ok()
                .and_then(|mut run| run.as_mut().map(|r| r.ended().is_some()));
            now.push((PathBuf::from(format!("page-run {page_run_ended:?}")), 0));
            let mut messages: Vec<Bytes> = lines
                .iter()
                .map(|line| Bytes::from(format!("event: feed\ndata: {line}\n\n")))
                .collect();
            if now != seen {
                seen = now;
                messages.push(Bytes::from_static(b"event: change\ndata: {}\n\n"));
            } else if messages.is_empty() && quiet >= HEARTBEAT {
                messages.push(Bytes::from_static(b": still here\n\n"));
            }
            if !messages.is_empty() {
                quiet = Duration::ZERO;
            }
            for message in messages {
                if sender.send(message).await.is_err() {
                    return;
                }
            }
            tokio::time::sleep(FEED_POLL).await;
            quiet += FEED_POLL;
        }
    });
    let mut response = Response::new(EventStream(receiver).boxed());
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    secure_headers(&mut response, CSP);
    response
}

/// A response body fed by a channel, for server-sent events.
struct EventStream(tokio::sync::mpsc::Receiver<Bytes>);

impl Body for EventStream {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        context: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.0
            .poll_recv(context)
            .map(|message| message.map(|bytes| Ok(Frame::data(bytes))))
    }
}

fn redirect(to: &'static str) -> Answer {
    let mut response = plain(StatusCode::SEE_OTHER, "");
    response
        .headers_mut()
        .insert(LOCATION, HeaderValue::from_static(to));
    response
}

/// The CSRF token of a POST sent by a script (a page of another site cannot set it without a CORS preflight
/// this server never grants); forms send it as the `csrf` field.
const CSRF_HEADER: &str = "x-cairn-csrf";

fn query_value(query: Option<&str>, name: &str) -> Option<String> {
    query?
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value.to_owned())
}

fn secure_headers(response: &mut Answer, csp: &str) {
    let headers = response.headers_mut();
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    // Never a Referer to another site; `no-referrer` would also make browsers send `Origin: null` on the
    // page's own forms, which the origin check must refuse.
    headers.insert("referrer-policy", HeaderValue::from_static("same-origin"));
    headers.insert("x-frame-options", HeaderValue::from_static("DENY"));
    if let Ok(value) = HeaderValue::from_str(csp) {
        headers.insert("content-security-policy", value);
    }
}

fn plain(status: StatusCode, text: &str) -> Answer {
    let mut response = Response::new(Full::new(Bytes::from(text.to_owned())).boxed());
    *response.status_mut() = status;
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    secure_headers(&mut response, CSP);
    response
}

fn refused(refusal: Refusal) -> Answer {
    let (status, reason) = refusal.status_and_reason();
    plain(
        StatusCode::from_u16(status).unwrap_or(StatusCode::FORBIDDEN),
        &format!("cairn ui: {reason}\n"),
    )
}

fn asset(body: &'static str, content_type: &'static str) -> Answer {
    let mut response = Response::new(Full::new(Bytes::from_static(body.as_bytes())).boxed());
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    secure_headers(&mut response, CSP);
    response
}

fn page_response(page: Rendered, csp: &str) -> Answer {
    let mut response = Response::new(Full::new(Bytes::from(page.body)).boxed());
    *response.status_mut() = StatusCode::from_u16(page.status).unwrap_or(StatusCode::OK);
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(page.content_type));
    secure_headers(&mut response, csp);
    response
}
