//! The [`Transport`] over reqwest: HTTP/1.1, no redirects, statuses are responses, bodies
//! streamed with `Content-Length`, response bodies capped, every failure classified for the
//! core.

use std::error::Error as _;
use std::future::Future;
use std::io;
use std::pin::{Pin, pin};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::header::{CONTENT_LENGTH, TRANSFER_ENCODING};
use http_body::{Frame, SizeHint};
use resumable_core::TransportFailure;
use tokio::time::Instant;

use crate::body::{BodyError, RequestBody};
use crate::transport::{Exchange, Transport};

/// Settings of a [`ReqwestTransport`].
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct ReqwestOptions {
    /// Longest time to resolve the host and establish the connection, TLS included.
    /// Default 30 s.
    pub connect_timeout: Option<Duration>,
    /// Longest time without progress: the transport taking no body bytes (the connection
    /// stalled), no response head after the body was sent, or no response body bytes.
    /// Default 60 s. (reqwest's own `read_timeout` runs from the start of the request to the
    /// response head, so a large chunk on a slow link would trip it; this one restarts with
    /// every piece of body sent.)
    pub io_timeout: Option<Duration>,
    /// Longest time for one whole exchange (connect, send the body, read the response).
    /// Default none: a large chunk on a slow link may take long; `io_timeout` catches stalls.
    pub request_timeout: Option<Duration>,
    /// The most response-body bytes kept; the rest is not read (the connection is then
    /// closed). Default [`resumable_core::response::MAX_PARSED_BODY`] (1 MiB).
    pub max_response_body: usize,
    /// Use the proxy named by `ALL_PROXY`/`HTTPS_PROXY`/`HTTP_PROXY` (honouring `NO_PROXY`).
    /// Default true.
    pub proxy_from_env: bool,
    /// The `User-Agent` header. Default `resumable/<version>`.
    pub user_agent: String,
}

impl Default for ReqwestOptions {
    fn default() -> Self {
        ReqwestOptions {
            connect_timeout: Some(Duration::from_secs(30)),
            io_timeout: Some(Duration::from_secs(60)),
            request_timeout: None,
            max_response_body: resumable_core::response::MAX_PARSED_BODY,
            proxy_from_env: true,
            user_agent: concat!("resumable/", env!("CARGO_PKG_VERSION")).to_owned(),
        }
    }
}

/// A [`Transport`] over a [`reqwest::Client`] configured for resumable uploads: it never
/// follows redirects (a GCS `308` is progress, not a redirect) and returns 4xx/5xx as
/// responses (G12); it sends each body streamed with the request's `Content-Length` (never
/// chunked); it keeps at most [`ReqwestOptions::max_response_body`] bytes of a response body;
/// and it classifies every failure as a [`TransportFailure`].
///
/// reqwest runs on tokio: create and use it inside a tokio runtime. Create one per process
/// (it pools connections; clones share the pool) and pass it to the driver.
#[derive(Clone, Debug)]
pub struct ReqwestTransport {
    client: reqwest::Client,
    io_timeout: Option<Duration>,
    max_response_body: usize,
}

/// Why a [`ReqwestTransport`] could not be built (TLS or resolver setup failed).
#[derive(Debug, thiserror::Error)]
#[error("building the HTTP client failed: {0}")]
pub struct BuildError(#[source] Box<dyn std::error::Error + Send + Sync + 'static>);

impl ReqwestTransport {
    /// A transport with [`ReqwestOptions::default`].
    ///
    /// # Errors
    /// [`BuildError`] when reqwest cannot set up its client.
    pub fn new() -> Result<Self, BuildError> {
        Self::with_options(ReqwestOptions::default())
    }

    /// A transport with the given timeouts, cap and proxy settings.
    ///
    /// # Errors
    /// [`BuildError`] when reqwest cannot set up its client.
    pub fn with_options(options: ReqwestOptions) -> Result<Self, BuildError> {
        let mut builder = reqwest::Client::builder()
            // G12: 308 is "resume incomplete", not a redirect.
            .redirect(reqwest::redirect::Policy::none())
            .http1_only()
            .dns_resolver(Arc::new(NameResolver))
            .user_agent(options.user_agent.as_str());
        if let Some(timeout) = options.connect_timeout {
            builder = builder.connect_timeout(timeout);
        }
        if let Some(timeout) = options.request_timeout {
            builder = builder.timeout(timeout);
        }
        if !options.proxy_from_env {
            builder = builder.no_proxy();
        }
        #[cfg(feature = "rustls")]
        {
            let tls = rustls_config().map_err(|e| BuildError(e.into()))?;
            builder = builder.tls_backend_preconfigured(tls);
        }
        Ok(ReqwestTransport {
            client: builder.build().map_err(|e| BuildError(e.into()))?,
            io_timeout: options.io_timeout,
            max_response_body: options.max_response_body,
        })
    }

    async fn exchange(&self, request: http::Request<RequestBody>) -> Exchange {
        let (mut parts, body) = request.into_parts();
        // reqwest (hyper) sends a body length-delimited when the request carries
        // Content-Length, and chunked when it carries neither that nor a known size: set it
        // from the body itself, so the two can never disagree (G4).
        parts.headers.remove(TRANSFER_ENCODING);
        parts.headers.insert(CONTENT_LENGTH, body.len().into());
        let activity = Activity::new();
        let body = WatchedBody {
            inner: body,
            activity: activity.clone(),
        };
        let request = http::Request::from_parts(parts, reqwest::Body::wrap(body));
        let request = reqwest::Request::try_from(request).map_err(|e| classify(&e))?;
        let pending = self.client.execute(request);
        let response = self.until_stalled(pending, &activity).await?;
        let mut response = response.map_err(|e| classify(&e))?;

        let mut head = http::Response::new(());
        *head.status_mut() = response.status();
        *head.version_mut() = response.version();
        *head.headers_mut() = std::mem::take(response.headers_mut());
        let cap = self.max_response_body;
        let mut kept = BytesMut::new();
        while kept.len() < cap {
            activity.touch();
            let chunk = match self.until_stalled(response.chunk(), &activity).await? {
                Ok(Some(chunk)) => chunk,
                Ok(None) => break,
                Err(e) => return Err(classify_body_error(&e)),
            };
            let room = cap - kept.len();
            kept.extend_from_slice(&chunk[..chunk.len().min(room)]);
        }
        // What is past the cap is left unread (the connection is then closed): the core
        // parses no more than that, and a huge body must not cost memory.
        let (parts, ()) = head.into_parts();
        Ok(http::Response::from_parts(parts, kept.freeze()))
    }

    /// Runs `future` until it completes, or fails with `Timeout` once `activity` has not
    /// moved for `io_timeout`.
    async fn until_stalled<F: Future>(
        &self,
        future: F,
        activity: &Activity,
    ) -> Result<F::Output, TransportFailure> {
        let Some(limit) = self.io_timeout else {
            return Ok(future.await);
        };
        let mut future = pin!(future);
        let mut sleep = pin!(tokio::time::sleep_until(activity.last() + limit));
        std::future::poll_fn(|cx| {
            if let Poll::Ready(output) = future.as_mut().poll(cx) {
                return Poll::Ready(Ok(output));
            }
            loop {
                if sleep.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
                let deadline = activity.last() + limit;
                if deadline <= Instant::now() {
                    return Poll::Ready(Err(TransportFailure::Timeout));
                }
                sleep.as_mut().reset(deadline);
            }
        })
        .await
    }
}

impl Transport for ReqwestTransport {
    fn send(&self, request: http::Request<RequestBody>) -> impl Future<Output = Exchange> {
        self.exchange(request)
    }
}

/// rustls with the ring provider and the webpki roots (as the blocking driver's ureq), HTTP/1.1
/// only.
#[cfg(feature = "rustls")]
fn rustls_config() -> Result<rustls::ClientConfig, rustls::Error> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// When the exchange last made progress.
#[derive(Clone)]
struct Activity(Arc<Mutex<Instant>>);

impl Activity {
    fn new() -> Self {
        Activity(Arc::new(Mutex::new(Instant::now())))
    }

    fn touch(&self) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = Instant::now();
    }

    fn last(&self) -> Instant {
        *self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The request body, noting every piece the connection takes (a stalled connection takes
/// none).
struct WatchedBody {
    inner: RequestBody,
    activity: Activity,
}

impl http_body::Body for WatchedBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let frame = Pin::new(&mut self.inner).poll_frame(cx);
        if frame.is_ready() {
            self.activity.touch();
        }
        frame
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The failure an error from sending a request and reading its response head stands for.
pub(crate) fn classify(error: &reqwest::Error) -> TransportFailure {
    // Nothing reached the server: the connection was never up (DNS, refused, TLS, or the
    // connect timeout). A name that does not resolve and an untrusted certificate must be
    // told apart: they will not mend by waiting (G8).
    if error.is_connect() {
        let mut cause = error.source();
        while let Some(e) = cause {
            if e.downcast_ref::<NameNotResolved>().is_some() {
                return TransportFailure::Resolve;
            }
            #[cfg(feature = "rustls")]
            if e.downcast_ref::<rustls::Error>().is_some() {
                return TransportFailure::Tls;
            }
            if let Some(io) = e.downcast_ref::<io::Error>()
                && io.kind() == io::ErrorKind::ConnectionRefused
            {
                return TransportFailure::Refused;
            }
            cause = e.source();
        }
        return TransportFailure::Connect;
    }
    if error.is_timeout() {
        return TransportFailure::Timeout;
    }
    let mut cause = error.source();
    while let Some(e) = cause {
        if let Some(io) = e.downcast_ref::<io::Error>() {
            return classify_io(io);
        }
        if let Some(hyper) = e.downcast_ref::<hyper::Error>() {
            if hyper.is_timeout() {
                return TransportFailure::Timeout;
            }
            // The server closed the connection before a complete response head.
            if hyper.is_incomplete_message() || hyper.is_canceled() || hyper.is_closed() {
                return TransportFailure::Reset;
            }
        }
        cause = e.source();
    }
    // Protocol errors, bad URIs, a body the driver stopped.
    TransportFailure::Other
}

/// The system resolver (as reqwest's own), reporting a failed lookup as [`NameNotResolved`]
/// so that it can be told apart from other connect errors.
struct NameResolver;

impl reqwest::dns::Resolve for NameResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        Box::pin(async move {
            match tokio::net::lookup_host((name.as_str(), 0)).await {
                Ok(addrs) => {
                    let addrs: Vec<_> = addrs.collect();
                    if addrs.is_empty() {
                        return Err(Box::new(NameNotResolved) as _);
                    }
                    Ok(Box::new(addrs.into_iter()) as reqwest::dns::Addrs)
                }
                Err(_) => Err(Box::new(NameNotResolved) as _),
            }
        })
    }
}

/// A host name that the system resolver could not resolve.
#[derive(Debug, thiserror::Error)]
#[error("the host name could not be resolved")]
struct NameNotResolved;

/// The failure an I/O error from the socket stands for.
fn classify_io(error: &io::Error) -> TransportFailure {
    use io::ErrorKind as K;
    match error.kind() {
        K::ConnectionRefused => TransportFailure::Refused,
        K::AddrNotAvailable
        | K::AddrInUse
        | K::HostUnreachable
        | K::NetworkUnreachable
        | K::NetworkDown => TransportFailure::Connect,
        K::TimedOut | K::WouldBlock => TransportFailure::Timeout,
        K::ConnectionReset
        | K::ConnectionAborted
        | K::BrokenPipe
        | K::UnexpectedEof
        | K::NotConnected
        | K::WriteZero => TransportFailure::Reset,
        _ => TransportFailure::Other,
    }
}

/// The failure an error while reading a response body stands for: the head arrived, so a
/// failure now cuts the response short, unless it is a timeout.
fn classify_body_error(error: &reqwest::Error) -> TransportFailure {
    if error.is_timeout() {
        return TransportFailure::Timeout;
    }
    let mut cause = error.source();
    while let Some(e) = cause {
        if let Some(io) = e.downcast_ref::<io::Error>()
            && matches!(
                io.kind(),
                io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock
            )
        {
            return TransportFailure::Timeout;
        }
        cause = e.source();
    }
    TransportFailure::TruncatedResponse
}

#[cfg(test)]
mod tests {
    use super::*;

    // G8: socket errors map to the failures the core retries.
    #[test]
    fn io_errors_are_classified() {
        let kind = |k| classify_io(&io::Error::from(k));
        assert_eq!(
            kind(io::ErrorKind::ConnectionRefused),
            TransportFailure::Refused
        );
        assert_eq!(
            kind(io::ErrorKind::ConnectionReset),
            TransportFailure::Reset
        );
        assert_eq!(kind(io::ErrorKind::BrokenPipe), TransportFailure::Reset);
        assert_eq!(kind(io::ErrorKind::UnexpectedEof), TransportFailure::Reset);
        assert_eq!(kind(io::ErrorKind::TimedOut), TransportFailure::Timeout);
        assert_eq!(kind(io::ErrorKind::InvalidData), TransportFailure::Other);
    }
}
