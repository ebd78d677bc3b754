//! How a request goes out: the [`Transport`] trait, implemented by [`crate::UreqTransport`]
//! and by closures (scripted exchanges in tests).

use bytes::Bytes;
use resumable_core::TransportFailure;

use crate::body::RequestBody;

/// Sends one request and returns its complete response.
///
/// The driver calls [`Transport::send`] for every `Send` action and hands the result to the
/// upload. A closure `FnMut(&http::Request<()>, &mut RequestBody<'_>) -> Result<…>` is a
/// transport too (see [`transport_fn`]), so tests can script a server without sockets.
pub trait Transport {
    /// Sends `request` (method, URI and headers exactly as given; they include
    /// `Content-Length`, which equals `body.len()`) with `body` streamed as its body, and
    /// returns the response, whatever its status: a 308 is not a redirect to follow and a 4xx
    /// or 5xx is not an error (G12). Cap the response body's size (the core reads at most
    /// [`resumable_core::response::MAX_PARSED_BODY`] bytes of it).
    ///
    /// # Errors
    /// A [`TransportFailure`] when no complete response arrived: connection refused, reset,
    /// timed out, or a response cut short. The upload then queries the server's state before
    /// it sends more (G8).
    fn send(
        &mut self,
        request: &http::Request<()>,
        body: &mut RequestBody<'_>,
    ) -> Result<http::Response<Bytes>, TransportFailure>;

    /// Another transport like this one, to send a request at the same time as others (on its
    /// own thread and connection), when the upload allows several in flight. `None`, the
    /// default, means requests go out one at a time.
    fn fork(&mut self) -> Option<Box<dyn Transport + Send>> {
        None
    }
}

impl<F> Transport for F
where
    F: FnMut(
        &http::Request<()>,
        &mut RequestBody<'_>,
    ) -> Result<http::Response<Bytes>, TransportFailure>,
{
    fn send(
        &mut self,
        request: &http::Request<()>,
        body: &mut RequestBody<'_>,
    ) -> Result<http::Response<Bytes>, TransportFailure> {
        self(request, body)
    }
}

/// Returns `f` as a [`Transport`]; it only helps the compiler infer the closure's argument
/// types, so `transport_fn(|request, body| …)` needs no annotations.
pub fn transport_fn<F>(f: F) -> F
where
    F: FnMut(
        &http::Request<()>,
        &mut RequestBody<'_>,
    ) -> Result<http::Response<Bytes>, TransportFailure>,
{
    f
}
