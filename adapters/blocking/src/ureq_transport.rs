//! The [`Transport`] over ureq 3: no redirects, statuses are responses, bodies streamed with
//! `Content-Length`, response bodies capped, every failure classified for the core.

use std::io::{self, Read};
use std::time::Duration;

use bytes::Bytes;
use http::header::{CONTENT_LENGTH, TRANSFER_ENCODING};
use resumable_core::TransportFailure;
use ureq::unversioned::resolver::{DefaultResolver, ResolvedSocketAddrs, Resolver};
use ureq::unversioned::transport::{DefaultConnector, NextTimeout};
use ureq::{Agent, SendBody};

use crate::body::RequestBody;
use crate::transport::Transport;

/// Settings of a [`UreqTransport`].
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct UreqOptions {
    /// Longest time to resolve the host and establish the connection, TLS included.
    /// Default 30 s.
    pub connect_timeout: Option<Duration>,
    /// Longest time one socket read or write may block: catches a stalled connection, however
    /// large the chunk. Default 60 s.
    pub io_timeout: Option<Duration>,
    /// Longest time for one whole exchange (connect, send the body, read the response). Default
    /// none: a large chunk on a slow link may take long; `io_timeout` catches stalls.
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

impl Default for UreqOptions {
    fn default() -> Self {
        UreqOptions {
            connect_timeout: Some(Duration::from_secs(30)),
            io_timeout: Some(Duration::from_secs(60)),
            request_timeout: None,
            max_response_body: resumable_core::response::MAX_PARSED_BODY,
            proxy_from_env: true,
            user_agent: concat!("resumable/", env!("CARGO_PKG_VERSION")).to_owned(),
        }
    }
}

/// A [`Transport`] over a ureq [`Agent`] configured for resumable uploads: it never follows
/// redirects (a GCS `308` is progress, not a redirect) and returns 4xx/5xx as responses (G12);
/// it sends each body streamed with the request's `Content-Length` (never chunked); it keeps
/// at most [`UreqOptions::max_response_body`] bytes of a response body; and it classifies
/// every ureq error as a [`TransportFailure`].
///
/// Create one per process (it pools connections) and pass it to the driver.
#[derive(Debug, Clone)]
pub struct UreqTransport {
    agent: Agent,
    max_response_body: usize,
}

impl Default for UreqTransport {
    fn default() -> Self {
        Self::new()
    }
}

impl UreqTransport {
    /// A transport with [`UreqOptions::default`].
    pub fn new() -> Self {
        Self::with_options(UreqOptions::default())
    }

    /// A transport with the given timeouts, cap and proxy settings.
    pub fn with_options(options: UreqOptions) -> Self {
        let mut config = Agent::config_builder()
            // G12: 308 is "resume incomplete", and a 4xx/5xx is an answer for the core.
            .max_redirects(0)
            .http_status_as_error(false)
            .user_agent(options.user_agent.as_str())
            .timeout_connect(options.connect_timeout)
            .timeout_per_read(options.io_timeout)
            .timeout_per_write(options.io_timeout)
            .timeout_per_call(options.request_timeout);
        if !options.proxy_from_env {
            config = config.proxy(None);
        }
        let agent = Agent::with_parts(
            config.build(),
            DefaultConnector::default(),
            NameResolver::default(),
        );
        UreqTransport {
            agent,
            max_response_body: options.max_response_body,
        }
    }

    /// Sends `request` without a body and returns the response with its body unread, for a
    /// body too large to keep (the compliance results): read it to its end with the returned
    /// reader. Statuses are responses, as for [`Transport::send`].
    ///
    /// # Errors
    /// A [`TransportFailure`] when no response head arrived; a failure while the body is read
    /// is an `io::Error` from the reader ([`UreqTransport::body_failure`] classifies it).
    pub fn open(
        &self,
        request: &http::Request<()>,
    ) -> Result<http::Response<Box<dyn Read + Send>>, TransportFailure> {
        let mut head = http::Request::new(SendBody::none());
        *head.method_mut() = request.method().clone();
        *head.uri_mut() = request.uri().clone();
        *head.headers_mut() = request.headers().clone();
        let response = self.agent.run(head).map_err(|e| classify(&e))?;
        Ok(response.map(|body| Box::new(body.into_reader()) as Box<dyn Read + Send>))
    }

    /// What an error while reading a body from [`UreqTransport::open`] stands for.
    pub fn body_failure(error: io::Error) -> TransportFailure {
        classify_body_error(error)
    }

    fn read_body(
        &self,
        response: http::Response<ureq::Body>,
    ) -> Result<http::Response<Bytes>, TransportFailure> {
        let (parts, body) = response.into_parts();
        let cap = self.max_response_body;
        let mut kept = Vec::with_capacity(cap.min(8 * 1024));
        // What is past the cap is left unread (ureq then closes the connection): the core
        // parses no more than that, and a huge body must not cost memory.
        let result = body.into_reader().take(cap as u64).read_to_end(&mut kept);
        match result {
            Ok(_) => Ok(http::Response::from_parts(parts, Bytes::from(kept))),
            Err(e) => Err(classify_body_error(e)),
        }
    }
}

impl Transport for UreqTransport {
    /// Another handle on the same agent: its connection pool is shared, so requests sent at
    /// the same time each take a connection of their own.
    fn fork(&mut self) -> Option<Box<dyn Transport + Send>> {
        Some(Box::new(self.clone()))
    }

    fn send(
        &mut self,
        request: &http::Request<()>,
        body: &mut RequestBody<'_>,
    ) -> Result<http::Response<Bytes>, TransportFailure> {
        let len = body.len();
        let mut headers = request.headers().clone();
        // ureq sends a body length-delimited when the request carries Content-Length, and
        // chunked only when it carries neither that nor Transfer-Encoding: set it from the
        // body itself, so the two can never disagree (G4).
        headers.remove(TRANSFER_ENCODING);
        headers.insert(CONTENT_LENGTH, len.into());
        let mut head = http::Request::new(());
        *head.method_mut() = request.method().clone();
        *head.uri_mut() = request.uri().clone();
        *head.version_mut() = request.version();
        *head.headers_mut() = headers;
        let (parts, ()) = head.into_parts();
        let result = if len == 0 {
            self.agent
                .run(http::Request::from_parts(parts, SendBody::none()))
        } else {
            self.agent.run(http::Request::from_parts(
                parts,
                SendBody::from_reader(body),
            ))
        };
        let response = result.map_err(|e| classify(&e))?;
        self.read_body(response)
    }
}

/// ureq's own resolver, except that a failed lookup is reported as such: ureq passes the
/// resolver's I/O error on unchanged, which cannot be told apart from a socket error, and a
/// name that does not resolve must fail fast (G8: it will not mend by waiting).
#[derive(Debug, Default)]
struct NameResolver(DefaultResolver);

impl Resolver for NameResolver {
    fn resolve(
        &self,
        uri: &http::Uri,
        config: &ureq::config::Config,
        timeout: NextTimeout,
    ) -> Result<ResolvedSocketAddrs, ureq::Error> {
        match self.0.resolve(uri, config, timeout) {
            Err(ureq::Error::Io(_)) => Err(ureq::Error::HostNotFound),
            other => other,
        }
    }
}

/// The failure an error from sending a request and reading its response head stands for.
pub(crate) fn classify(error: &ureq::Error) -> TransportFailure {
    use ureq::Error as E;
    match error {
        // Nothing reached the server: the connection was never up.
        E::Timeout(ureq::Timeout::Resolve | ureq::Timeout::Connect) => TransportFailure::Connect,
        E::Timeout(_) => TransportFailure::Timeout,
        E::HostNotFound => TransportFailure::Resolve,
        E::Tls(_) => TransportFailure::Tls,
        E::ConnectionFailed | E::ConnectProxyFailed(_) | E::TlsRequired => {
            TransportFailure::Connect
        }
        #[cfg(feature = "rustls")]
        E::Rustls(_) | E::Pem(_) => TransportFailure::Tls,
        E::Io(io) => classify_io(io),
        // Protocol errors, oversized heads, and errors that cannot happen with this agent's
        // settings (redirects, status errors).
        _ => TransportFailure::Other,
    }
}

/// The failure an I/O error from the socket stands for.
fn classify_io(error: &io::Error) -> TransportFailure {
    use io::ErrorKind as K;
    // rustls reports a failed handshake (an untrusted certificate…) inside an I/O error.
    #[cfg(feature = "rustls")]
    if error
        .get_ref()
        .is_some_and(|inner| inner.downcast_ref::<rustls::Error>().is_some())
    {
        return TransportFailure::Tls;
    }
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
fn classify_body_error(error: io::Error) -> TransportFailure {
    match ureq::Error::from(error) {
        ureq::Error::Timeout(_) => TransportFailure::Timeout,
        ureq::Error::Io(io)
            if matches!(
                io.kind(),
                io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock
            ) =>
        {
            TransportFailure::Timeout
        }
        _ => TransportFailure::TruncatedResponse,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // G8: every transport failure the core retries is told apart.
    #[test]
    fn ureq_errors_are_classified() {
        let io = |kind| ureq::Error::Io(io::Error::from(kind));
        assert_eq!(
            classify(&io(io::ErrorKind::ConnectionRefused)),
            TransportFailure::Refused
        );
        assert_eq!(
            classify(&ureq::Error::HostNotFound),
            TransportFailure::Resolve
        );
        #[cfg(feature = "rustls")]
        assert_eq!(
            classify(&ureq::Error::Io(io::Error::new(
                io::ErrorKind::InvalidData,
                rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer),
            ))),
            TransportFailure::Tls
        );
        assert_eq!(
            classify(&ureq::Error::Timeout(ureq::Timeout::Connect)),
            TransportFailure::Connect
        );
        assert_eq!(
            classify(&ureq::Error::Timeout(ureq::Timeout::RecvResponse)),
            TransportFailure::Timeout
        );
        assert_eq!(
            classify(&io(io::ErrorKind::ConnectionReset)),
            TransportFailure::Reset
        );
        assert_eq!(
            classify(&io(io::ErrorKind::BrokenPipe)),
            TransportFailure::Reset
        );
        assert_eq!(
            classify(&io(io::ErrorKind::UnexpectedEof)),
            TransportFailure::Reset
        );
        assert_eq!(
            classify(&io(io::ErrorKind::TimedOut)),
            TransportFailure::Timeout
        );
        assert_eq!(
            classify(&ureq::Error::BadUri("x".into())),
            TransportFailure::Other
        );
        assert_eq!(
            classify_body_error(io::Error::from(io::ErrorKind::UnexpectedEof)),
            TransportFailure::TruncatedResponse
        );
        assert_eq!(
            classify_body_error(ureq::Error::Timeout(ureq::Timeout::RecvBody).into_io()),
            TransportFailure::Timeout
        );
    }
}
